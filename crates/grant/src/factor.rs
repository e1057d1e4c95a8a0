//! The second factor: what the originator knows and the consumer must prove.
//!
//! Only a keyed verifier is stored: HMAC-SHA256 under the factor key over the grant id, the
//! kind and the normalised value. A database dump alone cannot brute-force a date of birth.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, macros::format_description};

use crate::GrantId;
use crate::secret::{Purpose, SecretHash, SecretKeys, SecretString};

/// Which second factor a grant asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    /// No second factor (the visitor still presses Continue).
    None,
    /// Date of birth, `YYYY-MM-DD`.
    Dob,
    /// A PIN of 4 to 12 digits.
    Pin,
}

impl FactorKind {
    /// The stable lowercase name (as stored and on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::None => "none",
            FactorKind::Dob => "dob",
            FactorKind::Pin => "pin",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(FactorKind::None),
            "dob" => Some(FactorKind::Dob),
            "pin" => Some(FactorKind::Pin),
            _ => None,
        }
    }
}

/// Why a factor value is not acceptable to an originator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactorError {
    /// A date of birth that is not a real `YYYY-MM-DD` date.
    #[error("must be a date YYYY-MM-DD")]
    DateFormat,
    /// A date of birth before 1900 or in the future.
    #[error("must be between 1900-01-01 and today")]
    DateRange,
    /// A PIN that is not 4-12 ASCII digits.
    #[error("must be 4 to 12 digits")]
    Pin,
}

/// Brings a presented value to its one canonical form, or says why it has none.
pub fn normalize(
    kind: FactorKind,
    value: &str,
    now: OffsetDateTime,
) -> Result<String, FactorError> {
    match kind {
        FactorKind::None => Ok(String::new()),
        FactorKind::Dob => {
            let date = Date::parse(value.trim(), format_description!("[year]-[month]-[day]"))
                .map_err(|_| FactorError::DateFormat)?;
            let earliest = Date::from_calendar_date(1900, time::Month::January, 1)
                .map_err(|_| FactorError::DateRange)?;
            if date < earliest || date > now.date() {
                return Err(FactorError::DateRange);
            }
            Ok(date.to_string())
        }
        FactorKind::Pin => {
            let pin = value.trim();
            if (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
                Ok(pin.to_owned())
            } else {
                Err(FactorError::Pin)
            }
        }
    }
}

/// The keyed verifier of `normalized` for one grant.
pub fn verifier(
    keys: &SecretKeys,
    grant: GrantId,
    kind: FactorKind,
    normalized: &str,
) -> SecretHash {
    keys.hash(
        Purpose::Factor,
        &[
            grant.0.as_bytes(),
            kind.as_str().as_bytes(),
            normalized.as_bytes(),
        ],
    )
}

/// Checks a presented value against the stored verifier, in constant time. A value that does
/// not normalise (a malformed date) is simply a mismatch.
pub fn matches(
    keys: &SecretKeys,
    grant: GrantId,
    kind: FactorKind,
    stored: &SecretHash,
    presented: &SecretString,
    now: OffsetDateTime,
) -> bool {
    match normalize(kind, presented.expose(), now) {
        Ok(normalized) => keys.verify(
            Purpose::Factor,
            &[
                grant.0.as_bytes(),
                kind.as_str().as_bytes(),
                normalized.as_bytes(),
            ],
            stored,
        ),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    #[test]
    fn dates_and_pins_normalise() {
        assert_eq!(
            normalize(FactorKind::Dob, " 1984-03-02 ", NOW).unwrap(),
            "1984-03-02"
        );
        assert_eq!(
            normalize(FactorKind::Dob, "1984-02-30", NOW),
            Err(FactorError::DateFormat)
        );
        assert_eq!(
            normalize(FactorKind::Dob, "02/03/1984", NOW),
            Err(FactorError::DateFormat)
        );
        assert_eq!(
            normalize(FactorKind::Dob, "1899-12-31", NOW),
            Err(FactorError::DateRange)
        );
        assert_eq!(
            normalize(FactorKind::Dob, "2026-11-24", NOW),
            Err(FactorError::DateRange)
        );
        assert_eq!(normalize(FactorKind::Pin, "0042", NOW).unwrap(), "0042");
        assert_eq!(
            normalize(FactorKind::Pin, "123", NOW),
            Err(FactorError::Pin)
        );
        assert_eq!(
            normalize(FactorKind::Pin, "1234567890123", NOW),
            Err(FactorError::Pin)
        );
        assert_eq!(
            normalize(FactorKind::Pin, "12a4", NOW),
            Err(FactorError::Pin)
        );
        assert_eq!(
            normalize(FactorKind::Pin, "١٢٣٤", NOW),
            Err(FactorError::Pin)
        );
    }

    #[test]
    fn verifier_is_bound_to_grant_kind_and_value() {
        let keys = SecretKeys::from_master(&[3; 32]);
        let g1 = GrantId(Uuid::from_u128(1));
        let g2 = GrantId(Uuid::from_u128(2));
        let v = verifier(&keys, g1, FactorKind::Dob, "1984-03-02");
        let yes = SecretString::new("1984-03-02");
        assert!(matches(&keys, g1, FactorKind::Dob, &v, &yes, NOW));
        assert!(!matches(&keys, g2, FactorKind::Dob, &v, &yes, NOW));
        assert!(!matches(
            &keys,
            g1,
            FactorKind::Dob,
            &v,
            &SecretString::new("1984-03-03"),
            NOW
        ));
        assert!(!matches(
            &keys,
            g1,
            FactorKind::Dob,
            &v,
            &SecretString::new("garbage"),
            NOW
        ));
        let pin = verifier(&keys, g1, FactorKind::Pin, "19840302");
        assert!(!matches(&keys, g1, FactorKind::Dob, &pin, &yes, NOW));
    }
}
