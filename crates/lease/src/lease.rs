//! Lease lifetimes: how long a new lease lives, how far a refresh may slide, what it may do.

use linklease_grant::Permissions;
use time::{Duration, OffsetDateTime};

use crate::limits::FlowLimits;
use crate::token::Scope;

/// When a lease issued at `issued_at` with a TTL of `ttl_seconds` expires.
pub fn first_expiry(
    issued_at: OffsetDateTime,
    ttl_seconds: u32,
    limits: &FlowLimits,
) -> OffsetDateTime {
    refreshed_expiry(issued_at, issued_at, ttl_seconds, limits)
}

/// The expiry a refresh at `now` gives: one TTL from now, never past the absolute lifetime
/// after issue.
pub fn refreshed_expiry(
    issued_at: OffsetDateTime,
    now: OffsetDateTime,
    ttl_seconds: u32,
    limits: &FlowLimits,
) -> OffsetDateTime {
    (now + Duration::seconds(i64::from(ttl_seconds))).min(issued_at + limits.lease_absolute)
}

/// The scopes a lease on a grant with these permissions carries.
pub fn scopes(permissions: &Permissions) -> Vec<Scope> {
    let mut scopes = Vec::with_capacity(2);
    if permissions.read {
        scopes.push(Scope::Read);
    }
    if permissions.can_write() {
        scopes.push(Scope::Write);
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn refresh_slides_but_never_past_one_hour() {
        let l = FlowLimits::default();
        let t0 = datetime!(2026-11-23 10:00 UTC);
        assert_eq!(first_expiry(t0, 900, &l), datetime!(2026-11-23 10:15 UTC));
        assert_eq!(first_expiry(t0, 3600, &l), datetime!(2026-11-23 11:00 UTC));
        let cases = [
            (
                datetime!(2026-11-23 10:10 UTC),
                datetime!(2026-11-23 10:25 UTC),
            ),
            (
                datetime!(2026-11-23 10:45 UTC),
                datetime!(2026-11-23 11:00 UTC),
            ),
            (
                datetime!(2026-11-23 10:59 UTC),
                datetime!(2026-11-23 11:00 UTC),
            ),
        ];
        for (now, want) in cases {
            assert_eq!(refreshed_expiry(t0, now, 900, &l), want, "{now}");
        }
    }

    #[test]
    fn scopes_follow_permissions() {
        let mut p = Permissions::default();
        assert_eq!(scopes(&p), vec![Scope::Read]);
        p.write_fields.insert(
            "note".into(),
            linklease_grant::FieldSpec {
                kind: linklease_grant::FieldType::String,
                max_length: None,
                allowed: None,
            },
        );
        assert_eq!(scopes(&p), vec![Scope::Read, Scope::Write]);
        p.read = false;
        assert_eq!(scopes(&p), vec![Scope::Write]);
    }
}
