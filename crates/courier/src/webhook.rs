//! `webhook:URL`: POSTs each code as JSON to an HTTP(S) endpoint, typically an SMS gateway.
//!
//! The body is the spec §5 object `{"at","channel","to","grant_id","code","text"}`. Every request
//! carries `X-Linklease-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the HMAC keyed with
//! the webhook secret over `"<t>." + body`, `t` being the message's `at`; receivers recompute
//! it, compare in constant time and reject stale `t`. Redirects are not followed; any status other than 2xx is a failure.

use linklease_grant::{OtpChannel, SecretString};
use ring::hmac;
use std::fmt;
use std::fmt::Write as _;
use ureq::Agent;
use ureq::http::Uri;

use crate::{
    Courier, CourierError, CourierOptions, OtpMessage, SpecError, redact_url, unsupported,
};

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Linklease-Signature";

/// The `X-Linklease-Signature` value for `body` sent at unix time `t`.
pub fn signature(secret: &SecretString, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(format!("{t}.").as_bytes());
    context.update(body);
    let mut out = format!("t={t},v1=");
    for byte in context.sign().as_ref() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Signs and POSTs each code to one URL.
pub struct WebhookCourier {
    agent: Agent,
    url: String,
    secret: SecretString,
}

impl WebhookCourier {
    /// Checks `url` (https with a host; http only with `options.allow_insecure`), requires `options.webhook_secret` and builds
    /// the HTTP agent once with `options.timeout`.
    pub fn new(url: &str, options: &CourierOptions) -> Result<Self, SpecError> {
        let bad = |reason: &str| SpecError::Url {
            kind: "webhook",
            url: redact_url(url),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("expected http(s)://HOST[:PORT]/PATH"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("the scheme must be http or https"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host"));
        }
        if uri.scheme_str() == Some("http") && !options.allow_insecure {
            return Err(SpecError::Insecure {
                kind: "webhook",
                url: redact_url(url),
                fix: "use an https:// URL",
            });
        }
        let secret = options
            .webhook_secret
            .clone()
            .filter(|s| !s.expose().is_empty())
            .ok_or(SpecError::MissingSecret)?;
        let agent = Agent::config_builder()
            .timeout_global(Some(options.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Self {
            agent,
            url: url.to_owned(),
            secret,
        })
    }
}

impl Courier for WebhookCourier {
    fn deliver(&self, message: &OtpMessage) -> Result<(), CourierError> {
        if !matches!(message.channel, OtpChannel::Email | OtpChannel::Sms) {
            return Err(unsupported(self.kind(), message.channel));
        }
        let body = message.to_json()?;
        // The server's clock, read when the code was issued; couriers never retry, so it is fresh.
        let t = message.at.unix_timestamp();
        let response = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(&self.secret, t, body.as_bytes()),
            )
            .send(body.as_bytes())
            .map_err(|e| CourierError::Transport {
                courier: "webhook",
                to: message.masked_to(),
                reason: match e {
                    ureq::Error::Timeout(_) => "timed out".to_owned(),
                    other => message.scrub(&other.to_string()),
                },
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(CourierError::Rejected {
                courier: "webhook",
                to: message.masked_to(),
                reason: format!("HTTP status {}", status.as_u16()),
            })
        }
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }
}

impl fmt::Debug for WebhookCourier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookCourier")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}
