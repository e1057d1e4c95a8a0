//! JSON request bodies: `Content-Type: application/json`, a per-route size cap, unknown fields
//! refused by the types themselves, and errors that name the field (`permissions.create.max`)
//! but never echo the value sent (it may be a secret).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

/// A JSON body of at most `LIMIT` bytes, parsed into `T`.
pub struct JsonBody<T, const LIMIT: usize>(pub T);

/// Body cap of routes whose body is one grant: a 64 KiB payload, room for escaping and the rest.
pub const GRANT_BODY_LIMIT: usize = 256 * 1024;
/// Body cap of `POST /v1/grants/batch`.
pub const BATCH_BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Body cap of small control requests (revoke).
pub const SMALL_BODY_LIMIT: usize = 8 * 1024;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the request body exceeds {limit} bytes"),
    )
}

impl<T: DeserializeOwned + 'static, const LIMIT: usize> FromRequest for JsonBody<T, LIMIT> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    Code::InvalidRequest,
                    "Content-Type must be application/json",
                ));
            }
            if declared.is_some_and(|n| n > LIMIT) {
                return Err(too_large(LIMIT));
            }
            let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(LIMIT));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::new(
                        Code::InvalidRequest,
                        format!("could not read the body: {e}"),
                    )
                })?;
                if body.len() + chunk.len() > LIMIT {
                    return Err(too_large(LIMIT));
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(JsonBody)
        })
    }
}

/// Parses `body` as `T`, describing failures by path and kind only.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        invalid_json(&path, &inner)
    })?;
    de.end().map_err(|e| invalid_json(".", &e))?;
    Ok(value)
}

fn invalid_json(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let detail = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("malformed JSON at line {} column {}", e.line(), e.column())
        }
        Category::Data => {
            let path = if path.is_empty() || path == "." {
                "body"
            } else {
                path
            };
            format!("{path}: {}", describe(e))
        }
    };
    ApiError::new(Code::InvalidRequest, detail)
}

/// serde's messages quote the offending value (`invalid type: string "1984-03-02", expected
/// u32`). Keep what was expected, drop what was sent.
fn describe(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full);
    for (prefix, label) in [
        ("invalid type: ", "wrong type"),
        ("invalid value: ", "invalid value"),
        ("unknown variant ", "unknown value"),
        ("invalid length ", "wrong length"),
    ] {
        if message.starts_with(prefix) {
            return match message.split_once(", expected ") {
                Some((_, expected)) => format!("{label}; expected {expected}"),
                None => label.to_owned(),
            };
        }
    }
    if message.starts_with("unknown field ")
        || message.starts_with("missing field ")
        || message.starts_with("duplicate field ")
    {
        // These quote field names from the schema or the request's keys, never values.
        return message.to_owned();
    }
    "invalid value".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
        kind: Kind,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        A,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    fn detail(body: &str) -> String {
        parse::<Outer>(body.as_bytes()).unwrap_err().detail
    }

    #[test]
    fn errors_name_the_path_but_not_the_value() {
        assert_eq!(
            detail(r#"{"inner": {"n": "s3cret", "kind": "a"}}"#),
            "inner.n: wrong type; expected u32"
        );
        assert_eq!(
            detail(r#"{"inner": {"n": -7, "kind": "a"}}"#),
            "inner.n: invalid value; expected u32"
        );
        assert_eq!(
            detail(r#"{"inner": {"n": 1, "kind": "s3cret"}}"#),
            "inner.kind: unknown value; expected `a`"
        );
        assert_eq!(
            detail(r#"{"inner": {"n": 1, "kind": "a", "x": 1}}"#),
            "inner.x: unknown field `x`, expected `n` or `kind`"
        );
        assert_eq!(
            detail(r#"{"inner": {"n": 1}}"#),
            "inner: missing field `kind`"
        );
        assert_eq!(
            detail(r#"{"inner": "#),
            "malformed JSON at line 1 column 10"
        );
        assert_eq!(
            detail(r#"{"inner": {"n": 1, "kind": "a"}} x"#),
            "malformed JSON at line 1 column 34"
        );
        assert_eq!(detail("7"), "body: wrong type; expected struct Outer");
    }
}
