//! `OtpMessage`: the standard text, the spec §5 JSON object, and a `Debug` that hides the code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GRANT, message};
use linklease_courier::OtpMessage;
use linklease_grant::{OtpChannel, SecretString};
use time::macros::datetime;

#[test]
fn text_names_the_code_and_its_lifetime() {
    let m = message(OtpChannel::Email, "pat@example.org", "123456");
    assert_eq!(
        m.text,
        "Your linklease code is 123456. It expires in 10 minutes. Never share it."
    );
    let one = OtpMessage::new(
        m.at,
        OtpChannel::Sms,
        "+15550100123",
        m.grant_id,
        SecretString::new("987654"),
        1,
    );
    assert_eq!(
        one.text,
        "Your linklease code is 987654. It expires in 1 minute. Never share it."
    );
}

#[test]
fn json_has_exactly_the_six_spec_fields() {
    let m = message(OtpChannel::Sms, "+15550100123", "123456");
    let json = m.to_json().unwrap();
    assert!(
        json.starts_with(r#"{"at":"2025-01-02T03:04:05Z","channel":"sms","to":"#),
        "{json}"
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "at": "2025-01-02T03:04:05Z",
            "channel": "sms",
            "to": "+15550100123",
            "grant_id": GRANT,
            "code": "123456",
            "text": "Your linklease code is 123456. It expires in 10 minutes. Never share it.",
        })
    );
    let at = value["at"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(parsed, datetime!(2025-01-02 03:04:05 UTC));
}

#[test]
fn debug_hides_the_code_and_most_of_the_destination() {
    let m = message(OtpChannel::Email, "pat@example.org", "123456");
    let shown = format!("{m:?}");
    assert!(!shown.contains("123456"), "{shown}");
    assert!(!shown.contains("pat@example.org"), "{shown}");
    assert!(shown.contains("p***@example.org"), "{shown}");
    assert!(shown.contains(GRANT), "{shown}");
}
