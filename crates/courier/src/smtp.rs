//! `smtp:URL`: e-mails the code with lettre's synchronous SMTP transport (rustls on ring).
//!
//! The URL is lettre's `SmtpTransport::from_url` form,
//! `scheme://[user:pass@]host[:port][/ehlo-name][?tls=…]`:
//!
//! | URL | connection | default port |
//! |---|---|---|
//! | `smtps://host` | implicit TLS (recommended) | 465 |
//! | `smtp://host?tls=required` | STARTTLS, fails if the server does not offer it | 587 |
//! | `smtp://host?tls=opportunistic` | STARTTLS if offered, else plain text (insecure) | 587 |
//! | `smtp://host` | plain text (insecure) | 25 |
//!
//! The two insecure forms are refused unless [`CourierOptions::allow_insecure`] is set.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Address, Message, SmtpTransport, Transport as _};
use linklease_grant::OtpChannel;
use std::fmt;

use crate::{
    Courier, CourierError, CourierOptions, OtpMessage, SpecError, redact_url, unsupported,
};

/// Whether `url`'s query says `tls=required` (STARTTLS or fail); without it lettre's `smtp://`
/// speaks plain text, or falls back to it (`tls=opportunistic`).
/// Like lettre, the first `tls` parameter counts.
fn requires_tls(url: &str) -> bool {
    let query = url.split('#').next().unwrap_or("").split_once('?');
    query.is_some_and(|(_, query)| {
        query
            .split('&')
            .find(|pair| pair.split('=').next() == Some("tls"))
            == Some("tls=required")
    })
}

/// The subject of every code e-mail.
pub const SMTP_SUBJECT: &str = "Your linklease code";

/// Sends plain-text e-mails through one SMTP server. E-mail channel only.
pub struct SmtpCourier {
    transport: SmtpTransport,
    from: Mailbox,
    /// The URL without credentials, for `Debug`.
    shown: String,
}

impl SmtpCourier {
    /// Builds the transport once from `url` with `options.timeout` and `options.smtp_from`.
    pub fn new(url: &str, options: &CourierOptions) -> Result<Self, SpecError> {
        let shown = redact_url(url);
        let bad = |reason: String| SpecError::Url {
            kind: "smtp",
            url: shown.clone(),
            reason,
        };
        if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
            return Err(bad(
                "write smtp:smtp://HOST[:PORT][?tls=required|opportunistic] or smtp:smtps://HOST[:PORT]"
                    .to_owned(),
            ));
        }
        // lettre's URL errors name the scheme or the parse failure, never the credentials;
        // scrub the password anyway in case that ever changes.
        let transport = SmtpTransport::from_url(url)
            .map_err(|e| bad(scrub_password(url, &e.to_string())))?
            .timeout(Some(options.timeout))
            .build();
        if url.starts_with("smtp://") && !requires_tls(url) && !options.allow_insecure {
            return Err(SpecError::Insecure {
                kind: "smtp",
                url: shown.clone(),
                fix: "use smtps://HOST (implicit TLS) or smtp://HOST?tls=required (STARTTLS)",
            });
        }
        let from = options
            .smtp_from
            .parse::<Mailbox>()
            .map_err(|_| SpecError::From {
                from: options.smtp_from.clone(),
            })?;
        Ok(Self {
            transport,
            from,
            shown,
        })
    }

    fn email(&self, message: &OtpMessage) -> Result<Message, CourierError> {
        let to = message
            .to
            .parse::<Address>()
            .map_err(|_| CourierError::Invalid {
                reason: format!("{} is not an e-mail address", message.masked_to()),
            })?;
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(SMTP_SUBJECT)
            .date(message.at.into())
            .header(ContentType::TEXT_PLAIN)
            .body(message.text.clone())
            .map_err(|e| CourierError::Invalid {
                reason: message.scrub(&e.to_string()),
            })
    }
}

impl Courier for SmtpCourier {
    fn deliver(&self, message: &OtpMessage) -> Result<(), CourierError> {
        if message.channel != OtpChannel::Email {
            return Err(unsupported(self.kind(), message.channel));
        }
        let email = self.email(message)?;
        self.transport.send(&email).map(drop).map_err(|e| {
            let to = message.masked_to();
            // A server reply may quote the recipient: keep only its code.
            match e.status() {
                Some(code) => CourierError::Rejected {
                    courier: "smtp",
                    to,
                    reason: format!("server replied {code}"),
                },
                None if timed_out(&e) => CourierError::Transport {
                    courier: "smtp",
                    to,
                    reason: "timed out".to_owned(),
                },
                None => CourierError::Transport {
                    courier: "smtp",
                    to,
                    reason: message.scrub(&e.to_string()),
                },
            }
        })
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

impl fmt::Debug for SmtpCourier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCourier")
            .field("url", &self.shown)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// lettre reports a socket read timeout as a plain network error (`WouldBlock` on Linux).
fn timed_out(e: &lettre::transport::smtp::Error) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    e.is_timeout()
        || std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| matches!(io.kind(), TimedOut | WouldBlock))
}

/// Replaces the URL's password, as written in the URL, with `***` in `text`.
fn scrub_password(url: &str, text: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(p, "***"),
        None => text.to_owned(),
    }
}
