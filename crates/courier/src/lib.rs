#![doc = include_str!("../README.md")]

mod console;
mod outbox;
mod smtp;
mod webhook;

use linklease_grant::contact::mask;
use linklease_grant::{GrantId, OtpChannel, SecretString};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

pub use console::ConsoleCourier;
pub use outbox::OutboxCourier;
pub use smtp::{SMTP_SUBJECT, SmtpCourier};
pub use webhook::{SIGNATURE_HEADER, WebhookCourier, signature};

/// One code to deliver.
///
/// `Debug` masks the destination and hides the code and the text (which contains the code).
#[derive(Clone)]
pub struct OtpMessage {
    /// When the code was issued.
    pub at: OffsetDateTime,
    /// `Email` or `Sms`; a courier answers [`CourierError::Unsupported`] for anything else.
    pub channel: OtpChannel,
    /// The destination fixed by the originator: an e-mail address or an E.164 number.
    pub to: String,
    /// The grant the code unlocks.
    pub grant_id: GrantId,
    /// The one-time code itself.
    pub code: SecretString,
    /// The human text sent to the visitor; it contains the code.
    pub text: String,
}

impl OtpMessage {
    /// Builds the standard text, e.g. "Your linklease code is 123456. It expires in 10 minutes.
    /// Never share it."
    pub fn new(
        at: OffsetDateTime,
        channel: OtpChannel,
        to: impl Into<String>,
        grant_id: GrantId,
        code: SecretString,
        valid_minutes: u32,
    ) -> Self {
        let unit = if valid_minutes == 1 {
            "minute"
        } else {
            "minutes"
        };
        let text = format!(
            "Your linklease code is {}. It expires in {valid_minutes} {unit}. Never share it.",
            code.expose()
        );
        Self {
            at,
            channel,
            to: to.into(),
            grant_id,
            code,
            text,
        }
    }

    /// The destination as it may appear in logs and errors (`p***@example.org`).
    pub fn masked_to(&self) -> String {
        mask(self.channel, &self.to)
    }

    /// The spec §5 JSON object `{"at","channel","to","grant_id","code","text"}`, used by the
    /// outbox (one per line) and as the webhook body. It contains the code.
    pub fn to_json(&self) -> Result<String, CourierError> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(with = "time::serde::rfc3339")]
            at: OffsetDateTime,
            channel: OtpChannel,
            to: &'a str,
            grant_id: GrantId,
            code: &'a str,
            text: &'a str,
        }
        serde_json::to_string(&Wire {
            at: self.at,
            channel: self.channel,
            to: &self.to,
            grant_id: self.grant_id,
            code: self.code.expose(),
            text: &self.text,
        })
        .map_err(|e| CourierError::Invalid {
            reason: format!("cannot encode the message: {e}"),
        })
    }

    /// Replaces the code and the full destination in a foreign error text with `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in [self.code.expose(), self.to.as_str()] {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

impl fmt::Debug for OtpMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpMessage")
            .field("at", &self.at)
            .field("channel", &self.channel)
            .field("to", &self.masked_to())
            .field("grant_id", &self.grant_id)
            .field("code", &self.code)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Delivers codes. Synchronous: the server calls it on a blocking thread.
pub trait Courier: Send + Sync + fmt::Debug {
    /// Delivers one code, or says why not. Never retries.
    fn deliver(&self, message: &OtpMessage) -> Result<(), CourierError>;
    /// The stable name of this courier: `console`, `outbox`, `smtp` or `webhook`.
    fn kind(&self) -> &'static str;
}

/// Why a code was not delivered.
///
/// Neither `Display` nor `Debug` ever contains the code; destinations appear masked, and
/// text from remote servers (which may echo the recipient) is scrubbed or left out.
#[derive(thiserror::Error, Debug)]
pub enum CourierError {
    /// This courier cannot deliver on this channel (e.g. SMS over SMTP, or channel `none`).
    #[error("the {courier} courier cannot deliver {channel} codes")]
    Unsupported {
        /// The courier's kind.
        courier: &'static str,
        /// The channel's stable name.
        channel: &'static str,
    },
    /// The message could not be built (e.g. an address the courier cannot parse).
    #[error("cannot build the message: {reason}")]
    Invalid {
        /// What is wrong, without the destination.
        reason: String,
    },
    /// The remote side answered and refused (SMTP error reply, non-2xx HTTP status).
    #[error("{courier} delivery to {to} was rejected: {reason}")]
    Rejected {
        /// The courier's kind.
        courier: &'static str,
        /// The masked destination.
        to: String,
        /// The status or reply code.
        reason: String,
    },
    /// The remote side could not be reached or the exchange broke (connect, TLS, timeout).
    #[error("{courier} delivery to {to} failed: {reason}")]
    Transport {
        /// The courier's kind.
        courier: &'static str,
        /// The masked destination.
        to: String,
        /// What went wrong, scrubbed of the code and destination.
        reason: String,
    },
    /// Writing locally (outbox file, stdout) failed.
    #[error("cannot write the code: {0}")]
    Io(#[from] std::io::Error),
}

/// `--courier` could not be understood. `Display` never shows URL credentials.
#[derive(thiserror::Error, Debug)]
pub enum SpecError {
    /// Not one of the four forms.
    #[error("unknown courier {given:?}: expected {FORMS}")]
    Unknown {
        /// The spec with any URL credentials redacted.
        given: String,
    },
    /// `outbox:`, `smtp:` or `webhook:` with nothing after the colon.
    #[error("courier {kind:?} needs a {what} after \"{kind}:\": expected {FORMS}")]
    Empty {
        /// `outbox`, `smtp` or `webhook`.
        kind: &'static str,
        /// `PATH` or `URL`.
        what: &'static str,
    },
    /// The URL is malformed or uses a scheme the courier does not speak.
    #[error("invalid {kind} URL {url}: {reason}")]
    Url {
        /// `smtp` or `webhook`.
        kind: &'static str,
        /// The URL with credentials redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `CourierOptions::smtp_from` is not a mailbox.
    #[error("invalid SMTP sender {from:?}: expected e.g. \"linklease <linklease@example.org>\"")]
    From {
        /// The configured sender.
        from: String,
    },
    /// The URL would carry codes in clear (`webhook:http://…`, `smtp:smtp://…` without
    /// `tls=required`) and [`CourierOptions::allow_insecure`] is not set.
    #[error(
        "the {kind} courier {url} would send one-time codes in clear: {fix}; or accept that explicitly with --courier-allow-insecure"
    )]
    Insecure {
        /// `smtp` or `webhook`.
        kind: &'static str,
        /// The URL with credentials redacted.
        url: String,
        /// The secure form to use instead.
        fix: &'static str,
    },
    /// The webhook courier signs every request and has no secret to sign with.
    #[error("the webhook courier needs a signing secret (CourierOptions::webhook_secret)")]
    MissingSecret,
    /// The outbox file cannot be opened for appending.
    #[error("cannot open outbox {path}: {source}")]
    Outbox {
        /// The path as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The accepted `--courier` forms, as named in errors.
pub const FORMS: &str =
    "console, outbox:PATH, smtp:URL (smtp://… or smtps://…) or webhook:URL (http(s)://…)";

/// Settings shared by the couriers; only the fields a courier uses matter to it.
#[derive(Clone, Debug)]
pub struct CourierOptions {
    /// The SMTP `From:` mailbox. Default `linklease <linklease@localhost>`.
    pub smtp_from: String,
    /// The HMAC-SHA256 key for webhook signatures; required by `webhook:`.
    pub webhook_secret: Option<SecretString>,
    /// Connect/read/write limit for SMTP and webhook deliveries. Default 10 s.
    pub timeout: Duration,
    /// Accept transports that carry codes in clear: `webhook:http://…`, and `smtp:smtp://…`
    /// without `tls=required` (plain or opportunistic STARTTLS). Default `false`: such specs
    /// are refused with [`SpecError::Insecure`]. Loopback addresses are not exempt.
    pub allow_insecure: bool,
}

impl Default for CourierOptions {
    fn default() -> Self {
        Self {
            smtp_from: "linklease <linklease@localhost>".to_owned(),
            webhook_secret: None,
            timeout: Duration::from_secs(10),
            allow_insecure: false,
        }
    }
}

/// Parses `--courier` (spec §5): `console` | `outbox:PATH` | `smtp:URL` | `webhook:URL`.
///
/// Opens the outbox file, builds the SMTP transport or the HTTP agent once; nothing is
/// contacted until the first delivery.
pub fn from_spec(spec: &str, options: &CourierOptions) -> Result<Arc<dyn Courier>, SpecError> {
    let spec = spec.trim();
    if spec == "console" {
        return Ok(Arc::new(ConsoleCourier));
    }
    let unknown = || SpecError::Unknown {
        given: redact_url(spec),
    };
    let (kind, rest) = spec.split_once(':').ok_or_else(unknown)?;
    let (kind, what) = match kind {
        "outbox" => ("outbox", "PATH"),
        "smtp" => ("smtp", "URL"),
        "webhook" => ("webhook", "URL"),
        _ => return Err(unknown()),
    };
    if rest.trim().is_empty() {
        return Err(SpecError::Empty { kind, what });
    }
    Ok(match kind {
        "outbox" => Arc::new(OutboxCourier::open(rest)?),
        "smtp" => Arc::new(SmtpCourier::new(rest, options)?),
        _ => Arc::new(WebhookCourier::new(rest, options)?),
    })
}

/// `scheme://user:pass@host/…` → `scheme://***@host/…`; anything else unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// `Unsupported` for a channel this courier does not deliver on.
fn unsupported(courier: &'static str, channel: OtpChannel) -> CourierError {
    CourierError::Unsupported {
        courier,
        channel: channel.as_str(),
    }
}
