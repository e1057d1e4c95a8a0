//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, unknown routes, headers, and two
//! instances on one database.

use serde_json::json;

use crate::harness::TestServer;
use crate::http_tests;

fn health_readiness_and_metrics(s: &TestServer) {
    let health = s.request("GET", "/healthz", &[], None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    let ready = s.request("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready"}));

    let (_, key) = s.tenant("acme");
    let g = s.create(&key, &json!({"payload": {}}));
    let token = g["token"].as_str().unwrap();
    s.request("GET", &format!("/l/{token}"), &[], None);
    let metrics = s.request("GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = &metrics.text;
    assert!(
        text.contains(
            r#"linklease_http_requests_total{method="POST",route="/v1/grants",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"linklease_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
    ));
    assert!(text.contains("linklease_db_pool_connections"));
    // SQLite's group commit: at least the grant's creation, and never fewer writes than commits.
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    if text.contains(r#"backend="sqlite""#) {
        let commits = counter("linklease_sqlite_commits_total").expect("commits counter");
        let writes = counter("linklease_sqlite_committed_writes_total").expect("writes counter");
        assert!(commits >= 1 && writes >= commits, "{text}");
    } else {
        assert!(!text.contains("linklease_sqlite_commits_total"), "{text}");
    }
    assert!(!text.contains(token), "metrics never hold a path");
}

fn openapi_describes_every_route(s: &TestServer) {
    let reply = s.request("GET", "/openapi.json", &[], None);
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/grants", "post"),
        ("/v1/grants", "get"),
        ("/v1/grants/batch", "post"),
        ("/v1/grants/{id}", "get"),
        ("/v1/grants/{id}/revoke", "post"),
        ("/v1/grants/{id}/submissions", "get"),
        ("/v1/submissions", "get"),
        ("/v1/exchange", "post"),
        ("/v1/exchange/{flow_id}/otp", "post"),
        ("/v1/exchange/{flow_id}/resend", "post"),
        ("/v1/lease", "get"),
        ("/v1/lease", "delete"),
        ("/v1/lease/submissions", "post"),
        ("/v1/lease/complete", "post"),
        ("/v1/lease/refresh", "post"),
        ("/v1/grants/{id}/history", "get"),
        ("/v1/audit/events", "get"),
        ("/v1/audit/export", "get"),
        ("/v1/audit/public-key", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "GrantRequest",
        "Permissions",
        "FieldSpec",
        "GrantView",
        "Problem",
        "CreatedGrant",
        "SubmissionRequest",
        "LeaseToken",
        "LeaseView",
        "ExchangeStarted",
        "SubmissionList",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["lease_cookie"]["in"],
        "cookie"
    );
    operations_are_complete(&doc);
}

/// Unique operation ids, every path parameter declared, every answer described, every problem
/// answer `application/problem+json` (the tools' side of this is `openapi_client.rs`).
fn operations_are_complete(doc: &serde_json::Value) {
    let mut ids = std::collections::BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
            for (status, answer) in op["responses"].as_object().unwrap() {
                let answer = match answer["$ref"].as_str() {
                    Some(r) => &doc["components"]["responses"][r.rsplit('/').next().unwrap()],
                    None => answer,
                };
                assert!(
                    answer["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}: no description"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        answer["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

fn unknown_routes_and_methods_are_problems_and_headers_are_set(s: &TestServer) {
    let nothing = s.request("GET", "/nope", &[], None);
    nothing.problem(404, "not_found");
    s.request("DELETE", "/v1/grants", &[], None)
        .problem(405, "method_not_allowed");
    s.request("GET", "/v1/grants/batch", &[], None)
        .problem(405, "method_not_allowed");
    for reply in [nothing, s.request("GET", "/healthz", &[], None)] {
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert!(
            reply
                .header("content-security-policy")
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(reply.header("x-request-id").is_some());
    }
}

/// With the database down, the server still answers: 503 `unavailable` with `Retry-After`,
/// never a 500, never a hang, and `/healthz` stays up.
#[test]
fn an_unreachable_database_is_unavailable_not_an_error() {
    let store = linklease_store::Store::open(
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
        &linklease_store::PoolOptions {
            max_size: 2,
            timeout: std::time::Duration::from_millis(300),
        },
    )
    .unwrap();
    let s = TestServer::start_on(store);
    assert_eq!(s.request("GET", "/healthz", &[], None).status, 200);
    for reply in [
        s.request("GET", "/readyz", &[], None),
        s.get(
            "/v1/grants",
            "llk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        s.post(
            "/v1/grants",
            "llk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &json!({"payload": {}}),
        ),
    ] {
        reply.problem(503, "unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
}

http_tests!(
    health_readiness_and_metrics,
    openapi_describes_every_route,
    unknown_routes_and_methods_are_problems_and_headers_are_set,
);

mod shared_database {
    use serde_json::json;

    use crate::exchange::{lab_result, lease_for};
    use crate::harness::TestServer;

    /// Two stateless instances on one database: a grant made through one is read and revoked
    /// through the other, and either one's auditor API shows the whole history, chained in
    /// order without a gap (on PostgreSQL each instance runs its own chainer) and intact.
    fn two_instances_share_one_database(db: &linklease_store::testing::TestDb) {
        let a = TestServer::start(db);
        let b = TestServer::start(db);
        let (_, key) = a.tenant("acme");
        let g = a.create(&key, &json!({"payload": {"x": 1}}));
        let id = g["id"].as_str().unwrap();
        assert_eq!(
            b.get(&format!("/v1/grants/{id}"), &key).json()["status"],
            "active"
        );
        b.post(
            &format!("/v1/grants/{id}/revoke"),
            &key,
            &json!({"reason": "via b"}),
        );
        assert_eq!(
            a.get(&format!("/v1/grants/{id}"), &key).json()["status"],
            "revoked"
        );
        for server in [&a, &b] {
            let history = server.get(&format!("/v1/grants/{id}/history"), &key).json();
            let kinds: Vec<&str> = history["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, ["grant.created", "grant.revoked"]);
            let events = server.get("/v1/audit/events?limit=100", &key).json();
            let positions: Vec<i64> = events["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["chain_seq"].as_i64().unwrap())
                .collect();
            let expected: Vec<i64> = (1..=positions.len() as i64).collect();
            assert_eq!(
                positions, expected,
                "the tenant's chain, whole and in order"
            );
        }
        let report = db
            .store
            .read(|c| linklease_store::audit::verify(c, &[]))
            .unwrap();
        assert!(report.is_ok(), "{report:?}");
    }

    /// Two instances on one database: a lease issued through one and read through the other
    /// (which then holds its token, grant and lease in memory) stops working there at once
    /// when the first instance revokes its grant or ends it: what can change is read from the
    /// database for every request, on every instance.
    fn a_change_through_one_instance_binds_the_other(db: &linklease_store::testing::TestDb) {
        let a = TestServer::start(db);
        let b = TestServer::start(db);
        let (tenant, key) = a.tenant("acme");
        let client = a.client(tenant, &["127.0.0.0/8"]);
        for ending in ["revoke the grant", "end the lease"] {
            let g = a.create(&key, &lab_result());
            let token = g["token"].as_str().unwrap();
            let lease = lease_for(&a, &client, token, "1984-03-02");
            for _ in 0..3 {
                let read = b.lease_call("GET", "/v1/lease", &lease, None);
                assert_eq!(read.status, 200, "{ending}: {}", read.text);
            }
            if ending == "revoke the grant" {
                let id = g["id"].as_str().unwrap();
                a.post(
                    &format!("/v1/grants/{id}/revoke"),
                    &key,
                    &json!({"reason": "via a"}),
                );
                b.lease_call("GET", "/v1/lease", &lease, None)
                    .problem(410, "grant_revoked");
            } else {
                let ended = a.lease_call("DELETE", "/v1/lease", &lease, None);
                assert_eq!(ended.status, 204, "{}", ended.text);
                b.lease_call("GET", "/v1/lease", &lease, None)
                    .problem(401, "lease_invalid");
            }
        }
    }

    linklease_store::backend_tests!(
        two_instances_share_one_database,
        a_change_through_one_instance_binds_the_other,
    );
}
