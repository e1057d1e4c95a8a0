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

/// Starts the partner exchange of `token` with `factor` (201 expected); returns the flow id.
#[track_caller]
pub fn start_exchange(s: &TestServer, client: &str, token: &str, factor: &str) -> String {
    let started = s.post_as(
        "/v1/exchange",
        client,
        &json!({"token": token, "factor": factor}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    started.json()["flow_id"].as_str().unwrap().to_owned()
}

/// Exchanges `token` (with `factor`) and the delivered code for a lease token.
#[track_caller]
pub fn lease_for(s: &TestServer, client: &str, token: &str, factor: &str) -> String {
    let flow = start_exchange(s, client, token, factor);
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
    let first = submitted.json();
    assert_eq!(first["grant_status"], "used");

    // A retry of the final submission (its answer was lost) gets the first answer; the same key
    // with another body is a conflict; no use is taken either way.
    let body = json!({"fields": {"result_ack": true}, "creates": [{"name": "Ana"}], "idempotency_key": "k1"});
    let again = s.lease_call("POST", "/v1/lease/submissions", lease, Some(&body));
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.json()["id"], first["id"]);
    let mut other = body.clone();
    other["fields"]["result_ack"] = json!(false);
    s.lease_call("POST", "/v1/lease/submissions", lease, Some(&other))
        .problem(409, "idempotency_conflict");

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

/// A courier that cannot deliver (a webhook to a closed port): the visitor is told the service
/// is unavailable, nothing is lost, and the attempt is recorded and counted (it may have left).
fn a_failed_delivery_is_unavailable_and_loses_nothing(db: &linklease_store::testing::TestDb) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let courier = linklease_courier::from_spec(
        &format!("webhook:http://127.0.0.1:{port}/sms"),
        &linklease_courier::CourierOptions {
            webhook_secret: Some(linklease_grant::SecretString::new("s3cret")),
            timeout: std::time::Duration::from_secs(2),
            allow_insecure: true,
            ..Default::default()
        },
    )
    .unwrap();
    let s = TestServer::start_full(db.store.clone(), 10_000, Some(courier));
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &lab_result());
    let id = grant["id"].as_str().unwrap();
    let reply = s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": grant["token"], "factor": "1984-03-02"}),
    );
    let doc = reply.problem(503, "unavailable");
    assert!(reply.header("retry-after").is_some());
    assert!(!doc.to_string().contains("pat@example.org"));
    // The factor passed and is recorded; no failure counted, no use taken, the grant active.
    let view = s.get(&format!("/v1/grants/{id}"), &key).json();
    assert_eq!(
        (view["status"].as_str(), view["uses"].as_u64()),
        (Some("active"), Some(0))
    );
    assert_eq!(view["factor_failures"], 0);
    let kinds: Vec<String> = s
        .store
        .read(|c| audit::for_grant(c, id.parse().unwrap()))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // The attempt is recorded before the courier is called, and its failure after.
    let tail: Vec<&str> = kinds.iter().map(String::as_str).skip(2).collect();
    assert_eq!(
        tail,
        ["factor.passed", "otp.sent", "otp.failed_to_send"],
        "{kinds:?}"
    );
    // The failed send counts: another code only after the resend interval.
    let events = s
        .store
        .read(|c| audit::for_grant(c, id.parse().unwrap()))
        .unwrap();
    let visited = events.iter().find(|e| e.kind == "link.visited").unwrap();
    let detail: Value = serde_json::from_str(&visited.detail).unwrap();
    let flow = detail["flow"].as_str().unwrap();
    let resend = || {
        s.request(
            "POST",
            &format!("/v1/exchange/{flow}/resend"),
            &[("authorization", &client)],
            None,
        )
    };
    let soon = resend();
    soon.problem(429, "too_many_requests");
    assert!(soon.header("retry-after").is_some());
    s.advance(time::Duration::seconds(30));
    resend().problem(503, "unavailable");
    let failed = s
        .store
        .read(|c| audit::for_grant(c, id.parse().unwrap()))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "otp.failed_to_send")
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1]["send"], 2);
    assert_eq!(failed[1]["error"], "transport");
    assert!(!failed[1].to_string().contains("pat@example.org"));
}

#[test]
fn a_failed_delivery_is_unavailable_and_loses_nothing_sqlite() {
    a_failed_delivery_is_unavailable_and_loses_nothing(&linklease_store::testing::TestDb::sqlite());
}

#[test]
fn a_failed_delivery_is_unavailable_and_loses_nothing_postgres() {
    if let Some(db) = linklease_store::testing::TestDb::postgres() {
        a_failed_delivery_is_unavailable_and_loses_nothing(&db);
    }
}
