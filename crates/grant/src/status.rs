//! Grant status, derived, never stored: the immutable grant plus its mutable facts plus a clock.
//!
//! ```text
//!            revoke (any time)                      ┌──────────┐
//!   ┌─────────────────────────────────────────────▶ │ revoked  │
//!   │                                               └──────────┘
//! ┌─┴──────┐ 5 factor failures, or 10 in all        ┌──────────┐
//! │ active │ ─────────────────────────────────────▶ │ locked   │
//! └─┬──┬───┘                                        └──────────┘
//!   │  │     uses reach max_uses                    ┌──────────┐
//!   │  └──────────────────────────────────────────▶ │ used     │
//!   │        clock passes expires_at                └──────────┘
//!   └─────────────────────────────────────────────▶ ┌──────────┐
//!                                                   │ expired  │
//!                                                   └──────────┘
//! ```
//! When several apply, the first in this order wins: revoked, locked, used, expired. An
//! explicit act says more than the clock does.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a grant stands. Only `Active` grants can be visited, exchanged, read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    /// Usable.
    Active,
    /// Uses reached `max_uses`.
    Used,
    /// The clock passed `expires_at`.
    Expired,
    /// Revoked by its originator, or superseded by a newer grant.
    Revoked,
    /// Too many failed factor or OTP attempts.
    Locked,
}

impl GrantStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Used => "used",
            GrantStatus::Expired => "expired",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Locked => "locked",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(GrantStatus::Active),
            "used" => Some(GrantStatus::Used),
            "expired" => Some(GrantStatus::Expired),
            "revoked" => Some(GrantStatus::Revoked),
            "locked" => Some(GrantStatus::Locked),
            _ => None,
        }
    }
}

/// The mutable facts about a grant, kept apart from the immutable grant row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantState {
    /// Accepted submissions and explicit completions.
    pub uses: u32,
    /// Failed factor attempts, all flows together.
    pub factor_failures: u32,
    /// Failed OTP attempts, all flows together.
    pub otp_failures: u32,
    /// When the failures locked the grant.
    pub locked_at: Option<OffsetDateTime>,
    /// When the grant was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked (`superseded`, or the originator's words).
    pub revoke_reason: Option<String>,
}

impl GrantState {
    /// The status at `now` of a grant with these facts.
    pub fn status(
        &self,
        expires_at: OffsetDateTime,
        max_uses: u32,
        now: OffsetDateTime,
    ) -> GrantStatus {
        if self.revoked_at.is_some() {
            GrantStatus::Revoked
        } else if self.locked_at.is_some() {
            GrantStatus::Locked
        } else if self.uses >= max_uses {
            GrantStatus::Used
        } else if now >= expires_at {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn status_table() {
        let exp = datetime!(2026-12-01 00:00 UTC);
        let before = datetime!(2026-11-30 23:59:59 UTC);
        let at = exp;
        let t = datetime!(2026-11-01 00:00 UTC);
        let fresh = GrantState::default();
        let used = GrantState {
            uses: 2,
            ..Default::default()
        };
        let locked = GrantState {
            locked_at: Some(t),
            ..Default::default()
        };
        let revoked = GrantState {
            revoked_at: Some(t),
            locked_at: Some(t),
            uses: 2,
            ..Default::default()
        };
        let cases = [
            (&fresh, 1, before, GrantStatus::Active),
            (&fresh, 1, at, GrantStatus::Expired),
            (&used, 3, before, GrantStatus::Active),
            (&used, 2, before, GrantStatus::Used),
            (&used, 2, at, GrantStatus::Used),
            (&locked, 1, at, GrantStatus::Locked),
            (&revoked, 1, at, GrantStatus::Revoked),
        ];
        for (state, max_uses, now, want) in cases {
            assert_eq!(
                state.status(exp, max_uses, now),
                want,
                "{state:?} max={max_uses} now={now}"
            );
        }
        for s in [
            GrantStatus::Active,
            GrantStatus::Used,
            GrantStatus::Expired,
            GrantStatus::Revoked,
            GrantStatus::Locked,
        ] {
            assert_eq!(GrantStatus::parse(s.as_str()), Some(s));
        }
    }
}
