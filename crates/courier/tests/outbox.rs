//! `outbox:PATH`: one JSON line per code, never interleaved, in a file only its owner can read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GRANT, message};
use linklease_courier::{CourierError, CourierOptions, from_spec};
use linklease_grant::OtpChannel;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;

const KEYS: [&str; 6] = ["at", "channel", "code", "grant_id", "text", "to"];

#[test]
fn appends_one_json_line_per_code_even_from_eight_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let spec = format!("outbox:{}", path.display());
    let courier = from_spec(&spec, &CourierOptions::default()).unwrap();
    assert_eq!(courier.kind(), "outbox");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut expected = BTreeSet::new();
    courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "900001"))
        .unwrap();
    courier
        .deliver(&message(OtpChannel::Sms, "+15550100123", "900002"))
        .unwrap();
    expected.extend(["900001".to_owned(), "900002".to_owned()]);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let courier = &courier;
            scope.spawn(move || {
                for i in 0..50 {
                    let code = format!("{thread}{i:05}");
                    let m = message(OtpChannel::Email, "pat@example.org", &code);
                    courier.deliver(&m).unwrap();
                }
            });
        }
    });
    for thread in 0..8 {
        expected.extend((0..50).map(|i| format!("{thread}{i:05}")));
    }

    // A second courier on the same file appends; it does not truncate.
    let again = from_spec(&spec, &CourierOptions::default()).unwrap();
    again
        .deliver(&message(OtpChannel::Sms, "+15550100123", "999999"))
        .unwrap();
    expected.insert("999999".to_owned());

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 8 * 50 + 1);
    let mut codes = BTreeSet::new();
    for line in &lines {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(KEYS), "{line}");
        let code = object["code"].as_str().unwrap();
        assert!(object["text"].as_str().unwrap().contains(code));
        assert_eq!(object["grant_id"], GRANT);
        assert_eq!(object["at"], "2025-01-02T03:04:05Z");
        assert!(matches!(object["channel"].as_str(), Some("email" | "sms")));
        assert!(codes.insert(code.to_owned()), "duplicate {code}");
    }
    assert_eq!(codes, expected);

    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["channel"], "email");
    assert_eq!(first["to"], "pat@example.org");
    assert_eq!(first["code"], "900001");
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(second["channel"], "sms");
    assert_eq!(second["to"], "+15550100123");
}

#[test]
fn refuses_channel_none_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let courier = from_spec(
        &format!("outbox:{}", path.display()),
        &CourierOptions::default(),
    )
    .unwrap();
    let err = courier
        .deliver(&message(OtpChannel::None, "pat@example.org", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Unsupported { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}
