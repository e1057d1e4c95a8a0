//! Shared by the integration tests: a message with a fixed clock and grant.

use linklease_courier::OtpMessage;
use linklease_grant::{GrantId, OtpChannel, SecretString};
use time::macros::datetime;

/// The grant every test message belongs to.
pub const GRANT: &str = "01900000-0000-7000-8000-000000000001";

/// A message issued at 2025-01-02 03:04:05 UTC, valid 10 minutes.
pub fn message(channel: OtpChannel, to: &str, code: &str) -> OtpMessage {
    let grant_id: GrantId = GRANT.parse().unwrap();
    OtpMessage::new(
        datetime!(2025-01-02 03:04:05 UTC),
        channel,
        to,
        grant_id,
        SecretString::new(code),
        10,
    )
}
