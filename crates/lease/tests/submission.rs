//! Submissions against the grant's schema: each refusal has its code, nothing quotes a value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use linklease_lease::grant::Permissions;
use linklease_lease::submission::{self, SubmissionError, SubmissionRequest};
use serde_json::json;

fn permissions() -> Permissions {
    serde_json::from_value(json!({
        "write_fields": {
            "result_ack": {"type": "boolean"},
            "note": {"type": "string", "max_length": 5},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "count": {"type": "integer"},
            "weight": {"type": "number"},
            "seen_on": {"type": "date"}
        },
        "create": {"kind": "contact", "max": 2,
                   "fields": {"name": {"type": "string", "max_length": 10}}}
    }))
    .unwrap()
}

fn request(body: serde_json::Value) -> SubmissionRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn valid_submissions_pass_and_are_canonical() {
    let p = permissions();
    let r = request(json!({
        "fields": {"weight": 1.5, "count": 3, "result_ack": true, "note": "héllo",
                    "color": "red", "seen_on": "2026-11-01"},
        "creates": [{"name": "Ana"}],
        "idempotency_key": "k1"
    }));
    let body = submission::validate(&p, &r, 1).unwrap();
    assert!(body.starts_with(r#"{"creates":[{"name":"Ana"}],"fields":{"color":"red","count":3"#));
    assert!(
        !body.contains("k1"),
        "the idempotency key is not part of the body"
    );
}

#[test]
fn each_refusal_has_its_kind() {
    let p = permissions();
    let cases = [
        (json!({"fields": {"admin": true}}), "not_writable", 0),
        (
            json!({"creates": [{"name": "A", "age": 3}]}),
            "not_writable",
            0,
        ),
        (json!({"fields": {"note": "too long"}}), "invalid", 0),
        (json!({"fields": {"color": "green"}}), "invalid", 0),
        (json!({"fields": {"count": 1.5}}), "invalid", 0),
        (json!({"fields": {"count": "1"}}), "invalid", 0),
        (json!({"fields": {"weight": null}}), "invalid", 0),
        (json!({"fields": {"result_ack": "yes"}}), "invalid", 0),
        (json!({"fields": {"seen_on": "2026-02-30"}}), "invalid", 0),
        (json!({"fields": {"note": "a\u{0}"}}), "invalid", 0),
        (json!({"creates": [{}]}), "invalid", 0),
        (
            json!({"creates": [{"name": "A"}, {"name": "B"}, {"name": "C"}]}),
            "limit",
            0,
        ),
        (
            json!({"creates": [{"name": "A"}, {"name": "B"}]}),
            "limit",
            1,
        ),
        (json!({}), "empty", 0),
        (
            json!({"fields": {"count": 1}, "idempotency_key": ""}),
            "empty",
            0,
        ),
    ];
    for (body, want, created) in cases {
        let got = submission::validate(&p, &request(body.clone()), created).unwrap_err();
        let kind = match &got {
            SubmissionError::NotWritable(_) => "not_writable",
            SubmissionError::Invalid(problems) => {
                assert!(
                    !format!("{problems:?}").contains("too long"),
                    "no values quoted"
                );
                "invalid"
            }
            SubmissionError::CreateLimit { .. } => "limit",
            SubmissionError::TooLarge => "too_large",
            SubmissionError::Empty(_) => "empty",
        };
        assert_eq!(kind, want, "{body}");
    }
    let big = "x".repeat(70 * 1024);
    let open: Permissions =
        serde_json::from_value(json!({"write_fields": {"note": {"type": "string"}}})).unwrap();
    assert_eq!(
        submission::validate(&open, &request(json!({"fields": {"note": big}})), 0),
        Err(SubmissionError::TooLarge)
    );
    assert!(serde_json::from_value::<SubmissionRequest>(json!({"field": {}})).is_err());
}
