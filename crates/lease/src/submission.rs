//! A submission checked against the grant's `write_fields` and `create` schema.

use linklease_grant::limits::MAX_PAYLOAD_BYTES;
use linklease_grant::{FieldSpec, FieldType, Permissions, Problems};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// What a lease holder sends to `POST /v1/lease/submissions` (and the browser form builds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmissionRequest {
    /// Values for writable fields, by name.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
    /// Child records, each an object of the create fields.
    #[serde(default)]
    pub creates: Vec<Map<String, Value>>,
    /// Makes retries safe: the same key with the same body returns the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Why a submission was refused; each maps to one spec code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SubmissionError {
    /// A field the grant does not allow to be written (`field_not_writable`).
    #[error("fields that may not be written")]
    NotWritable(Problems),
    /// A value of the wrong type, too long, or not in its `enum` (`invalid_field`).
    #[error("invalid field values")]
    Invalid(Problems),
    /// More child records than `create.max` allows, across all submissions (`create_limit_exceeded`).
    #[error("at most {left} more child records may be created")]
    CreateLimit {
        /// How many may still be created.
        left: u32,
    },
    /// Larger than 64 KiB as compact JSON (`payload_too_large`).
    #[error("a submission may be at most 64 KiB")]
    TooLarge,
    /// Nothing to store, or an unusable idempotency key (`invalid_request`).
    #[error("{0}")]
    Empty(&'static str),
}

/// The canonical bytes of a submission (compact JSON, object keys sorted): what `body_sha256`
/// covers and what is stored.
pub fn canonical(request: &SubmissionRequest) -> String {
    // `serde_json::Map` is ordered by key (no `preserve_order`), so this is canonical.
    let body = serde_json::json!({"fields": request.fields, "creates": request.creates});
    body.to_string()
}

/// Checks `request` against `permissions`, given `created_so_far` child records on the grant.
/// Returns the canonical body.
pub fn validate(
    permissions: &Permissions,
    request: &SubmissionRequest,
    created_so_far: u32,
) -> Result<String, SubmissionError> {
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control))
    {
        return Err(SubmissionError::Empty(
            "idempotency_key must be 1-200 characters without control characters",
        ));
    }
    if request.fields.is_empty() && request.creates.is_empty() {
        return Err(SubmissionError::Empty(
            "a submission needs at least one field or child record",
        ));
    }
    let body = canonical(request);
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(SubmissionError::TooLarge);
    }

    let mut not_writable = Problems::default();
    for name in request.fields.keys() {
        if !permissions.write_fields.contains_key(name) {
            not_writable.push(format!("fields.{name}"), "may not be written");
        }
    }
    let create = permissions.create.as_ref();
    if !request.creates.is_empty() && create.is_none() {
        not_writable.push("creates", "this grant does not allow child records");
    }
    if let Some(create) = create {
        for (i, record) in request.creates.iter().enumerate() {
            for name in record.keys() {
                if !create.fields.contains_key(name) {
                    not_writable.push(
                        format!("creates[{i}].{name}"),
                        "is not a field of this record",
                    );
                }
            }
        }
    }
    if !not_writable.is_empty() {
        return Err(SubmissionError::NotWritable(not_writable));
    }

    if let Some(create) = create {
        let left = create.max.saturating_sub(created_so_far);
        if request.creates.len() > left as usize {
            return Err(SubmissionError::CreateLimit { left });
        }
    }

    let mut invalid = Problems::default();
    for (name, value) in &request.fields {
        if let Some(spec) = permissions.write_fields.get(name) {
            check_value(spec, value, &format!("fields.{name}"), &mut invalid);
        }
    }
    if let Some(create) = create {
        for (i, record) in request.creates.iter().enumerate() {
            if record.is_empty() {
                invalid.push(format!("creates[{i}]"), "is empty");
            }
            for (name, value) in record {
                if let Some(spec) = create.fields.get(name) {
                    check_value(spec, value, &format!("creates[{i}].{name}"), &mut invalid);
                }
            }
        }
    }
    if !invalid.is_empty() {
        return Err(SubmissionError::Invalid(invalid));
    }
    Ok(body)
}

/// Checks one value; problems never quote the value (it may be personal data).
fn check_value(spec: &FieldSpec, value: &Value, at: &str, problems: &mut Problems) {
    match (spec.kind, value) {
        (FieldType::String, Value::String(s)) => {
            if let Some(max) = spec.max_length
                && s.chars().count() > max as usize
            {
                problems.push(at, format_args!("must be at most {max} characters"));
            }
            if let Some(allowed) = &spec.allowed
                && !allowed.iter().any(|a| a == s)
            {
                problems.push(at, format_args!("must be one of: {}", allowed.join(", ")));
            }
            if s.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                problems.push(at, "must not contain control characters");
            }
        }
        (FieldType::Number, Value::Number(_)) | (FieldType::Boolean, Value::Bool(_)) => {}
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        (FieldType::Integer, Value::Number(_)) => problems.push(at, "must be a whole number"),
        (FieldType::Date, Value::String(s)) if is_date(s) => {}
        (FieldType::Date, _) => problems.push(at, "must be a date YYYY-MM-DD"),
        (FieldType::String, _) => problems.push(at, "must be a string"),
        (FieldType::Number, _) => problems.push(at, "must be a number"),
        (FieldType::Integer, _) => problems.push(at, "must be a whole number"),
        (FieldType::Boolean, _) => problems.push(at, "must be true or false"),
    }
}

fn is_date(s: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &format).is_ok()
}
