//! Where a one-time code goes. The destination is fixed by the originator, never by a visitor.

use serde::{Deserialize, Serialize};

/// How a one-time code is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OtpChannel {
    /// No one-time code step.
    None,
    /// E-mail to an address.
    Email,
    /// Text message to an E.164 phone number.
    Sms,
}

impl OtpChannel {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            OtpChannel::None => "none",
            OtpChannel::Email => "email",
            OtpChannel::Sms => "sms",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(OtpChannel::None),
            "email" => Some(OtpChannel::Email),
            "sms" => Some(OtpChannel::Sms),
            _ => None,
        }
    }

    /// Checks a destination for this channel.
    pub fn validate(self, to: &str) -> Result<(), &'static str> {
        match self {
            OtpChannel::None => Err("must be absent when channel is none"),
            OtpChannel::Email => valid_email(to)
                .then_some(())
                .ok_or("must be an e-mail address"),
            OtpChannel::Sms => valid_e164(to)
                .then_some(())
                .ok_or("must be an E.164 phone number such as +15550100123"),
        }
    }
}

fn valid_email(to: &str) -> bool {
    let Some((local, domain)) = to.split_once('@') else {
        return false;
    };
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
    };
    to.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && plain(local)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

fn valid_e164(to: &str) -> bool {
    let Some(digits) = to.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A destination as shown back to people: enough to recognise, not enough to harvest
/// (`p***@example.org`, `+*******0123`).
pub fn mask(channel: OtpChannel, to: &str) -> String {
    match channel {
        OtpChannel::Email => match to.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".to_owned(),
        },
        OtpChannel::Sms | OtpChannel::None => {
            let chars: Vec<char> = to.chars().collect();
            let keep = chars.len().saturating_sub(4);
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 && *c == '+' {
                        '+'
                    } else if i < keep {
                        '*'
                    } else {
                        *c
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_per_channel() {
        assert!(OtpChannel::Email.validate("pat@example.org").is_ok());
        for bad in [
            "pat",
            "@example.org",
            "pat@localhost",
            "pat@exa mple.org",
            "a<b>@x.org",
            "pat@.org",
        ] {
            assert!(OtpChannel::Email.validate(bad).is_err(), "{bad}");
        }
        assert!(OtpChannel::Sms.validate("+15550100123").is_ok());
        for bad in [
            "15550100123",
            "+0555010012",
            "+1555",
            "+1555 010 0123",
            "+1234567890123456",
        ] {
            assert!(OtpChannel::Sms.validate(bad).is_err(), "{bad}");
        }
        assert!(OtpChannel::None.validate("x").is_err());
    }

    #[test]
    fn masks_hide_most_of_the_destination() {
        assert_eq!(
            mask(OtpChannel::Email, "pat@example.org"),
            "p***@example.org"
        );
        assert_eq!(mask(OtpChannel::Sms, "+15550100123"), "+*******0123");
    }
}
