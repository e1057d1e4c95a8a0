//! `/v1/grants…`: creation, batch, reading, listing, revocation, supersede; bad input and
//! tenant isolation route by route.

use serde_json::{Value, json};
use time::Duration;

use linklease_store::api_keys::Scope;

use crate::harness::{PUBLIC_URL, TestServer};
use crate::http_tests;

fn example() -> Value {
    json!({
        "payload": {"patient_id": "P-1042", "test": "SARS-CoV-2 PCR", "result": "negative"},
        "permissions": {"read": true,
            "write_fields": {"result_ack": {"type": "boolean"}, "note": {"type": "string", "max_length": 200}},
            "create": {"kind": "contact", "max": 10,
                "fields": {"name": {"type": "string", "max_length": 80}, "phone": {"type": "string"}}}},
        "max_uses": 1, "lease_ttl_seconds": 900, "expires_at": "2026-12-01T00:00:00Z",
        "factor": {"kind": "dob", "value": "1984-03-02"},
        "otp": {"channel": "email", "to": "pat@example.org"},
        "allowed_ip_blocks": [], "labels": {"case_id": "c-77"}
    })
}

fn count_grants(s: &TestServer, key: &str) -> usize {
    let reply = s.get("/v1/grants?limit=200", key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["grants"].as_array().unwrap().len()
}

fn create_returns_the_link_once_and_reads_never_show_secrets(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let reply = s.post("/v1/grants", &key, &example());
    assert_eq!(reply.status, 201, "{}", reply.text);
    let created = reply.json();
    let id = created["id"].as_str().unwrap();
    let token = created["token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    assert_eq!(created["link"], format!("{PUBLIC_URL}/l/{token}"));
    assert_eq!(created["status"], "active");
    assert_eq!(created["expires_at"], "2026-12-01T00:00:00Z");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/grants/{id}").as_str())
    );

    let view = s.get(&format!("/v1/grants/{id}"), &key);
    assert_eq!(view.status, 200);
    let v = view.json();
    assert_eq!(v["id"], id);
    assert_eq!(v["status"], "active");
    assert_eq!(v["uses"], 0);
    assert_eq!(v["max_uses"], 1);
    assert_eq!(v["factor"], json!({"kind": "dob"}));
    assert_eq!(
        v["otp"],
        json!({"channel": "email", "to": "p***@example.org"})
    );
    assert_eq!(v["labels"], json!({"case_id": "c-77"}));
    assert_eq!(v["permissions"]["create"]["max"], 10);
    // SHA-256 of {"patient_id":"P-1042","result":"negative","test":"SARS-CoV-2 PCR"}.
    let canonical = r#"{"patient_id":"P-1042","result":"negative","test":"SARS-CoV-2 PCR"}"#;
    assert_eq!(
        v["payload_sha256"],
        hex(&linklease_grant::request::sha256(canonical.as_bytes()))
    );
    for secret in [token, "1984-03-02", "pat@example.org"] {
        assert!(!view.text.contains(secret), "GET shows {secret}");
    }
    // Two creations never share a token or an id.
    let again = s.create(&key, &example());
    assert_ne!(again["token"], created["token"]);
    assert_ne!(again["id"], created["id"]);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn defaults_apply(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let created = s.create(&key, &json!({"payload": {}}));
    let v = s
        .get(
            &format!("/v1/grants/{}", created["id"].as_str().unwrap()),
            &key,
        )
        .json();
    assert_eq!(v["max_uses"], 1);
    assert_eq!(v["lease_ttl_seconds"], 900);
    assert_eq!(
        v["expires_at"], "2026-11-30T12:00:00Z",
        "7 days after the server's now"
    );
    assert_eq!(v["permissions"], json!({"read": true, "write_fields": {}}));
    assert_eq!(v["factor"]["kind"], "none");
    assert_eq!(v["otp"], json!({"channel": "none", "to": null}));
}

fn bad_input_gets_its_code_and_stores_nothing(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let auth = format!("Bearer {key}");
    let raw = |body: &str, content_type: &str| {
        s.request(
            "POST",
            "/v1/grants",
            &[("authorization", &auth), ("content-type", content_type)],
            Some(body.as_bytes()),
        )
    };
    raw("{", "application/json").problem(400, "invalid_request");
    raw("", "application/json").problem(400, "invalid_request");
    raw(r#"{"payload": {}} trailing"#, "application/json").problem(400, "invalid_request");
    raw(r#"{"payload": {}}"#, "text/plain").problem(400, "invalid_request");
    raw(r#"{"payload": {}}"#, "application/json; charset=utf-8");
    let typo =
        raw(r#"{"payload": {}, "max_use": 3}"#, "application/json").problem(400, "invalid_request");
    assert!(
        typo["detail"].as_str().unwrap().contains("max_use"),
        "{typo}"
    );
    let wrong_type = raw(
        r#"{"payload": {}, "max_uses": "three"}"#,
        "application/json",
    )
    .problem(400, "invalid_request");
    assert!(
        wrong_type["detail"]
            .as_str()
            .unwrap()
            .starts_with("max_uses:"),
        "{wrong_type}"
    );
    let secret_number = raw(
        r#"{"payload": {}, "factor": {"kind": "pin", "value": 918273}}"#,
        "application/json",
    )
    .problem(400, "invalid_request");
    assert!(
        !secret_number.to_string().contains("918273"),
        "echoes the factor: {secret_number}"
    );

    let cases: Vec<(Value, &str)> = vec![
        (json!({"payload": [1, 2]}), "payload"),
        (json!({"payload": {}, "max_uses": 0}), "max_uses"),
        (
            json!({"payload": {}, "lease_ttl_seconds": 7200}),
            "lease_ttl_seconds",
        ),
        (
            json!({"payload": {}, "expires_at": "2026-11-23T11:59:59Z"}),
            "expires_at",
        ),
        (
            json!({"payload": {}, "expires_at": "2027-03-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"payload": {}, "allowed_ip_blocks": ["10.0.0.0/33"]}),
            "allowed_ip_blocks[0]",
        ),
        (
            json!({"payload": {}, "allowed_ip_blocks": ["10.0.0.0/8", "not-an-ip"]}),
            "allowed_ip_blocks[1]",
        ),
        (
            json!({"payload": {}, "factor": {"kind": "dob", "value": "1984-02-30"}}),
            "factor.value",
        ),
        (
            json!({"payload": {}, "otp": {"channel": "sms", "to": "12345"}}),
            "otp.to",
        ),
        (
            json!({"payload": {}, "permissions": {"write_fields": {"n": {"type": "number", "max_length": 3}}}}),
            "permissions.write_fields.n.max_length",
        ),
        (
            json!({"payload": {}, "permissions": {"create": {"kind": "contact", "max": 0, "fields": {"a": {"type": "string"}}}}}),
            "permissions.create.max",
        ),
    ];
    for (body, field) in cases {
        let doc = s
            .post("/v1/grants", &key, &body)
            .problem(400, "invalid_request");
        assert_eq!(doc["errors"][0]["field"], field, "{doc}");
        assert!(
            !doc["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("1984-02-30")
        );
    }
    // Wrong types deep inside permissions and an unknown field in a nested object.
    s.post(
        "/v1/grants",
        &key,
        &json!({"payload": {}, "permissions": {"write_fields": {"a": {"type": "text"}}}}),
    )
    .problem(400, "invalid_request");
    s.post(
        "/v1/grants",
        &key,
        &json!({"payload": {}, "otp": {"channel": "email", "address": "x@y.org"}}),
    )
    .problem(400, "invalid_request");
    s.post(
        "/v1/grants",
        &key,
        &json!({"payload": {}, "supersedes": "not-a-uuid"}),
    )
    .problem(400, "invalid_request");

    // 64 KiB payload: one byte over is 413; the body cap is 413 too.
    let over = "a".repeat(64 * 1024 - 7);
    s.post("/v1/grants", &key, &json!({"payload": {"x": over}}))
        .problem(413, "payload_too_large");
    let huge = format!(r#"{{"payload": {{"x": "{}"}}}}"#, "a".repeat(300 * 1024));
    raw(&huge, "application/json").problem(413, "payload_too_large");
    let fits = "a".repeat(64 * 1024 - 8);
    assert_eq!(
        s.post("/v1/grants", &key, &json!({"payload": {"x": fits}}))
            .status,
        201
    );

    assert_eq!(
        count_grants(s, &key),
        2,
        "only the two valid requests stored grants"
    );
}

fn api_keys_and_scopes_are_enforced(s: &TestServer) {
    let (tenant, key) = s.tenant("acme");
    let created = s.create(&key, &json!({"payload": {}}));
    let path = format!("/v1/grants/{}", created["id"].as_str().unwrap());

    let none = s.request("GET", &path, &[], None);
    none.problem(401, "unauthenticated");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    s.get(&path, "llk_wrong").problem(401, "unauthenticated");
    s.get(&path, &format!("{key}x"))
        .problem(401, "unauthenticated");
    s.request(
        "GET",
        &path,
        &[("authorization", &format!("Basic {key}"))],
        None,
    )
    .problem(401, "unauthenticated");
    s.get(&path, &"llk_".repeat(100))
        .problem(401, "unauthenticated");

    let reader = s.key(tenant, &[Scope::GrantsRead]);
    assert_eq!(s.get(&path, &reader).status, 200);
    s.post("/v1/grants", &reader, &json!({"payload": {}}))
        .problem(403, "forbidden");
    s.post(&format!("{path}/revoke"), &reader, &json!({"reason": "x"}))
        .problem(403, "forbidden");
    let writer = s.key(tenant, &[Scope::GrantsWrite]);
    s.get(&path, &writer).problem(403, "forbidden");
    s.get("/v1/grants", &writer).problem(403, "forbidden");
    let auditor = s.key(tenant, &[Scope::AuditRead]);
    s.post(
        "/v1/grants/batch",
        &auditor,
        &json!({"grants": [{"payload": {}}]}),
    )
    .problem(403, "forbidden");

    // A revoked key stops working at once.
    let (id, doomed) = s.key_with_id(tenant, &[Scope::GrantsRead]);
    assert_eq!(s.get(&path, &doomed).status, 200);
    s.store
        .write(|c| linklease_store::api_keys::revoke(c, id, s.now()))
        .unwrap();
    s.get(&path, &doomed).problem(401, "unauthenticated");
}

fn tenants_are_isolated_route_by_route(s: &TestServer) {
    let (_, a) = s.tenant("acme");
    let (_, b) = s.tenant("other");
    let created = s.create(&a, &json!({"payload": {}, "labels": {"case_id": "c-1"}}));
    let id = created["id"].as_str().unwrap();

    // Reading, revoking and superseding A's grant with B's key: 404, exactly like a missing id.
    let missing = s
        .get("/v1/grants/01939d7e-0000-7000-8000-000000000000", &b)
        .problem(404, "not_found");
    let foreign = s
        .get(&format!("/v1/grants/{id}"), &b)
        .problem(404, "not_found");
    assert_eq!(
        missing, foreign,
        "another tenant's grant is indistinguishable from none"
    );
    s.get("/v1/grants/not-a-uuid", &b).problem(404, "not_found");
    s.post(
        &format!("/v1/grants/{id}/revoke"),
        &b,
        &json!({"reason": "mine now"}),
    )
    .problem(404, "not_found");
    s.post("/v1/grants", &b, &json!({"payload": {}, "supersedes": id}))
        .problem(404, "not_found");
    s.post(
        "/v1/grants/batch",
        &b,
        &json!({"grants": [{"payload": {}, "supersedes": id}]}),
    )
    .problem(404, "not_found");
    let listed = s.get("/v1/grants?label.case_id=c-1", &b).json();
    assert_eq!(listed["grants"], json!([]));
    assert_eq!(count_grants(s, &b), 0, "B's failed attempts stored nothing");

    // A's grant is untouched.
    let v = s.get(&format!("/v1/grants/{id}"), &a).json();
    assert_eq!(v["status"], "active");
    assert_eq!(v["superseded_by"], Value::Null);
}

fn revoke_records_the_first_reason(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let created = s.create(&key, &json!({"payload": {}}));
    let path = format!("/v1/grants/{}/revoke", created["id"].as_str().unwrap());
    s.post(&path, &key, &json!({}))
        .problem(400, "invalid_request");
    s.post(&path, &key, &json!({"reason": ""}))
        .problem(400, "invalid_request");
    s.post(&path, &key, &json!({"reason": "x".repeat(201)}))
        .problem(400, "invalid_request");
    s.post(&path, &key, &json!({"reason": "a\u{7}b"}))
        .problem(400, "invalid_request");
    let first = s.post(&path, &key, &json!({"reason": "wrong patient"}));
    assert_eq!(first.status, 200, "{}", first.text);
    let v = first.json();
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revoke_reason"], "wrong patient");
    s.advance(Duration::minutes(1));
    let second = s.post(&path, &key, &json!({"reason": "again"})).json();
    assert_eq!(second["revoke_reason"], "wrong patient");
    assert_eq!(second["revoked_at"], v["revoked_at"]);
    s.post(
        "/v1/grants/01939d7e-0000-7000-8000-000000000000/revoke",
        &key,
        &json!({"reason": "x"}),
    )
    .problem(404, "not_found");
}

fn supersedes_revokes_the_old_version(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let v1 = s.create(&key, &json!({"payload": {"v": 1}}));
    let v1_id = v1["id"].as_str().unwrap();
    let v2 = s.create(&key, &json!({"payload": {"v": 2}, "supersedes": v1_id}));
    let old = s.get(&format!("/v1/grants/{v1_id}"), &key).json();
    assert_eq!(old["status"], "revoked");
    assert_eq!(old["revoke_reason"], "superseded");
    assert_eq!(old["superseded_by"], v2["id"]);
    let new = s
        .get(&format!("/v1/grants/{}", v2["id"].as_str().unwrap()), &key)
        .json();
    assert_eq!(new["supersedes"], v1_id);
    // The old version cannot be superseded twice; nothing is created by the attempt.
    let doc = s
        .post(
            "/v1/grants",
            &key,
            &json!({"payload": {"v": 3}, "supersedes": v1_id}),
        )
        .problem(410, "grant_revoked");
    assert!(doc["detail"].as_str().unwrap().contains("supersedes"));
    // An expired grant cannot be superseded either.
    let short = s.create(
        &key,
        &json!({"payload": {}, "expires_at": "2026-11-23T13:00:00Z"}),
    );
    s.advance(Duration::hours(2));
    s.post(
        "/v1/grants",
        &key,
        &json!({"payload": {}, "supersedes": short["id"]}),
    )
    .problem(410, "grant_expired");
    assert_eq!(count_grants(s, &key), 3);
}

fn batch_is_all_or_nothing(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let three = json!({"grants": [{"payload": {"n": 1}}, {"payload": {"n": 2}, "labels": {"k": "v"}}, {"payload": {"n": 3}}]});
    let reply = s.post("/v1/grants/batch", &key, &three);
    assert_eq!(reply.status, 201, "{}", reply.text);
    let grants = reply.json()["grants"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 3);
    let tokens: std::collections::BTreeSet<_> = grants
        .iter()
        .map(|g| g["token"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(
        grants
            .iter()
            .all(|g| g["link"].as_str().unwrap().starts_with(PUBLIC_URL))
    );
    assert_eq!(count_grants(s, &key), 3);

    let one_bad = json!({"grants": [{"payload": {}}, {"payload": {}, "max_uses": 0}, {"payload": {}, "factor": {"kind": "pin"}}]});
    let doc = s
        .post("/v1/grants/batch", &key, &one_bad)
        .problem(400, "invalid_request");
    let fields: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["grants[1].max_uses", "grants[2].factor.value"]);
    s.post("/v1/grants/batch", &key, &json!({"grants": []}))
        .problem(400, "invalid_request");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"payload": {}})).collect();
    s.post("/v1/grants/batch", &key, &json!({"grants": too_many}))
        .problem(400, "invalid_request");
    s.post("/v1/grants/batch", &key, &json!({"grant": []}))
        .problem(400, "invalid_request");
    let big = "a".repeat(64 * 1024);
    s.post(
        "/v1/grants/batch",
        &key,
        &json!({"grants": [{"payload": {}}, {"payload": {"x": big}}]}),
    )
    .problem(400, "invalid_request");
    // Two grants superseding the same one: the second fails, and the whole batch with it.
    let target = grants[0]["id"].as_str().unwrap();
    let twice = json!({"grants": [{"payload": {}, "supersedes": target}, {"payload": {}, "supersedes": target}]});
    s.post("/v1/grants/batch", &key, &twice)
        .problem(410, "grant_revoked");
    assert_eq!(
        s.get(&format!("/v1/grants/{target}"), &key).json()["status"],
        "active",
        "rolled back"
    );
    assert_eq!(count_grants(s, &key), 3, "failed batches stored nothing");

    // The full 1000 are accepted in one call.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"payload": {"i": i}, "labels": {"batch": "big"}}))
        .collect();
    let reply = s.post("/v1/grants/batch", &key, &json!({"grants": thousand}));
    assert_eq!(
        reply.status,
        201,
        "{}",
        &reply.text[..reply.text.len().min(500)]
    );
    assert_eq!(reply.json()["grants"].as_array().unwrap().len(), 1000);
}

fn pick(ids: &[String], which: &[usize]) -> Vec<String> {
    which.iter().map(|&i| ids[i].clone()).collect()
}

fn listing_filters_and_pages(s: &TestServer) {
    let (_, key) = s.tenant("acme");
    let mut ids = Vec::new();
    for i in 0..5 {
        let expires = if i == 4 {
            "2026-11-23T12:30:00Z"
        } else {
            "2026-12-20T00:00:00Z"
        };
        let case = if i % 2 == 0 { "even" } else { "odd" };
        let g = s.create(
            &key,
            &json!({"payload": {"i": i}, "labels": {"parity": case}, "expires_at": expires}),
        );
        ids.push(g["id"].as_str().unwrap().to_owned());
        s.advance(Duration::milliseconds(2));
    }
    s.post(
        &format!("/v1/grants/{}/revoke", ids[1]),
        &key,
        &json!({"reason": "x"}),
    );
    s.advance(Duration::hours(1));

    let list = |query: &str| -> Vec<String> {
        let reply = s.get(&format!("/v1/grants?{query}"), &key);
        assert_eq!(reply.status, 200, "{query}: {}", reply.text);
        reply.json()["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list(""), pick(&ids, &[4, 3, 2, 1, 0]), "newest first");
    assert_eq!(list("status=active"), pick(&ids, &[3, 2, 0]));
    assert_eq!(list("status=revoked"), pick(&ids, &[1]));
    assert_eq!(list("status=expired"), pick(&ids, &[4]));
    assert!(list("status=used").is_empty());
    assert_eq!(list("label.parity=even"), pick(&ids, &[4, 2, 0]));
    assert_eq!(list("label.parity=even&status=active"), pick(&ids, &[2, 0]));
    assert!(list("label.parity=none").is_empty());
    assert!(list("label.parity=even&label.other=x").is_empty());

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = s.get(&format!("/v1/grants?{query}"), &key).json();
        seen.extend(
            page["grants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(seen, want, "pages walk everything once");

    for bad in [
        "status=gone",
        "limit=0",
        "limit=1000",
        "cursor=zzz",
        "colour=red",
        "label.=x",
    ] {
        s.get(&format!("/v1/grants?{bad}"), &key)
            .problem(400, "invalid_request");
    }
}

http_tests!(
    create_returns_the_link_once_and_reads_never_show_secrets,
    defaults_apply,
    bad_input_gets_its_code_and_stores_nothing,
    api_keys_and_scopes_are_enforced,
    tenants_are_isolated_route_by_route,
    revoke_records_the_first_reason,
    supersedes_revokes_the_old_version,
    batch_is_all_or_nothing,
    listing_filters_and_pages,
);
