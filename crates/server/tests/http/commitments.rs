//! Salted commitments end to end: the audit trail and its bundles carry HMAC-SHA256 commitments
//! keyed with the grant's salt, never the plain SHA-256 of a payload or body (which anyone could
//! confirm a guess of a small payload against) and never the salt; the originator gets the salt
//! and can recompute every commitment, and so can an auditor it gives the salt to.

use ring::{digest, hmac};
use serde_json::{Value, json};

use crate::exchange::lease_for;
use crate::harness::TestServer;
use crate::http_tests;

http_tests!(audit_records_salted_commitments_the_originator_and_auditor_can_check);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// What an auditor computes: HMAC-SHA256 keyed with the salt over the exact bytes.
fn commitment(salt_hex: &str, bytes: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &unhex(salt_hex));
    hex(hmac::sign(&key, bytes).as_ref())
}

fn sha256(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// The details of a bundle's events of `kind`.
fn details_of(bundle: &str, kind: &str) -> Vec<Value> {
    let lines: Vec<&str> = bundle.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == kind)
        .map(|e| match &e["detail"] {
            Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        })
        .collect()
}

fn audit_records_salted_commitments_the_originator_and_auditor_can_check(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    // A payload anyone could guess, and its stored form (compact JSON, keys sorted).
    let payload = json!({"result": "negative", "test": "PCR"});
    let stored = r#"{"result":"negative","test":"PCR"}"#;
    let created = s.create(
        &key,
        &json!({
            "payload": payload,
            "permissions": {"write_fields": {"result_ack": {"type": "boolean"}}},
            "factor": {"kind": "dob", "value": "1984-03-02"},
            "otp": {"channel": "email", "to": "pat@example.org"},
        }),
    );
    let id = created["id"].as_str().unwrap();
    let salt = created["commitment_salt"].as_str().unwrap().to_owned();
    assert_eq!(salt.len(), 64, "32 bytes in hex");

    // The originator recomputes the commitment from the payload and the salt; the grant keeps
    // the SPEC's plain `payload_sha256` for its originator, and shows the salt again.
    let payload_commitment = commitment(&salt, stored.as_bytes());
    assert_eq!(created["payload_commitment"], payload_commitment.as_str());
    let view = s.get(&format!("/v1/grants/{id}"), &key).json();
    assert_eq!(view["payload_sha256"], sha256(stored.as_bytes()).as_str());
    assert_eq!(view["payload_commitment"], payload_commitment.as_str());
    assert_eq!(view["commitment_salt"], salt.as_str());

    // Read and write through a lease.
    let lease = lease_for(s, &client, created["token"].as_str().unwrap(), "1984-03-02");
    let read = s.lease_call("GET", "/v1/lease", &lease, None);
    assert_eq!(read.json()["payload"], payload);
    let body = json!({"fields": {"result_ack": true}});
    let accepted = s.lease_call("POST", "/v1/lease/submissions", &lease, Some(&body));
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    let canonical = r#"{"creates":[],"fields":{"result_ack":true}}"#;
    let listed = s.get(&format!("/v1/grants/{id}/submissions"), &key).json();
    let submission = &listed["submissions"][0];
    assert_eq!(
        submission["body_sha256"],
        sha256(canonical.as_bytes()).as_str()
    );
    let body_commitment = commitment(&salt, canonical.as_bytes());
    assert_eq!(submission["body_commitment"], body_commitment.as_str());

    // The bundle holds neither plain hash nor the salt.
    let bundle = s.get("/v1/audit/export", &key);
    assert_eq!(bundle.status, 200, "{}", bundle.text);
    let bundle = bundle.text;
    for (what, secret) in [
        ("the payload's SHA-256", sha256(stored.as_bytes())),
        ("the body's SHA-256", sha256(canonical.as_bytes())),
        ("the salt", salt.clone()),
    ] {
        assert!(!bundle.contains(&secret), "{what} is in the bundle");
    }
    // An auditor given the salt checks every commitment in it against what it was shown.
    for kind in ["grant.created", "payload.read"] {
        let details = details_of(&bundle, kind);
        assert!(!details.is_empty(), "no {kind} in the bundle");
        for detail in details {
            assert_eq!(detail["payload_commitment"], payload_commitment.as_str());
            assert!(detail.get("payload_sha256").is_none());
        }
    }
    let accepted = details_of(&bundle, "submission.accepted");
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["body_commitment"], body_commitment.as_str());
    assert!(accepted[0].get("body_sha256").is_none());
    // The grant's history (the audit API's view of its events) holds no plain hash either.
    let history = s.get(&format!("/v1/grants/{id}/history"), &key);
    assert_eq!(history.status, 200, "{}", history.text);
    assert!(!history.text.contains(&sha256(stored.as_bytes())));
    assert!(history.text.contains(&payload_commitment));
}
