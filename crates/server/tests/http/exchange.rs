//! The partner exchange and the lease API, end to end over HTTP.

use serde_json::{Value, json};

use crate::harness::TestServer;
use crate::http_tests;
use linklease_store::audit;

http_tests!(
    partner_exchange_to_submission,
    grant_without_factor_or_code_leases_at_once,
);

pub fn lab_result() -> Value {
    json!({
        "payload": {"patient_id": "P-1042", "test": "SARS-CoV-2 PCR", "result": "negative"},
        "permissions": {
            "write_fields": {"result_ack": {"type": "boolean"}, "note": {"type": "string", "max_length": 200}},
            "create": {"kind": "contact", "max": 2, "fields": {"name": {"type": "string", "max_length": 80}}}
        },
        "factor": {"kind": "dob", "value": "1984-03-02"},
        "otp": {"channel": "email", "to": "pat@example.org"},
        "labels": {"case_id": "c-77"}
    })
}

/// Exchanges `token` (with `factor`) and the delivered code for a lease token.
#[track_caller]
pub fn lease_for(s: &TestServer, client: &str, token: &str, factor: &str) -> String {
    let started = s.post_as(
        "/v1/exchange",
        client,
        &json!({"token": token, "factor": factor}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let flow = started.json()["flow_id"].as_str().unwrap().to_owned();
    let code = s.last_code();
    let leased = s.post_as(
        &format!("/v1/exchange/{flow}/otp"),
        client,
        &json!({"code": code}),
    );
    assert_eq!(leased.status, 201, "{}", leased.text);
    leased.json()["lease_token"].as_str().unwrap().to_owned()
}

fn partner_exchange_to_submission(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let grant_id = grant["id"].as_str().unwrap();

    let started = s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": token, "factor": "1984-03-02"}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    let started = started.json();
    assert_eq!(started["next"], "otp");
    assert_eq!(started["otp_sent_to"], "p***@example.org");
    let flow = started["flow_id"].as_str().unwrap();

    let sent = s.outbox();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], "pat@example.org");
    assert_eq!(sent[0]["grant_id"], grant_id);
    assert_eq!(sent[0]["channel"], "email");
    let code = s.last_code();
    assert_eq!(code.len(), 6);

    let leased = s.post_as(
        &format!("/v1/exchange/{flow}/otp"),
        &client,
        &json!({"code": code}),
    );
    assert_eq!(leased.status, 201, "{}", leased.text);
    let leased = leased.json();
    assert_eq!(leased["token_type"], "Bearer");
    assert_eq!(leased["scopes"], json!(["read", "write"]));
    let lease = leased["lease_token"].as_str().unwrap();

    // The code works once.
    s.post_as(
        &format!("/v1/exchange/{flow}/otp"),
        &client,
        &json!({"code": code}),
    )
    .problem(410, "flow_expired");

    let read = s.lease_call("GET", "/v1/lease", lease, None);
    assert_eq!(read.status, 200, "{}", read.text);
    let read = read.json();
    assert_eq!(read["grant_id"], grant_id);
    assert_eq!(read["payload"]["result"], "negative");

    let submitted = s.lease_call(
        "POST",
        "/v1/lease/submissions",
        lease,
        Some(&json!({"fields": {"result_ack": true}, "creates": [{"name": "Ana"}], "idempotency_key": "k1"})),
    );
    assert_eq!(submitted.status, 201, "{}", submitted.text);
    assert_eq!(submitted.json()["grant_status"], "used");

    // The last use ends the grant's leases at once.
    s.lease_call("GET", "/v1/lease", lease, None)
        .problem(410, "grant_used");

    let listed = s.get(&format!("/v1/grants/{grant_id}/submissions"), &key);
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed = listed.json();
    let subs = listed["submissions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["fields"], json!({"result_ack": true}));
    assert_eq!(subs[0]["creates"], json!([{"name": "Ana"}]));
    assert_eq!(subs[0]["idempotency_key"], "k1");
    let feed = s.get("/v1/submissions", &key).json();
    assert_eq!(feed["submissions"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&format!("/v1/grants/{grant_id}"), &key).json()["status"],
        "used"
    );

    let kinds: Vec<String> = s
        .store
        .read(|c| audit::for_grant(c, grant_id.parse().unwrap()))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        "grant.created",
        "link.visited",
        "factor.passed",
        "otp.sent",
        "otp.passed",
        "lease.issued",
        "payload.read",
        "submission.accepted",
        "grant.used",
        "lease.ended",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    let all = s.store.read(audit::all).unwrap();
    let text = format!("{all:?}");
    assert!(!text.contains(token) && !text.contains(&code) && !text.contains(lease));
    assert!(!text.contains("1984-03-02"));
}

fn grant_without_factor_or_code_leases_at_once(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &json!({"payload": {"a": 1}, "max_uses": 2}));
    let started = s.post_as("/v1/exchange", &client, &json!({"token": grant["token"]}));
    assert_eq!(started.status, 201, "{}", started.text);
    let started = started.json();
    assert_eq!(started["next"], "lease");
    let lease = started["lease"]["lease_token"].as_str().unwrap();
    assert_eq!(started["lease"]["scopes"], json!(["read"]));
    assert!(
        s.outbox().is_empty(),
        "no code for a grant without a channel"
    );
    assert_eq!(
        s.lease_call("GET", "/v1/lease", lease, None).json()["payload"],
        json!({"a": 1})
    );
    // Read-only: no writes; completing is a use.
    s.lease_call(
        "POST",
        "/v1/lease/submissions",
        lease,
        Some(&json!({"fields": {"a": 2}})),
    )
    .problem(403, "forbidden");
    let done = s.lease_call("POST", "/v1/lease/complete", lease, None);
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json()["grant_status"], "active");
    let refreshed = s.lease_call("POST", "/v1/lease/refresh", lease, None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let fresh = refreshed.json()["lease_token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.lease_call("DELETE", "/v1/lease", &fresh, None).status,
        204
    );
    s.lease_call("GET", "/v1/lease", &fresh, None)
        .problem(401, "lease_invalid");
    s.lease_call("GET", "/v1/lease", lease, None)
        .problem(401, "lease_invalid");
}
