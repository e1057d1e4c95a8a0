//! The auditor API: a grant's history, the tenant's event log, signed exports and the public
//! keys that verify them; tenant isolation, scopes and secrets kept out of every record.

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

use crate::exchange::{lab_result, lease_for};
use crate::harness::{START, TestServer};
use crate::http_tests;
use linklease_audit::PublicKey;
use linklease_store::api_keys::Scope;

http_tests!(
    grant_history_is_ordered_and_chained,
    events_page_by_cursor,
    export_verifies_offline_and_tampering_fails,
    tenants_see_only_their_own_audit,
    audit_routes_need_a_key_with_audit_read,
    audit_queries_are_strict,
    no_secret_in_any_audit_record,
);

const ROUTES: [&str; 3] = [
    "/v1/audit/events",
    "/v1/audit/export",
    "/v1/audit/public-key",
];

/// What one rich use of a grant leaves behind.
struct Used {
    tenant: linklease_grant::TenantId,
    key: String,
    grant_id: String,
    /// Secrets that must never reach an audit record.
    secrets: Vec<String>,
    code: String,
}

/// A grant visited, with one wrong factor, exchanged, read and written to its last use.
fn use_a_grant(s: &TestServer, name: &str) -> Used {
    let (tenant, key) = s.tenant(name);
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap().to_owned();
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    s.advance(time::Duration::minutes(1));
    s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": token, "factor": "1999-09-09"}),
    )
    .problem(401, "factor_mismatch");
    s.advance(time::Duration::minutes(1));
    let lease = lease_for(s, &client, &token, "1984-03-02");
    let code = s.last_code();
    let read = s.lease_call("GET", "/v1/lease", &lease, None);
    assert_eq!(read.status, 200, "{}", read.text);
    s.advance(time::Duration::minutes(1));
    let submitted = s.lease_call(
        "POST",
        "/v1/lease/submissions",
        &lease,
        Some(
            &json!({"fields": {"result_ack": true, "note": "seen"}, "creates": [{"name": "Ana"}]}),
        ),
    );
    assert_eq!(submitted.status, 201, "{}", submitted.text);
    let basic = client.strip_prefix("Basic ").unwrap();
    let pair = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .unwrap();
    let client_secret = String::from_utf8(pair)
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    Used {
        tenant,
        key: key.clone(),
        grant_id,
        secrets: vec![
            token,
            lease,
            client_secret,
            key,
            "1984-03-02".into(),
            "19840302".into(),
        ],
        code,
    }
}

fn history(s: &TestServer, key: &str, grant_id: &str) -> Vec<Value> {
    let reply = s.get(&format!("/v1/grants/{grant_id}/history"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["events"].as_array().unwrap().clone()
}

/// Every event of the key's tenant, paging with `limit`; asserts the page shapes.
fn all_events(s: &TestServer, key: &str, limit: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut path = format!("/v1/audit/events?limit={limit}");
    loop {
        let reply = s.get(&path, key);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let page = reply.json();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        out.extend(events.iter().cloned());
        match page.get("next_cursor") {
            Some(cursor) => {
                assert_eq!(events.len(), limit, "only a full page has a next page");
                path = format!(
                    "/v1/audit/events?limit={limit}&cursor={}",
                    cursor.as_str().unwrap()
                );
            }
            None => return out,
        }
    }
}

fn public_keys(s: &TestServer, key: &str) -> Vec<PublicKey> {
    let reply = s.get("/v1/audit/public-key", key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    serde_json::from_value(reply.json()["keys"].clone()).unwrap()
}

fn export(s: &TestServer, key: &str, query: &str) -> String {
    let reply = s.get(&format!("/v1/audit/export{query}"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let disposition = reply.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"linklease-audit-")
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    reply.text
}

/// The bundle's event lines (between the header and the signature line).
fn bundle_events(bundle: &str) -> Vec<Value> {
    let lines: Vec<&str> = bundle.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn grant_history_is_ordered_and_chained(s: &TestServer) {
    let used = use_a_grant(s, "clinic");
    let events = history(s, &used.key, &used.grant_id);
    let kinds = kinds(&events);
    assert_eq!(kinds[0], "grant.created", "{kinds:?}");
    // The story in order (other events may sit between these).
    let story = [
        "grant.created",
        "link.visited",
        "factor.failed",
        "factor.passed",
        "otp.sent",
        "otp.passed",
        "lease.issued",
        "payload.read",
        "submission.accepted",
    ];
    let mut at = 0;
    for kind in story {
        let found = kinds[at..]
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("{kind} missing or out of order in {kinds:?}"));
        at += found + 1;
    }
    for kind in ["grant.used", "lease.ended"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    // Every event of the grant or its leases, and only those; oldest first; well formed.
    let mut leases = BTreeSet::new();
    for e in &events {
        assert_eq!(e["grant_id"], used.grant_id.as_str());
        assert!(e["detail"].is_object(), "{e}");
        assert!(e["actor"]["kind"].is_string(), "{e}");
        let at = e["at"].as_str().unwrap();
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
        if let Some(lease) = e["lease_id"].as_str() {
            leases.insert(lease.to_owned());
        }
        for hash in [&e["prev_hash"], &e["hash"]] {
            let hash = hash.as_str().unwrap();
            assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    assert_eq!(leases.len(), 1, "one lease was issued");
    assert_eq!(events[0]["actor"]["kind"], "apikey");
    let issued = &events[kinds.iter().position(|k| *k == "lease.issued").unwrap()];
    assert_eq!(issued["actor"]["kind"], "client");
    assert!(issued["actor"]["ip"].is_string());
    for pair in events.windows(2) {
        assert!(pair[0]["seq"].as_i64() < pair[1]["seq"].as_i64());
        assert!(pair[0]["chain_seq"].as_i64() < pair[1]["chain_seq"].as_i64());
    }
    assert_eq!(events[0]["at"], "2026-11-23T12:00:00Z");
    assert!(events.last().unwrap()["at"].as_str().unwrap() > events[0]["at"].as_str().unwrap());

    // Each event links to its predecessor in the tenant's chain, which starts at genesis.
    let log = all_events(s, &used.key, 500);
    let by_position: HashMap<i64, &Value> = log
        .iter()
        .map(|e| (e["chain_seq"].as_i64().unwrap(), e))
        .collect();
    assert_eq!(by_position.len(), log.len());
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["chain_seq"].as_i64(), Some(i as i64 + 1), "no gaps: {e}");
    }
    assert_eq!(log[0]["prev_hash"], "0".repeat(64));
    for e in &events {
        let position = e["chain_seq"].as_i64().unwrap();
        assert_eq!(*by_position[&position], *e, "history and log agree");
        assert_eq!(
            e["prev_hash"],
            by_position[&(position - 1)]["hash"],
            "event {} links to its predecessor",
            e["seq"]
        );
    }

    // A grant that does not exist, or an id that is not one: 404.
    let missing = "0193a5b0-0000-7000-8000-000000000000";
    s.get(&format!("/v1/grants/{missing}/history"), &used.key)
        .problem(404, "not_found");
    s.get("/v1/grants/nope/history", &used.key)
        .problem(404, "not_found");
}

fn events_page_by_cursor(s: &TestServer) {
    let used = use_a_grant(s, "clinic");
    let whole = s.get("/v1/audit/events", &used.key);
    assert_eq!(whole.status, 200, "{}", whole.text);
    let whole = whole.json();
    assert!(
        whole.get("next_cursor").is_none(),
        "one page holds them all"
    );
    let whole = whole["events"].as_array().unwrap().clone();
    assert!(whole.len() > 10, "{}", whole.len());

    let paged = all_events(s, &used.key, 2);
    assert_eq!(paged, whole, "paging by 2 sees every event once, in order");
    let seqs: Vec<i64> = paged.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // A page size that divides the log exactly ends without a cursor all the same.
    let exact = all_events(s, &used.key, whole.len());
    assert_eq!(exact, whole);
    let first = s.get("/v1/audit/events?limit=1", &used.key).json();
    assert_eq!(first["events"].as_array().unwrap().len(), 1);
    assert!(first["next_cursor"].is_string());
    // Events written after a page was read appear on the next page.
    let last_page = s
        .get(
            &format!("/v1/audit/events?limit={}", whole.len()),
            &used.key,
        )
        .json();
    assert!(last_page.get("next_cursor").is_none());
    s.create(&used.key, &json!({"payload": {"x": 1}}));
    let more = all_events(s, &used.key, 3);
    assert_eq!(more.len(), whole.len() + 1);
    assert_eq!(more.last().unwrap()["kind"], "grant.created");
}

fn export_verifies_offline_and_tampering_fails(s: &TestServer) {
    let used = use_a_grant(s, "clinic");
    let keys = public_keys(s, &used.key);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].algorithm, "Ed25519");
    assert!(keys[0].bytes().is_some(), "the kid matches the key");
    assert_eq!(public_keys(s, &used.key), keys, "the key is made once");

    let bundle = export(s, &used.key, "");
    let verified = linklease_audit::bundle::verify(bundle.as_bytes(), &keys).unwrap();
    assert_eq!(
        verified.header.tenant.as_deref(),
        Some(used.tenant.to_string().as_str())
    );
    assert_eq!(verified.kid, keys[0].kid);
    let events = bundle_events(&bundle);
    assert_eq!(verified.header.count as usize, events.len());
    let log = all_events(s, &used.key, 500);
    assert_eq!(events.len(), log.len(), "the bundle holds the whole log");
    for (b, l) in events.iter().zip(&log) {
        assert_eq!(b["seq"], l["seq"]);
        assert_eq!(b["hash"], l["hash"]);
        assert_eq!(b["tenant"], used.tenant.to_string());
    }
    let history = history(s, &used.key, &used.grant_id);
    for h in &history {
        assert!(
            events.iter().any(|e| e["hash"] == h["hash"]),
            "{h} is in the bundle"
        );
    }

    // Any one flipped byte, anywhere, makes it fail.
    let bytes = bundle.as_bytes();
    let signature_line = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let step = (bytes.len() / 500).max(1);
    let positions = (0..bytes.len())
        .step_by(step)
        .chain(signature_line.saturating_sub(40)..bytes.len());
    for i in positions {
        let mut tampered = bytes.to_vec();
        tampered[i] ^= 0x01;
        assert!(
            linklease_audit::bundle::verify(&tampered, &keys).is_err(),
            "byte {i} flipped still verifies"
        );
    }
    // Without the key, or with a stranger's, it does not verify either.
    assert!(linklease_audit::bundle::verify(bytes, &[]).is_err());

    // A window: only the events in it, still verifiable (it starts mid-chain).
    let from = START + time::Duration::seconds(90);
    let from = from
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let window = export(s, &used.key, &format!("?from={from}"));
    let verified = linklease_audit::bundle::verify(window.as_bytes(), &keys).unwrap();
    assert_eq!(verified.header.from.as_deref(), Some(from.as_str()));
    let inside = bundle_events(&window);
    assert!(!inside.is_empty() && inside.len() < events.len());
    assert!(!kinds(&inside).contains(&"grant.created"));
    assert!(kinds(&inside).contains(&"submission.accepted"));
    // With an offset, percent-encoded, and an end.
    let window = export(
        s,
        &used.key,
        "?from=2026-11-23T13:00:00%2B01:00&to=2026-11-23T12:01:30Z",
    );
    let verified = linklease_audit::bundle::verify(window.as_bytes(), &keys).unwrap();
    assert_eq!(
        verified.header.from.as_deref(),
        Some("2026-11-23T12:00:00Z")
    );
    assert_eq!(verified.header.to.as_deref(), Some("2026-11-23T12:01:30Z"));
    let early = bundle_events(&window);
    assert!(kinds(&early).contains(&"grant.created"));
    assert!(!kinds(&early).contains(&"submission.accepted"));
    // An empty window is a valid, empty bundle.
    let empty = export(s, &used.key, "?to=2020-01-01T00:00:00Z");
    let verified = linklease_audit::bundle::verify(empty.as_bytes(), &keys).unwrap();
    assert_eq!(verified.header.count, 0);
}

fn tenants_see_only_their_own_audit(s: &TestServer) {
    let a = use_a_grant(s, "clinic-a");
    let (b_tenant, b_all) = s.tenant("clinic-b");
    let b = s.key(b_tenant, &[Scope::AuditRead]);
    let b_grant = s.create(&b_all, &json!({"payload": {"b": true}}));
    let b_grant = b_grant["id"].as_str().unwrap();

    s.get(&format!("/v1/grants/{}/history", a.grant_id), &b)
        .problem(404, "not_found");
    s.get(&format!("/v1/grants/{b_grant}/history"), &a.key)
        .problem(404, "not_found");
    assert_eq!(
        kinds(&history(s, &b, b_grant)),
        ["grant.created"],
        "B sees its own grant"
    );

    let a_log = all_events(s, &a.key, 500);
    let b_log = all_events(s, &b, 500);
    assert!(!b_log.is_empty());
    let a_seqs: BTreeSet<i64> = a_log.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    for e in &b_log {
        assert!(!a_seqs.contains(&e["seq"].as_i64().unwrap()), "{e}");
        assert_ne!(e["grant_id"], a.grant_id.as_str());
    }
    let b_text = serde_json::to_string(&b_log).unwrap();
    assert!(!b_text.contains(&a.grant_id) && !b_text.contains(&a.tenant.to_string()));
    // Each tenant's chain starts at 1 on its own.
    assert_eq!(b_log[0]["chain_seq"], 1);

    let keys = public_keys(s, &b);
    let bundle = export(s, &b, "");
    let verified = linklease_audit::bundle::verify(bundle.as_bytes(), &keys).unwrap();
    assert_eq!(
        verified.header.tenant.as_deref(),
        Some(b_tenant.to_string().as_str())
    );
    assert!(!bundle.contains(&a.grant_id), "no event of A");
    assert!(!bundle.contains(&a.tenant.to_string()), "no trace of A");
    let events = bundle_events(&bundle);
    assert_eq!(events.len(), b_log.len());
    assert!(events.iter().all(|e| e["tenant"] == b_tenant.to_string()));
}

fn audit_routes_need_a_key_with_audit_read(s: &TestServer) {
    let used = use_a_grant(s, "clinic");
    let history = format!("/v1/grants/{}/history", used.grant_id);
    let everything_else: Vec<Scope> = Scope::ALL
        .iter()
        .copied()
        .filter(|s| *s != Scope::AuditRead)
        .collect();
    let without = s.key(used.tenant, &everything_else);
    let only = s.key(used.tenant, &[Scope::AuditRead]);
    for path in ROUTES.iter().copied().chain([history.as_str()]) {
        s.get(path, &without).problem(403, "forbidden");
        let anonymous = s.request("GET", path, &[], None);
        anonymous.problem(401, "unauthenticated");
        assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
        s.get(path, "llk_not-a-real-key")
            .problem(401, "unauthenticated");
        let ok = s.get(path, &only);
        assert_eq!(ok.status, 200, "{path}: {}", ok.text);
        assert_eq!(ok.header("cache-control"), Some("no-store"));
    }
    // Only GET.
    for path in ROUTES {
        s.post(path, &only, &json!({}))
            .problem(405, "method_not_allowed");
    }
}

fn audit_queries_are_strict(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    for query in [
        "limit=0",
        "limit=501",
        "limit=ten",
        "limit=",
        "cursor=!!!",
        "cursor=",
        "cursor=bm90LWEtbnVtYmVy",
        "page=2",
        "limit=2&limit=3",
        "tenant=x",
    ] {
        s.get(&format!("/v1/audit/events?{query}"), &key)
            .problem(400, "invalid_request");
    }
    assert_eq!(s.get("/v1/audit/events?limit=500", &key).status, 200);
    for query in [
        "from=yesterday",
        "from=2026-11-23",
        "to=2026-11-23T12:00:00",
        "from=2026-11-23T12:00:00Z&to=2026-11-23T12:00:00Z",
        "from=2026-11-23T12:00:00Z&to=2026-11-23T11:00:00Z",
        "since=2026-11-23T12:00:00Z",
        "from=2026-11-23T12:00:00Z&from=2026-11-23T12:00:00Z",
    ] {
        s.get(&format!("/v1/audit/export?{query}"), &key)
            .problem(400, "invalid_request");
    }
    let g = s.create(&key, &json!({"payload": {}}));
    let id = g["id"].as_str().unwrap();
    s.get(&format!("/v1/grants/{id}/history?cursor=x"), &key)
        .problem(400, "invalid_request");
    s.get("/v1/audit/public-key?kid=x", &key)
        .problem(400, "invalid_request");
}

/// Whether `text` holds `code` as a whole run of digits (hex hashes hold digits by chance).
fn holds_code(text: &str, code: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.contains(code) && run.len() < 12)
        || text.contains(&format!("\"{code}\""))
}

fn no_secret_in_any_audit_record(s: &TestServer) {
    let used = use_a_grant(s, "clinic");
    let history = history(s, &used.key, &used.grant_id);
    let log = all_events(s, &used.key, 500);
    let bundle = export(s, &used.key, "");
    let details: Vec<String> = history
        .iter()
        .chain(&log)
        .map(|e| e["detail"].to_string())
        .collect();
    for secret in &used.secrets {
        for text in details.iter().chain([&bundle]) {
            assert!(!text.contains(secret.as_str()), "{secret} in {text}");
        }
        assert!(
            !serde_json::to_string(&log)
                .unwrap()
                .contains(secret.as_str())
        );
    }
    for text in details.iter().chain([&bundle]) {
        assert!(!holds_code(text, &used.code), "the code in {text}");
    }
    // Sanity of the check itself.
    assert!(holds_code(
        &format!("{{\"otp\":\"{}\"}}", used.code),
        &used.code
    ));
}
