//! Nothing secret reaches the logs: API keys, link tokens, factor values, client secrets.

use serde_json::json;

use crate::harness::{TestServer, logs};

#[test]
fn secrets_never_reach_the_log() {
    let db = linklease_store::testing::TestDb::sqlite();
    let s = TestServer::start(&db);
    let (_, key) = s.tenant("acme");
    let body = json!({"payload": {"result": "negative"}, "factor": {"kind": "pin", "value": "55512345"},
        "otp": {"channel": "sms", "to": "+15550100123"}});
    let g = s.create(&key, &body);
    let token = g["token"].as_str().unwrap().to_owned();
    // Failures log their causes; make some.
    s.get("/v1/grants", &format!("{key}0"));
    s.post(
        "/v1/grants",
        &key,
        &json!({"payload": {}, "factor": {"kind": "pin", "value": 77788899}}),
    );
    s.request("GET", &format!("/l/{token}"), &[], None);
    s.request(
        "GET",
        &format!("/v1/grants?cursor={token}"),
        &[("authorization", &format!("Bearer {key}"))],
        None,
    );
    let log = logs();
    assert!(
        log.contains("linklease::access"),
        "the access log is captured"
    );
    for secret in [key.as_str(), token.as_str(), "55512345", "77788899"] {
        let line = log.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "log contains a secret: {line:?}");
    }
}
