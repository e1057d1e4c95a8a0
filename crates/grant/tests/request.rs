//! `GrantRequest::issue`: defaults, limits and every kind of bad input, with a fixed clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use linklease_grant::*;
use ring::rand::SystemRandom;
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00.123456789 UTC);

fn issuer() -> Issuer {
    Issuer {
        tenant: TenantId(Uuid::from_u128(1)),
        api_key: ApiKeyId(Uuid::from_u128(2)),
    }
}

fn keys() -> SecretKeys {
    SecretKeys::from_master(&[5; 32])
}

fn issue(body: serde_json::Value) -> Result<Issued, GrantRequestError> {
    let req: GrantRequest = serde_json::from_value(body).map_err(|e| {
        let mut p = Problems::default();
        p.push("body", e);
        GrantRequestError::Invalid(p)
    })?;
    req.issue(issuer(), NOW, &keys(), &SystemRandom::new())
}

fn problem_fields(body: serde_json::Value) -> Vec<String> {
    match issue(body) {
        Err(GrantRequestError::Invalid(p)) => p.0.into_iter().map(|p| p.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_spec_example_issues_with_its_values() {
    let issued = issue(json!({
        "payload": {"patient_id": "P-1042", "test": "SARS-CoV-2 PCR", "result": "negative"},
        "permissions": {"read": true,
            "write_fields": {"result_ack": {"type": "boolean"}, "note": {"type": "string", "max_length": 200}},
            "create": {"kind": "contact", "max": 10,
                "fields": {"name": {"type": "string", "max_length": 80}, "phone": {"type": "string"}}}},
        "max_uses": 1, "lease_ttl_seconds": 900, "expires_at": "2026-12-01T00:00:00Z",
        "factor": {"kind": "dob", "value": "1984-03-02"},
        "otp": {"channel": "email", "to": "pat@example.org"},
        "allowed_ip_blocks": ["10.0.0.0/8", "2001:db8::/32"], "labels": {"case_id": "c-77"}
    }))
    .unwrap();
    let g = &issued.grant.grant;
    assert_eq!(g.expires_at, datetime!(2026-12-01 00:00 UTC));
    assert_eq!(
        g.created_at,
        datetime!(2026-11-23 12:00:00.123456 UTC),
        "truncated to µs"
    );
    assert_eq!(g.id.0.get_version_num(), 7);
    assert_eq!(g.factor_kind, FactorKind::Dob);
    assert_eq!(g.otp_to.as_deref(), Some("pat@example.org"));
    assert_eq!(g.allowed_ip_blocks.len(), 2);
    assert_eq!(g.permissions.create.as_ref().map(|c| c.max), Some(10));
    // Payload is stored as compact JSON with sorted keys, and the hash covers exactly that.
    assert_eq!(
        issued.grant.payload,
        r#"{"patient_id":"P-1042","result":"negative","test":"SARS-CoV-2 PCR"}"#
    );
    assert_eq!(
        g.payload_sha256,
        request::sha256(issued.grant.payload.as_bytes())
    );
    // The verifier checks the factor; the token hashes to what is stored.
    let v = g.factor_verifier.unwrap();
    assert!(factor::matches(
        &keys(),
        g.id,
        FactorKind::Dob,
        &v,
        &SecretString::new("1984-03-02"),
        NOW
    ));
    assert_eq!(issued.token.hash(&keys()), issued.grant.token_hash);
    // Nothing secret in Debug output.
    let debug = format!("{issued:?}");
    assert!(!debug.contains(issued.token.expose()));
    assert!(!debug.contains("1984-03-02"));
}

#[test]
fn defaults_apply() {
    let g = issue(json!({"payload": {}})).unwrap().grant.grant;
    assert_eq!(g.max_uses, 1);
    assert_eq!(g.lease_ttl_seconds, 900);
    assert_eq!(g.expires_at - g.created_at, Duration::days(7));
    assert!(g.permissions.read);
    assert!(!g.permissions.can_write());
    assert_eq!(g.factor_kind, FactorKind::None);
    assert!(g.factor_verifier.is_none());
    assert_eq!(g.otp_channel, OtpChannel::None);
}

#[test]
fn every_field_is_checked() {
    assert_eq!(problem_fields(json!({"payload": [1]})), ["payload"]);
    assert_eq!(
        problem_fields(json!({"payload": {}, "max_uses": 0})),
        ["max_uses"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "max_uses": 1001})),
        ["max_uses"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "lease_ttl_seconds": 59})),
        ["lease_ttl_seconds"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "lease_ttl_seconds": 3601})),
        ["lease_ttl_seconds"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "expires_at": "2026-11-23T11:00:00Z"})),
        ["expires_at"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "expires_at": "2027-02-22T12:00:01Z"})),
        ["expires_at"]
    );
    assert!(
        issue(json!({"payload": {}, "expires_at": "2027-02-21T12:00:00Z"})).is_ok(),
        "90 days is allowed"
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "factor": {"kind": "dob"}})),
        ["factor.value"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "factor": {"kind": "none", "value": "1"}})),
        ["factor.value"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "factor": {"kind": "pin", "value": "12"}})),
        ["factor.value"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "otp": {"channel": "sms"}})),
        ["otp.to"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "otp": {"channel": "sms", "to": "555"}})),
        ["otp.to"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "otp": {"channel": "none", "to": "a@b.org"}})),
        ["otp.to"]
    );
    assert_eq!(
        problem_fields(
            json!({"payload": {}, "allowed_ip_blocks": ["10.0.0.0/8", "10.0.0.1/8", "nope"]})
        ),
        ["allowed_ip_blocks[1]", "allowed_ip_blocks[2]"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "labels": {"bad key": "x"}})),
        ["labels"]
    );
    assert_eq!(
        problem_fields(json!({"payload": {}, "labels": {"k": "a\u{0}b"}})),
        ["labels.k"]
    );
    // Several problems are all reported at once.
    assert_eq!(
        problem_fields(json!({"payload": {}, "max_uses": 0, "lease_ttl_seconds": 1})),
        ["max_uses", "lease_ttl_seconds"]
    );
}

#[test]
fn problems_never_echo_the_factor_value() {
    let secret = "1984-13-45";
    let Err(GrantRequestError::Invalid(p)) =
        issue(json!({"payload": {}, "factor": {"kind": "dob", "value": secret}}))
    else {
        panic!("must be refused");
    };
    assert!(!p.to_string().contains(secret), "{p}");
}

#[test]
fn payload_size_is_capped_at_64_kib() {
    // {"x":"…"} is 8 bytes of framing around the string.
    let fits = "a".repeat(limits::MAX_PAYLOAD_BYTES - 8);
    assert!(issue(json!({"payload": {"x": fits}})).is_ok());
    let over = "a".repeat(limits::MAX_PAYLOAD_BYTES - 7);
    assert!(matches!(
        issue(json!({"payload": {"x": over}})),
        Err(GrantRequestError::PayloadTooLarge { bytes }) if bytes == limits::MAX_PAYLOAD_BYTES + 1
    ));
}

#[test]
fn unknown_fields_are_refused() {
    assert!(serde_json::from_value::<GrantRequest>(json!({"payload": {}, "max_use": 2})).is_err());
    assert!(
        serde_json::from_value::<GrantRequest>(
            json!({"payload": {}, "factor": {"kind": "dob", "valeu": "x"}})
        )
        .is_err()
    );
    assert!(
        serde_json::from_value::<GrantRequest>(json!({"max_uses": 2})).is_err(),
        "payload is required"
    );
}

#[test]
fn each_issue_makes_a_new_id_and_token() {
    let a = issue(json!({"payload": {}})).unwrap();
    let b = issue(json!({"payload": {}})).unwrap();
    assert_ne!(a.grant.grant.id, b.grant.grant.id);
    assert_ne!(a.token, b.token);
    assert_ne!(a.grant.token_hash, b.grant.token_hash);
}
