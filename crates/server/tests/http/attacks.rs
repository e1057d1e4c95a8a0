//! Attacks on the exchange and the lease API: each gets its spec code and stores nothing.
//!
//! Every test runs on SQLite and PostgreSQL. Each one covers a theme: forged lease tokens,
//! factor and code brute force, the OTP rules, flows and links that stay with their client,
//! submission checks, inactive grants and refresh, per-address rate limits, and secrets that
//! never reach the log or the audit trail.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use linklease_grant::{ClientId, GrantId, LeaseId, Purpose, SecretKeys};
use linklease_lease::SigningKey;
use linklease_lease::token::{self, LeaseClaims, Scope};
use linklease_store::audit;

use crate::exchange::{lab_result, lease_for};
use crate::harness::{MASTER, Reply, TestServer, logs};
use crate::http_tests;

http_tests!(
    forged_and_foreign_lease_tokens_are_lease_invalid,
    failed_factors_and_codes_lock_the_grant,
    concurrent_guesses_do_not_outrun_the_lockout,
    codes_expire_resend_slowly_and_work_once,
    flows_and_links_stay_with_their_client_and_tenant,
    submissions_are_checked_and_refusals_store_nothing,
    inactive_grants_stop_leases_at_once_and_refresh_is_capped,
    secrets_stay_out_of_the_log_and_the_audit_trail,
);

// ---------------------------------------------------------------------------------------------
// Helpers.

const DOB: &str = "1984-03-02";
const WRONG_DOB: &str = "1984-03-03";
/// Marks grant B's payload: it must never reach a holder of a lease on grant A.
const B_MARKER: &str = "B-ONLY-PAYLOAD-7f3e";

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT's header, claims and signature segment.
fn jwt_parts(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let decode =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    (decode(parts[0]), decode(parts[1]), parts[2].to_owned())
}

/// A JWT with any header and claims, signed with the Ed25519 key in `pkcs8`.
fn ed25519_jwt(header: &Value, claims: &Value, pkcs8: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The server's lease-signing keys (they live in the database, sealed under the master secret).
fn server_keys(s: &TestServer) -> Vec<SigningKey> {
    s.store
        .read(|c| linklease_store::signing_keys::load(c, &SecretKeys::from_master(&MASTER)))
        .unwrap()
}

/// Starts a partner exchange.
fn exchange(s: &TestServer, client: &str, token: &str, factor: Option<&str>) -> Reply {
    let mut body = json!({"token": token});
    if let Some(factor) = factor {
        body["factor"] = json!(factor);
    }
    s.post_as("/v1/exchange", client, &body)
}

/// The flow of a started exchange.
#[track_caller]
fn flow_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.text);
    let doc = reply.json();
    assert_eq!(doc["next"], "otp", "{doc}");
    doc["flow_id"].as_str().unwrap().to_owned()
}

fn otp(s: &TestServer, client: &str, flow: &str, code: &str) -> Reply {
    s.post_as(
        &format!("/v1/exchange/{flow}/otp"),
        client,
        &json!({"code": code}),
    )
}

fn resend(s: &TestServer, client: &str, flow: &str) -> Reply {
    s.post_as(&format!("/v1/exchange/{flow}/resend"), client, &json!({}))
}

/// A six-digit code that is not `code`.
fn not_the(code: &str, by: u32) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + by) % 1_000_000)
}

/// The `Retry-After` of a reply, in seconds.
#[track_caller]
fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {}", reply.status, reply.text))
        .parse()
        .unwrap()
}

fn grant_view(s: &TestServer, key: &str, grant: &str) -> Value {
    let reply = s.get(&format!("/v1/grants/{grant}"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// The submissions stored for `grant`, as its originator lists them.
fn stored(s: &TestServer, key: &str, grant: &str) -> Vec<Value> {
    let reply = s.get(&format!("/v1/grants/{grant}/submissions"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["submissions"].as_array().unwrap().clone()
}

/// Asserts `grant` has `submissions` stored and `uses` taken.
#[track_caller]
fn assert_stored(s: &TestServer, key: &str, grant: &str, submissions: usize, uses: u64) {
    assert_eq!(
        stored(s, key, grant).len(),
        submissions,
        "submissions of {grant}"
    );
    assert_eq!(grant_view(s, key, grant)["uses"], uses, "uses of {grant}");
}

fn events(s: &TestServer, grant: &str) -> Vec<audit::Event> {
    let id: GrantId = grant.parse().unwrap();
    s.store.read(|c| audit::for_grant(c, id)).unwrap()
}

fn count(s: &TestServer, grant: &str, kind: &str) -> usize {
    events(s, grant).iter().filter(|e| e.kind == kind).count()
}

/// The client id and secret inside a Basic credential.
fn credentials(basic: &str) -> (String, String) {
    let decoded = STANDARD
        .decode(basic.strip_prefix("Basic ").unwrap())
        .unwrap();
    let pair = String::from_utf8(decoded).unwrap();
    let (id, secret) = pair.split_once(':').unwrap();
    (id.to_owned(), secret.to_owned())
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn revoke_client(s: &TestServer, basic: &str) {
    let id: ClientId = credentials(basic).0.parse().unwrap();
    s.store
        .write(|c| linklease_store::clients::revoke(c, id, "test", s.now()))
        .unwrap();
}

/// The CSRF token the server binds to a lease (a keyed hash of its id).
fn csrf_for(lease: LeaseId) -> String {
    URL_SAFE_NO_PAD.encode(
        SecretKeys::from_master(&MASTER)
            .hash(Purpose::Csrf, &[b"lease", lease.0.as_bytes()])
            .0,
    )
}

/// A submission with a Bearer lease.
fn submit(s: &TestServer, lease: &str, body: &Value) -> Reply {
    s.lease_call("POST", "/v1/lease/submissions", lease, Some(body))
}

/// A submission whose body is sent exactly as given.
fn submit_raw(s: &TestServer, lease: &str, content_type: &str, body: &[u8]) -> Reply {
    let auth = format!("Bearer {lease}");
    s.request(
        "POST",
        "/v1/lease/submissions",
        &[("authorization", &auth), ("content-type", content_type)],
        Some(body),
    )
}

/// Every lease route refuses `token` with `401 lease_invalid`, and nothing leaks grant B.
#[track_caller]
fn refused_everywhere(s: &TestServer, token: &str, what: &str) {
    let body = json!({"fields": {"result_ack": true}, "idempotency_key": "forged"});
    for (method, path, body) in [
        ("GET", "/v1/lease", None),
        ("POST", "/v1/lease/submissions", Some(&body)),
        ("POST", "/v1/lease/complete", None),
        ("POST", "/v1/lease/refresh", None),
        ("DELETE", "/v1/lease", None),
    ] {
        let reply = s.lease_call(method, path, token, body);
        assert_eq!(
            reply.status, 401,
            "{what}: {method} {path} answered {}",
            reply.text
        );
        reply.problem(401, "lease_invalid");
        assert!(!reply.text.contains(B_MARKER), "{what}: {}", reply.text);
        assert!(!reply.text.contains("P-1042"), "{what}: {}", reply.text);
    }
    // The lease is judged before the body: a malformed submission is refused for the lease.
    let bad = json!({"fields": "not an object"});
    s.lease_call("POST", "/v1/lease/submissions", token, Some(&bad))
        .problem(401, "lease_invalid");
}

/// Whether `needle` occurs in `hay` not inside a longer run of letters and digits (short
/// numeric secrets would otherwise match inside timestamps and ids by chance).
fn contains_bounded(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Forged lease tokens.

fn forged_and_foreign_lease_tokens_are_lease_invalid(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let a = s.create(&key, &lab_result());
    let a_id = a["id"].as_str().unwrap().to_owned();
    let mut b_body = lab_result();
    b_body["payload"] = json!({"patient_id": "P-2000", "secret": B_MARKER});
    let b = s.create(&key, &b_body);
    let b_id = b["id"].as_str().unwrap().to_owned();
    let lease = lease_for(s, &client, a["token"].as_str().unwrap(), DOB);

    // The genuine lease reaches its own grant, and only that.
    let read = s.lease_call("GET", "/v1/lease", &lease, None);
    assert_eq!(read.status, 200, "{}", read.text);
    let read = read.json();
    assert_eq!(read["grant_id"], a_id);
    assert_eq!(read["payload"]["patient_id"], "P-1042");
    assert_eq!(read["expires_at"], rfc(s.now() + Duration::minutes(15)));

    let (header, claims, signature) = jwt_parts(&lease);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims["sub"], a_id);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let lease_id: LeaseId = claims["jti"].as_str().unwrap().parse().unwrap();
    let keys = server_keys(s);
    let real = keys.iter().find(|k| k.kid == kid).expect("the signing key");

    // Our own signer is right: the genuine claims re-signed with the server's key are accepted.
    let resigned = ed25519_jwt(&header, &claims, real.pkcs8());
    let ok = s.lease_call("GET", "/v1/lease", &resigned, None);
    assert_eq!(ok.status, 200, "{}", ok.text);

    let with_claims = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        c
    };
    let same_signature = |h: &Value, c: &Value| format!("{}.{}.{signature}", b64(h), b64(c));

    let other = SigningKey::generate(s.now(), &SystemRandom::new()).unwrap();
    let genuine_claims = LeaseClaims::new(
        a_id.parse().unwrap(),
        lease_id,
        s.now(),
        s.now() + Duration::minutes(15),
        vec![Scope::Read, Scope::Write],
    );
    let mut forged: Vec<(&str, String)> = vec![
        // Changed claims, re-encoded, the old signature kept.
        (
            "sub changed to grant B",
            same_signature(&header, &with_claims(&|c| c["sub"] = json!(b_id))),
        ),
        (
            "exp extended",
            same_signature(
                &header,
                &with_claims(&|c| c["exp"] = json!(c["exp"].as_i64().unwrap() + 600)),
            ),
        ),
        (
            "jti changed",
            same_signature(
                &header,
                &with_claims(&|c| c["jti"] = json!("01939d7e-0000-7000-8000-000000000000")),
            ),
        ),
        (
            "scopes changed",
            same_signature(&header, &with_claims(&|c| c["scopes"] = json!(["read"]))),
        ),
        // Algorithm confusion.
        (
            "alg none, no signature",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims)
            ),
        ),
        (
            "alg none, old signature",
            same_signature(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &claims),
        ),
        ("HS256 keyed with the public key", {
            let h = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
            let input = format!("{}.{}", b64(&h), b64(&claims));
            let mac = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &real.public),
                input.as_bytes(),
            );
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
        }),
        (
            "HS256 header, old signature",
            same_signature(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), &claims),
        ),
        // Keys the server does not hold.
        (
            "unknown kid",
            same_signature(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": "no-such-key"}),
                &claims,
            ),
        ),
        (
            "no kid",
            same_signature(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims),
        ),
        (
            "another Ed25519 key",
            token::sign(&genuine_claims, &other)
                .unwrap()
                .expose()
                .to_owned(),
        ),
        (
            "another Ed25519 key under the server's kid",
            ed25519_jwt(&header, &claims, other.pkcs8()),
        ),
        (
            "another key embedded as jwk",
            ed25519_jwt(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": other.kid,
                    "jwk": {"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(other.public)}}),
                &claims,
                other.pkcs8(),
            ),
        ),
        // Validly signed by the server's own key, but naming what the lease is not.
        (
            "server key: lease of A presented for grant B",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["sub"] = json!(b_id)),
                real.pkcs8(),
            ),
        ),
        (
            "server key: unknown lease",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["jti"] = json!("01939d7e-0000-7000-8000-000000000000")),
                real.pkcs8(),
            ),
        ),
        (
            "server key: longer than any lease lives",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["exp"] = json!(c["iat"].as_i64().unwrap() + 7200)),
                real.pkcs8(),
            ),
        ),
        (
            "server key: wrong audience",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["aud"] = json!("other")),
                real.pkcs8(),
            ),
        ),
        (
            "server key: wrong issuer",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["iss"] = json!("other")),
                real.pkcs8(),
            ),
        ),
        (
            "server key: no exp",
            ed25519_jwt(
                &header,
                &with_claims(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                real.pkcs8(),
            ),
        ),
        (
            "server key: an extra claim",
            ed25519_jwt(
                &header,
                &with_claims(&|c| c["admin"] = json!(true)),
                real.pkcs8(),
            ),
        ),
        // Damaged and junk values.
        ("signature cut short", lease[..lease.len() - 4].to_owned()),
        ("one more character", format!("{lease}A")),
        ("signature of zeros", {
            let (h, c) = lease.rsplit_once('.').unwrap().0.split_once('.').unwrap();
            format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]))
        }),
        ("garbage", "not-a-token".to_owned()),
        ("three dots", "a.b.c".to_owned()),
        ("empty", String::new()),
        ("10 KB", "A".repeat(10 * 1024)),
        (
            "10 KB shaped like a JWT",
            format!("{}.{}.{signature}", b64(&header), "A".repeat(10 * 1024)),
        ),
        ("an API key", key.clone()),
    ];
    forged.push(("the lease as a Basic credential", format!("x{lease}")));
    for (what, token) in &forged {
        refused_everywhere(s, token, what);
    }
    // Schemes other than Bearer, and no credential at all.
    for headers in [
        vec![("authorization", format!("Basic {lease}"))],
        vec![("authorization", format!("Token {lease}"))],
        vec![("authorization", "Bearer".to_owned())],
        vec![],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        s.request("GET", "/v1/lease", &headers, None)
            .problem(401, "lease_invalid");
    }

    // The browser's lease cookie needs the CSRF header bound to that lease.
    let cookie = format!("__Host-ll_lease={lease}");
    let good_csrf = csrf_for(lease_id);
    let other_csrf = csrf_for("01939d7e-0000-7000-8000-000000000000".parse().unwrap());
    for csrf in [None, Some("AAAA"), Some(other_csrf.as_str()), Some("")] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        s.request("GET", "/v1/lease", &headers, None)
            .problem(403, "forbidden");
        let mut post = headers.clone();
        post.push(("content-type", "application/json"));
        s.request(
            "POST",
            "/v1/lease/submissions",
            &post,
            Some(br#"{"fields": {"result_ack": true}}"#),
        )
        .problem(403, "forbidden");
        s.request("POST", "/v1/lease/complete", &headers, None)
            .problem(403, "forbidden");
        s.request("DELETE", "/v1/lease", &headers, None)
            .problem(403, "forbidden");
    }
    // A forged cookie is refused as a lease before its CSRF header is even looked at.
    s.request(
        "GET",
        "/v1/lease",
        &[("cookie", &format!("__Host-ll_lease={}", forged[0].1))],
        None,
    )
    .problem(401, "lease_invalid");
    // With the right header the cookie works (so the refusals above were about CSRF).
    let via_cookie = s.request(
        "GET",
        "/v1/lease",
        &[("cookie", &cookie), ("x-csrf-token", &good_csrf)],
        None,
    );
    assert_eq!(via_cookie.status, 200, "{}", via_cookie.text);

    // None of the refused requests ended, used or wrote through the lease.
    let still = s.lease_call("GET", "/v1/lease", &lease, None);
    assert_eq!(still.status, 200, "{}", still.text);
    assert_eq!(still.json()["grant_id"], a_id);
    assert_stored(s, &key, &a_id, 0, 0);
    assert_stored(s, &key, &b_id, 0, 0);
    assert_eq!(count(s, &a_id, "lease.issued"), 1);
    assert_eq!(count(s, &a_id, "payload.read"), 4, "only the genuine reads");
    for kind in [
        "lease.ended",
        "lease.refreshed",
        "grant.used",
        "submission.rejected",
    ] {
        assert_eq!(count(s, &a_id, kind), 0, "{kind}");
    }
    assert_eq!(
        events(s, &b_id)
            .iter()
            .map(|e| e.kind.as_str())
            .collect::<Vec<_>>(),
        ["grant.created"],
        "grant B was never touched"
    );

    // Expired: 15 minutes after issue the token is refused, and so is a token the server's own
    // key signed with a later `exp`: the stored lease decides.
    let longer = ed25519_jwt(
        &header,
        &with_claims(&|c| c["exp"] = json!(c["iat"].as_i64().unwrap() + 3600)),
        real.pkcs8(),
    );
    s.advance(Duration::minutes(15));
    refused_everywhere(s, &lease, "expired lease");
    refused_everywhere(s, &longer, "expired lease with a later exp");
    s.request(
        "GET",
        "/v1/lease",
        &[("cookie", &cookie), ("x-csrf-token", &good_csrf)],
        None,
    )
    .problem(401, "lease_invalid");
    assert_stored(s, &key, &a_id, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Factor and code brute force.

fn failed_factors_and_codes_lock_the_grant(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let other_client = s.client(tenant, &[]);
    let g = s.create(&key, &lab_result());
    let id = g["id"].as_str().unwrap();
    let token = g["token"].as_str().unwrap();

    // A missing factor is a bad request, not an attempt.
    exchange(s, &client, token, None).problem(400, "invalid_request");
    let wrong = [WRONG_DOB, "02/03/1984", "1984-3-2", "0000-00-00"];
    for (i, value) in wrong.iter().enumerate() {
        let doc = exchange(s, &client, token, Some(value)).problem(401, "factor_mismatch");
        assert_eq!(doc["attempts_left"], 4 - i, "{doc}");
        assert!(!doc.to_string().contains(value), "echoes the factor: {doc}");
        assert_eq!(grant_view(s, &key, id)["status"], "active");
    }
    // The fifth failure locks the grant, whichever client makes it.
    exchange(s, &other_client, token, Some("1999-12-31")).problem(423, "grant_locked");
    assert_eq!(grant_view(s, &key, id)["status"], "locked");
    // Now even the right factor is refused, from any client, and the browser cannot open it.
    exchange(s, &client, token, Some(DOB)).problem(423, "grant_locked");
    exchange(s, &other_client, token, Some(DOB)).problem(423, "grant_locked");
    let visit = s.request("GET", &format!("/l/{token}"), &[], None);
    assert_eq!(
        visit.status, 410,
        "spec 3: an inactive grant gets a 410 page"
    );
    assert_eq!(
        count(s, id, "link.visited"),
        6,
        "the locked visit opened no flow"
    );

    let v = grant_view(s, &key, id);
    assert_eq!(v["status"], "locked");
    assert_eq!(v["uses"], 0);
    assert_eq!(count(s, id, "grant.locked"), 1);
    assert_eq!(count(s, id, "factor.failed"), 5);
    assert_eq!(count(s, id, "factor.passed"), 0);
    assert_eq!(count(s, id, "lease.issued"), 0);
    assert!(s.outbox().is_empty(), "no code was sent");
    let lock = events(s, id)
        .into_iter()
        .find(|e| e.kind == "grant.locked")
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&lock.detail).unwrap()["factor_failures"],
        5
    );

    // Codes count too: five wrong codes kill a flow, and ten failures of either kind lock
    // the grant even though no single flow or the factor reached its own limit.
    let h = s.create(&key, &lab_result());
    let h_id = h["id"].as_str().unwrap();
    let h_token = h["token"].as_str().unwrap();
    let first = flow_of(&exchange(s, &client, h_token, Some(DOB)));
    let code = s.last_code();
    for i in 1..=5u32 {
        let doc = otp(s, &client, &first, &not_the(&code, i)).problem(401, "otp_mismatch");
        assert_eq!(doc["attempts_left"], 5 - i, "{doc}");
    }
    assert_eq!(grant_view(s, &key, h_id)["status"], "active");
    let second = flow_of(&exchange(s, &client, h_token, Some(DOB)));
    let code = s.last_code();
    for i in 1..=4u32 {
        let doc = otp(s, &client, &second, &not_the(&code, i)).problem(401, "otp_mismatch");
        assert_eq!(doc["attempts_left"], 5 - i, "{doc}");
    }
    // Failure number ten, a wrong factor: the grant locks (alone it would leave 4 attempts).
    exchange(s, &client, h_token, Some(WRONG_DOB)).problem(423, "grant_locked");
    assert_eq!(grant_view(s, &key, h_id)["status"], "locked");
    // The still-live second flow cannot finish either.
    otp(s, &client, &second, &code).problem(423, "grant_locked");
    assert_eq!(count(s, h_id, "grant.locked"), 1);
    assert_eq!(count(s, h_id, "otp.failed"), 9);
    assert_eq!(count(s, h_id, "factor.failed"), 1);
    assert_eq!(count(s, h_id, "lease.issued"), 0);
    assert_stored(s, &key, h_id, 0, 0);
}

/// The lockout holds under concurrency: a burst of guesses sent at once must not get more than
/// five factor checks on a grant (spec §6), whatever order the server runs them in. Codes,
/// checked against one flow, are bounded the same way.
fn concurrent_guesses_do_not_outrun_the_lockout(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let mut failures = Vec::new();
    for round in 0..3 {
        let mut body = lab_result();
        if round == 0 {
            body["otp"] = json!({"channel": "none"});
        }
        let g = s.create(&key, &body);
        let id = g["id"].as_str().unwrap().to_owned();
        let token = g["token"].as_str().unwrap().to_owned();
        // 24 wrong guesses and, last, 6 right ones, all at once.
        let answers: Vec<(bool, Reply)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..30)
                .map(|i| {
                    let (client, token) = (&client, &token);
                    scope.spawn(move || {
                        let right = i >= 24;
                        let factor = if right { DOB } else { WRONG_DOB };
                        (right, exchange(s, client, token, Some(factor)))
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (right, reply) in &answers {
            match (right, reply.status) {
                (false, 401) => {
                    reply.problem(401, "factor_mismatch");
                }
                (_, 423) => {
                    reply.problem(423, "grant_locked");
                }
                (true, 201) => {}
                (_, status) => panic!("right={right}: {status} {}", reply.text),
            }
        }
        let mismatches = answers.iter().filter(|(_, r)| r.status == 401).count();
        assert!(mismatches <= 4, "{mismatches} factor_mismatch answers");
        let view = grant_view(s, &key, &id);
        assert_eq!(view["status"], "locked");
        assert_eq!(count(s, &id, "grant.locked"), 1);
        failures.push((
            count(s, &id, "factor.failed"),
            view["factor_failures"].clone(),
            answers.iter().filter(|(_, r)| r.status == 201).count(),
            count(s, &id, "lease.issued") + count(s, &id, "otp.sent"),
        ));
    }
    for (round, (events, counted, passed, issued)) in failures.iter().enumerate() {
        assert!(
            *events <= 5,
            "round {round}: {events} wrong factors were checked (factor_failures {counted}); \
             {passed} right guesses in the same burst were answered 201 and got {issued} \
             leases or codes: the lockout of 5 does not hold under concurrency \
             (all rounds: (factor.failed, factor_failures, 201s, leases+codes) = {failures:?})"
        );
    }

    // Codes: 30 at once against one flow (25 wrong, then the right one 5 times): at most five
    // wrong codes are counted, at most one lease comes out, and no answer is a 500.
    let g = s.create(&key, &lab_result());
    let id = g["id"].as_str().unwrap().to_owned();
    let flow = flow_of(&exchange(
        s,
        &client,
        g["token"].as_str().unwrap(),
        Some(DOB),
    ));
    let code = s.last_code();
    let answers: Vec<Reply> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..30u32)
            .map(|i| {
                let (client, flow, code) = (&client, &flow, &code);
                scope.spawn(move || {
                    let guess = if i >= 25 {
                        code.clone()
                    } else {
                        not_the(code, i + 1)
                    };
                    otp(s, client, flow, &guess)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for reply in &answers {
        assert!(
            [201, 401, 409, 410].contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text
        );
    }
    let leases = answers.iter().filter(|r| r.status == 201).count();
    assert!(leases <= 1, "{leases} leases from one flow");
    assert_eq!(count(s, &id, "lease.issued"), leases);
    assert!(count(s, &id, "otp.failed") <= 5);
    assert_eq!(grant_view(s, &key, &id)["status"], "active");
}

// ---------------------------------------------------------------------------------------------
// 3. The OTP rules.

fn codes_expire_resend_slowly_and_work_once(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let new_grant = || {
        let g = s.create(&key, &lab_result());
        (
            g["id"].as_str().unwrap().to_owned(),
            g["token"].as_str().unwrap().to_owned(),
        )
    };

    // Five wrong codes kill the flow: then even the right code, and a resend, are refused.
    let (g1, t1) = new_grant();
    let flow = flow_of(&exchange(s, &client, &t1, Some(DOB)));
    let code = s.last_code();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    for i in 1..=5u32 {
        let doc = otp(s, &client, &flow, &not_the(&code, i)).problem(401, "otp_mismatch");
        assert_eq!(doc["attempts_left"], 5 - i, "{doc}");
    }
    otp(s, &client, &flow, &code).problem(410, "flow_expired");
    resend(s, &client, &flow).problem(410, "flow_expired");
    // Malformed codes are refused without a lease.
    for junk in ["", "12345", "1234567", "abcdef", " 123456"] {
        otp(s, &client, &flow, junk).problem(410, "flow_expired");
    }
    assert_eq!(count(s, &g1, "lease.issued"), 0);
    assert_eq!(count(s, &g1, "otp.failed"), 5);
    assert_eq!(
        grant_view(s, &key, &g1)["status"],
        "active",
        "a dead flow is not a locked grant"
    );
    // A new flow on the same grant works, once: the code replayed after success is refused.
    let flow2 = flow_of(&exchange(s, &client, &t1, Some(DOB)));
    let code2 = s.last_code();
    let leased = otp(s, &client, &flow2, &code2);
    assert_eq!(leased.status, 201, "{}", leased.text);
    otp(s, &client, &flow2, &code2).problem(410, "flow_expired");
    resend(s, &client, &flow2).problem(410, "flow_expired");
    otp(s, &client, &flow, &code2).problem(410, "flow_expired");
    assert_eq!(count(s, &g1, "lease.issued"), 1);

    // Resend: not within 30 s; after that a new code replaces the old one; at most 3 sends.
    let (g2, t2) = new_grant();
    let before = s.outbox().len();
    let flow = flow_of(&exchange(s, &client, &t2, Some(DOB)));
    let c1 = s.last_code();
    let soon = resend(s, &client, &flow);
    soon.problem(429, "too_many_requests");
    let wait = retry_after(&soon);
    assert!((29..=31).contains(&wait), "Retry-After {wait}");
    s.advance(Duration::seconds(10));
    let soon = resend(s, &client, &flow);
    soon.problem(429, "too_many_requests");
    let wait = retry_after(&soon);
    assert!((19..=21).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        s.outbox().len(),
        before + 1,
        "no code sent by refused resends"
    );
    s.advance(Duration::seconds(20));
    let again = resend(s, &client, &flow);
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["next"], "otp");
    assert_eq!(again.json()["otp_sent_to"], "p***@example.org");
    let c2 = s.last_code();
    if c1 != c2 {
        // The previous code stopped working when the new one was sent (one wrong try).
        let doc = otp(s, &client, &flow, &c1).problem(401, "otp_mismatch");
        assert_eq!(doc["attempts_left"], 4);
    }
    s.advance(Duration::seconds(30));
    assert_eq!(resend(s, &client, &flow).status, 200);
    let c3 = s.last_code();
    if c2 != c3 {
        // Tries are per code: the third code starts with five.
        let doc = otp(s, &client, &flow, &c2).problem(401, "otp_mismatch");
        assert_eq!(doc["attempts_left"], 4);
    }
    s.advance(Duration::seconds(30));
    let fourth = resend(s, &client, &flow);
    fourth.problem(429, "too_many_requests");
    assert!(retry_after(&fourth) >= 1);
    s.advance(Duration::seconds(60));
    resend(s, &client, &flow).problem(429, "too_many_requests");
    assert_eq!(s.outbox().len(), before + 3, "three sends per flow");
    assert_eq!(count(s, &g2, "otp.sent"), 3);
    let leased = otp(s, &client, &flow, &c3);
    assert_eq!(leased.status, 201, "{}", leased.text);
    otp(s, &client, &flow, &c3).problem(410, "flow_expired");
    assert_eq!(count(s, &g2, "lease.issued"), 1);

    // A code lives 10 minutes; an expired code is not a wrong try, and a new one may be sent.
    let (g3, t3) = new_grant();
    let flow = flow_of(&exchange(s, &client, &t3, Some(DOB)));
    let code = s.last_code();
    s.advance(Duration::minutes(10));
    otp(s, &client, &flow, &code).problem(410, "otp_expired");
    otp(s, &client, &flow, &not_the(&code, 1)).problem(410, "otp_expired");
    assert_eq!(count(s, &g3, "otp.failed"), 0);
    assert_eq!(count(s, &g3, "lease.issued"), 0);
    assert_eq!(resend(s, &client, &flow).status, 200);
    let fresh = s.last_code();
    let leased = otp(s, &client, &flow, &fresh);
    assert_eq!(leased.status, 201, "{}", leased.text);
    // Just inside the 10 minutes a code still works.
    let flow = flow_of(&exchange(s, &client, &t3, Some(DOB)));
    let code = s.last_code();
    s.advance(Duration::minutes(10) - Duration::seconds(1));
    let leased = otp(s, &client, &flow, &code);
    assert_eq!(leased.status, 201, "{}", leased.text);

    // A flow lives 15 minutes, whatever its codes.
    let (g4, t4) = new_grant();
    let flow = flow_of(&exchange(s, &client, &t4, Some(DOB)));
    s.advance(Duration::minutes(9));
    assert_eq!(resend(s, &client, &flow).status, 200);
    let young_code = s.last_code();
    s.advance(Duration::minutes(6));
    otp(s, &client, &flow, &young_code).problem(410, "flow_expired");
    resend(s, &client, &flow).problem(410, "flow_expired");
    assert_eq!(count(s, &g4, "lease.issued"), 0);
    assert_eq!(count(s, &g4, "otp.failed"), 0);

    for g in [&g1, &g2, &g3, &g4] {
        assert_stored(s, &key, g, 0, 0);
        assert_eq!(grant_view(s, &key, g)["status"], "active");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Flows and links stay with their client and tenant.

fn flows_and_links_stay_with_their_client_and_tenant(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let (other_tenant, _) = s.tenant("elsewhere");
    let x = s.client(tenant, &["127.0.0.0/8"]);
    let y = s.client(tenant, &["127.0.0.0/8"]);
    let z = s.client(other_tenant, &[]);
    let g = s.create(&key, &lab_result());
    let id = g["id"].as_str().unwrap();
    let token = g["token"].as_str().unwrap();

    // Client X's flow cannot be finished or resent by client Y of the same tenant, nor by Z.
    let flow = flow_of(&exchange(s, &x, token, Some(DOB)));
    let code = s.last_code();
    let missing =
        otp(s, &y, "01939d7e-0000-7000-8000-000000000000", &code).problem(404, "not_found");
    for intruder in [&y, &z] {
        let doc = otp(s, intruder, &flow, &code).problem(404, "not_found");
        assert_eq!(doc, missing, "another client's flow looks like no flow");
        resend(s, intruder, &flow).problem(404, "not_found");
    }
    otp(s, &y, "not-a-flow", &code).problem(404, "not_found");
    resend(s, &y, "not-a-flow").problem(404, "not_found");
    assert_eq!(s.outbox().len(), 1, "no resend happened");
    assert_eq!(
        count(s, id, "otp.failed"),
        0,
        "the intruders counted nothing"
    );
    // X finishes its own flow with the code.
    let leased = otp(s, &x, &flow, &code);
    assert_eq!(leased.status, 201, "{}", leased.text);

    // Links: another tenant's client sees A's token exactly like an unknown one.
    let unknown = exchange(s, &x, &"A".repeat(43), Some(DOB)).problem(404, "link_invalid");
    let foreign = exchange(s, &z, token, Some(DOB)).problem(404, "link_invalid");
    assert_eq!(foreign, unknown);
    for bad in [
        "",
        "short",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        &format!("{token}A"),
        &token[..42],
        &format!("{token}/../x"),
    ] {
        exchange(s, &x, bad, Some(DOB)).problem(404, "link_invalid");
    }
    s.post_as("/v1/exchange", &x, &json!({"factor": DOB}))
        .problem(400, "invalid_request");
    s.post_as(
        "/v1/exchange",
        &x,
        &json!({"token": token, "factor": DOB, "tenant": "x"}),
    )
    .problem(400, "invalid_request");

    // Client credentials.
    let (x_id, x_secret) = credentials(&x);
    let revoked = s.client(tenant, &[]);
    let (_, revoked_secret) = credentials(&revoked);
    revoke_client(s, &revoked);
    let api_key = format!("Bearer {key}");
    let unauthenticated = [
        basic(&x_id, &format!("{x_secret}x")),
        basic(&x_id, &x_secret[..x_secret.len() - 1]),
        basic(&x_id, ""),
        basic("01939d7e-0000-7000-8000-000000000000", &x_secret),
        basic("not-an-id", &x_secret),
        basic(&credentials(&y).0, &x_secret),
        revoked.clone(),
        basic(&credentials(&revoked).0, &revoked_secret),
        "Basic !!!".to_owned(),
        "Basic ".to_owned(),
        format!("Basic {}", STANDARD.encode(&x_id)),
        format!("Bearer {}", x.strip_prefix("Basic ").unwrap()),
        api_key,
    ];
    for auth in &unauthenticated {
        let reply = exchange(s, auth, token, Some(DOB));
        reply.problem(401, "unauthenticated");
        otp(s, auth, &flow, &code).problem(401, "unauthenticated");
        resend(s, auth, &flow).problem(401, "unauthenticated");
    }
    for path in ["/v1/exchange", &format!("/v1/exchange/{flow}/otp")] {
        s.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(json!({"token": token, "code": code}).to_string().as_bytes()),
        )
        .problem(401, "unauthenticated");
        // Authentication comes first: a caller who may not call learns nothing of the body.
        for body in [&b"{}"[..], b"not json", b"{\"token\": 7}"] {
            s.request(
                "POST",
                path,
                &[
                    ("content-type", "application/json"),
                    ("authorization", revoked.as_str()),
                ],
                Some(body),
            )
            .problem(401, "unauthenticated");
        }
    }
    for path in ["/v1/grants", "/v1/grants/batch", "/v1/grants/x/revoke"] {
        s.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(b"{\"payload\": "),
        )
        .problem(401, "unauthenticated");
    }

    // Addresses: a client allowed only from 10.0.0.0/8 (as if its credentials were wrong), and
    // a grant allowed only from there, are refused from loopback; a forged X-Forwarded-For (no
    // trusted proxy) changes nothing.
    let far = s.client(tenant, &["10.0.0.0/8"]);
    exchange(s, &far, token, Some(DOB)).problem(401, "unauthenticated");
    let fenced = s.create(&key, &{
        let mut body = lab_result();
        body["allowed_ip_blocks"] = json!(["10.0.0.0/8"]);
        body
    });
    let fenced_id = fenced["id"].as_str().unwrap();
    let fenced_token = fenced["token"].as_str().unwrap();
    exchange(s, &x, fenced_token, Some(DOB)).problem(403, "forbidden");
    let spoofed = s.request(
        "POST",
        "/v1/exchange",
        &[
            ("authorization", &far),
            ("content-type", "application/json"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
        Some(
            json!({"token": fenced_token, "factor": DOB})
                .to_string()
                .as_bytes(),
        ),
    );
    spoofed.problem(401, "unauthenticated");
    let visit = s.request(
        "GET",
        &format!("/l/{fenced_token}"),
        &[("x-forwarded-for", "10.1.2.3")],
        None,
    );
    assert_eq!(visit.status, 403, "{}", visit.text);

    // Only X's one flow was opened and only one code was sent; the fenced grant was never
    // visited; nothing was stored or used.
    assert_eq!(count(s, id, "link.visited"), 1);
    assert_eq!(count(s, id, "lease.issued"), 1);
    assert_eq!(s.outbox().len(), 1);
    assert_eq!(
        events(s, fenced_id)
            .iter()
            .map(|e| e.kind.as_str())
            .collect::<Vec<_>>(),
        ["grant.created"]
    );
    assert_stored(s, &key, id, 0, 0);
    assert_stored(s, &key, fenced_id, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Submissions.

fn submissions_are_checked_and_refusals_store_nothing(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let mut body = lab_result();
    body["permissions"]["write_fields"] = json!({
        "result_ack": {"type": "boolean"},
        "note": {"type": "string", "max_length": 200},
        "mood": {"type": "string", "enum": ["ok", "bad"]},
        "visits": {"type": "integer"},
        "seen": {"type": "date"}
    });
    body["max_uses"] = json!(3);
    let g = s.create(&key, &body);
    let id = g["id"].as_str().unwrap();
    let lease = lease_for(s, &client, g["token"].as_str().unwrap(), DOB);

    // Fields and records the grant does not allow.
    for (body, fields) in [
        (
            json!({"fields": {"diagnosis": "x"}}),
            vec!["fields.diagnosis"],
        ),
        (
            json!({"fields": {"result_ack": true, "result": "positive"}}),
            vec!["fields.result"],
        ),
        (
            json!({"creates": [{"name": "Ana", "ssn": "078-05-1120"}]}),
            vec!["creates[0].ssn"],
        ),
    ] {
        let doc = submit(s, &lease, &body).problem(422, "field_not_writable");
        let named: Vec<&str> = doc["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{doc}");
        assert!(!doc.to_string().contains("078-05-1120"));
    }

    // Wrong values: named, never echoed.
    let long_note = format!("NOTE-SECRET-{}", "z".repeat(200));
    let long_name = format!("NAME-SECRET-{}", "n".repeat(80));
    for (body, fields, secret) in [
        (
            json!({"fields": {"result_ack": "VALUE-SECRET-1"}}),
            vec!["fields.result_ack"],
            "VALUE-SECRET-1",
        ),
        (
            json!({"fields": {"note": long_note}}),
            vec!["fields.note"],
            "NOTE-SECRET-",
        ),
        (
            json!({"fields": {"mood": "MOOD-SECRET-3"}}),
            vec!["fields.mood"],
            "MOOD-SECRET-3",
        ),
        (
            json!({"fields": {"visits": 1.5}}),
            vec!["fields.visits"],
            "1.5",
        ),
        (
            json!({"fields": {"seen": "2026-02-30"}}),
            vec!["fields.seen"],
            "2026-02-30",
        ),
        (
            json!({"fields": {"note": 918273645}}),
            vec!["fields.note"],
            "918273645",
        ),
        (
            json!({"creates": [{"name": long_name}]}),
            vec!["creates[0].name"],
            "NAME-SECRET-",
        ),
        (
            json!({"fields": {"result_ack": "MULTI-SECRET", "mood": "meh"}, "creates": [{"name": 7}]}),
            vec!["fields.mood", "fields.result_ack", "creates[0].name"],
            "MULTI-SECRET",
        ),
    ] {
        let reply = submit(s, &lease, &body);
        let doc = reply.problem(422, "invalid_field");
        let mut named: Vec<&str> = doc["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        let mut want = fields.clone();
        named.sort_unstable();
        want.sort_unstable();
        assert_eq!(named, want, "{doc}");
        assert!(
            !reply.text.contains(secret),
            "echoes the value: {}",
            reply.text
        );
    }

    // Bad requests.
    let bad_requests: Vec<Value> = vec![
        json!({}),
        json!({"fields": {}, "creates": []}),
        json!({"fields": {"result_ack": true}, "extra": 1}),
        json!({"fields": [true]}),
        json!({"fields": {"result_ack": true}, "idempotency_key": ""}),
        json!({"fields": {"result_ack": true}, "idempotency_key": "k".repeat(201)}),
        json!({"fields": {"result_ack": true}, "idempotency_key": "a\u{7}b"}),
        json!({"fields": {"result_ack": true}, "idempotency_key": 7}),
    ];
    for body in &bad_requests {
        submit(s, &lease, body).problem(400, "invalid_request");
    }
    for raw in [
        &b"{\"fields\": "[..],
        b"{\"fields\": {\"result_ack\": true}} trailing",
        b"not json",
        b"",
    ] {
        submit_raw(s, &lease, "application/json", raw).problem(400, "invalid_request");
    }
    submit_raw(
        s,
        &lease,
        "text/plain",
        br#"{"fields": {"result_ack": true}}"#,
    )
    .problem(400, "invalid_request");

    // Size: over the 128 KiB body cap, and under it but over 64 KiB of submission.
    let huge = format!(r#"{{"fields": {{"note": "{}"}}}}"#, "a".repeat(129 * 1024));
    submit_raw(s, &lease, "application/json", huge.as_bytes()).problem(413, "payload_too_large");
    submit(
        s,
        &lease,
        &json!({"fields": {"note": "a".repeat(70 * 1024)}}),
    )
    .problem(413, "payload_too_large");
    assert_stored(s, &key, id, 0, 0);

    // Idempotency: the same key and body answer the first result and take no second use.
    let first_body = json!({"fields": {"result_ack": true, "mood": "ok"}, "creates": [{"name": "Ana"}], "idempotency_key": "k-1"});
    let first = submit(s, &lease, &first_body);
    assert_eq!(first.status, 201, "{}", first.text);
    let first = first.json();
    assert_eq!(first["grant_status"], "active");
    assert_stored(s, &key, id, 1, 1);
    let again = submit(s, &lease, &first_body);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.json()["id"], first["id"]);
    assert_eq!(again.json()["received_at"], first["received_at"]);
    // The same body written differently (key order, spacing) is the same body.
    let reordered = br#"{ "idempotency_key":"k-1", "creates":[{"name":"Ana"}],
        "fields":{"mood":"ok","result_ack":true} }"#;
    let again = submit_raw(s, &lease, "application/json", reordered);
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.json()["id"], first["id"]);
    assert_stored(s, &key, id, 1, 1);
    // A forged token (claims changed, old signature) cannot reach that first result.
    let (header, claims, signature) = jwt_parts(&lease);
    for change in ["jti", "sub"] {
        let mut forged = claims.clone();
        forged[change] = json!("01939d7e-0000-7000-8000-000000000000");
        let forged = format!("{}.{}.{signature}", b64(&header), b64(&forged));
        let reply = submit(s, &forged, &first_body);
        reply.problem(401, "lease_invalid");
        assert!(!reply.text.contains(first["id"].as_str().unwrap()));
    }
    // The same key with another body is a conflict.
    for other in [
        json!({"fields": {"result_ack": false, "mood": "ok"}, "creates": [{"name": "Ana"}], "idempotency_key": "k-1"}),
        json!({"fields": {"result_ack": true, "mood": "ok"}, "idempotency_key": "k-1"}),
        json!({"fields": {"result_ack": true, "mood": "ok"}, "creates": [{"name": "Ana"}, {"name": "Bo"}], "idempotency_key": "k-1"}),
    ] {
        submit(s, &lease, &other).problem(409, "idempotency_conflict");
    }
    assert_stored(s, &key, id, 1, 1);

    // Creates: max 2 across all submissions of the grant. (A second later, so the listing's
    // oldest-first order is defined.)
    s.advance(Duration::seconds(1));
    submit(
        s,
        &lease,
        &json!({"creates": [{"name": "Bo"}, {"name": "Cy"}]}),
    )
    .problem(422, "create_limit_exceeded");
    submit(
        s,
        &lease,
        &json!({"creates": [{"name": "Bo"}, {"name": "Cy"}], "idempotency_key": "k-2"}),
    )
    .problem(422, "create_limit_exceeded");
    assert_stored(s, &key, id, 1, 1);
    let second = submit(
        s,
        &lease,
        &json!({"creates": [{"name": "Bo"}], "idempotency_key": "k-2"}),
    );
    assert_eq!(second.status, 201, "{}", second.text);
    assert_eq!(second.json()["grant_status"], "active");
    submit(s, &lease, &json!({"creates": [{"name": "Cy"}]})).problem(422, "create_limit_exceeded");
    // A refused key can be used later with a valid body; nothing of the refusals was kept.
    assert_stored(s, &key, id, 2, 2);

    let kept = stored(s, &key, id);
    assert_eq!(kept[0]["fields"], json!({"result_ack": true, "mood": "ok"}));
    assert_eq!(kept[0]["creates"], json!([{"name": "Ana"}]));
    assert_eq!(kept[0]["idempotency_key"], "k-1");
    assert_eq!(kept[1]["creates"], json!([{"name": "Bo"}]));
    assert_eq!(kept[1]["fields"], json!({}));
    assert_eq!(count(s, id, "submission.accepted"), 2);
    assert_eq!(count(s, id, "grant.used"), 0);
    assert_eq!(grant_view(s, &key, id)["status"], "active");
    // Rejections are audited without the values.
    for e in events(s, id) {
        for secret in [
            "VALUE-SECRET-1",
            "NOTE-SECRET-",
            "MOOD-SECRET-3",
            "078-05-1120",
        ] {
            assert!(!e.detail.contains(secret), "{} detail {}", e.kind, e.detail);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Inactive grants stop their leases at once; refresh slides but never past an hour.

fn inactive_grants_stop_leases_at_once_and_refresh_is_capped(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let submission = json!({"fields": {"result_ack": true}});
    let leased = |body: &Value| {
        let g = s.create(&key, body);
        let lease = lease_for(s, &client, g["token"].as_str().unwrap(), DOB);
        let read = s.lease_call("GET", "/v1/lease", &lease, None);
        assert_eq!(read.status, 200, "{}", read.text);
        (g["id"].as_str().unwrap().to_owned(), lease)
    };
    let stopped = |lease: &str, status: u16, code: &str| {
        s.lease_call("GET", "/v1/lease", lease, None)
            .problem(status, code);
        submit(s, lease, &submission).problem(status, code);
        s.lease_call("POST", "/v1/lease/complete", lease, None)
            .problem(status, code);
        s.lease_call("POST", "/v1/lease/refresh", lease, None)
            .problem(status, code);
    };

    // Revoked by the originator.
    let (revoked, lease) = leased(&lab_result());
    let reply = s.post(
        &format!("/v1/grants/{revoked}/revoke"),
        &key,
        &json!({"reason": "x"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    stopped(&lease, 410, "grant_revoked");
    assert_stored(s, &key, &revoked, 0, 0);

    // Superseded: the old version's lease can no longer write stale data.
    let (old, old_lease) = leased(&lab_result());
    let mut newer = lab_result();
    newer["supersedes"] = json!(old);
    newer["payload"]["result"] = json!("positive");
    let new = s.create(&key, &newer);
    stopped(&old_lease, 410, "grant_revoked");
    assert_stored(s, &key, &old, 0, 0);
    assert_eq!(grant_view(s, &key, &old)["revoke_reason"], "superseded");
    let new_lease = lease_for(s, &client, new["token"].as_str().unwrap(), DOB);
    assert_eq!(
        s.lease_call("GET", "/v1/lease", &new_lease, None).json()["payload"]["result"],
        "positive"
    );

    // Locked by failures in other flows while the lease is out.
    let g = s.create(&key, &lab_result());
    let locked = g["id"].as_str().unwrap();
    let token = g["token"].as_str().unwrap();
    let lease = lease_for(s, &client, token, DOB);
    assert_eq!(s.lease_call("GET", "/v1/lease", &lease, None).status, 200);
    for _ in 0..4 {
        exchange(s, &client, token, Some(WRONG_DOB)).problem(401, "factor_mismatch");
    }
    exchange(s, &client, token, Some(WRONG_DOB)).problem(423, "grant_locked");
    stopped(&lease, 423, "grant_locked");
    assert_stored(s, &key, locked, 0, 0);

    // The partner client that holds the lease is revoked: its lease stops with it.
    let partner = s.client(tenant, &[]);
    let g = s.create(&key, &lab_result());
    let held = g["id"].as_str().unwrap();
    let lease = lease_for(s, &partner, g["token"].as_str().unwrap(), DOB);
    assert_eq!(s.lease_call("GET", "/v1/lease", &lease, None).status, 200);
    revoke_client(s, &partner);
    stopped(&lease, 401, "lease_invalid");
    assert_stored(s, &key, held, 0, 0);
    assert_eq!(grant_view(s, &key, held)["status"], "active");

    // Expired: the grant's own expiry ends its leases even inside the lease's 15 minutes.
    let mut short = lab_result();
    short["expires_at"] = json!(rfc(s.now() + Duration::minutes(10)));
    let (expiring, lease) = leased(&short);
    s.advance(Duration::minutes(10));
    stopped(&lease, 410, "grant_expired");
    assert_stored(s, &key, &expiring, 0, 0);

    // Refresh: one TTL from now, never past one hour after issue.
    let (refreshed, lease) = leased(&lab_result());
    let issued = s.now();
    let read = s.lease_call("GET", "/v1/lease", &lease, None).json();
    assert_eq!(read["expires_at"], rfc(issued + Duration::minutes(15)));
    let mut current = lease.clone();
    let mut tokens = vec![lease.clone()];
    for (after, want) in [(10, 25), (10, 35), (10, 45), (10, 55), (10, 60), (9, 60)] {
        s.advance(Duration::minutes(after));
        let reply = s.lease_call("POST", "/v1/lease/refresh", &current, None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let doc = reply.json();
        let expiry = issued + Duration::minutes(want);
        assert_eq!(doc["expires_at"], rfc(expiry), "refresh at +{after}");
        assert_eq!(doc["token_type"], "Bearer");
        let fresh = doc["lease_token"].as_str().unwrap().to_owned();
        let (_, claims, _) = jwt_parts(&fresh);
        assert_eq!(claims["exp"], expiry.unix_timestamp());
        assert_eq!(claims["iat"], issued.unix_timestamp(), "issue time is kept");
        let view = s.lease_call("GET", "/v1/lease", &fresh, None);
        assert_eq!(view.status, 200, "{}", view.text);
        assert_eq!(view.json()["expires_at"], rfc(expiry));
        current = fresh;
        tokens.push(current.clone());
    }
    // Older tokens carry their own, earlier `exp`: the first one is long dead.
    refused_everywhere(s, &tokens[0], "token before the refreshes");
    // At one hour after issue every token of the lease stops, and no refresh revives it.
    s.advance(Duration::minutes(1));
    for t in &tokens {
        s.lease_call("GET", "/v1/lease", t, None)
            .problem(401, "lease_invalid");
        s.lease_call("POST", "/v1/lease/refresh", t, None)
            .problem(401, "lease_invalid");
    }
    assert_eq!(count(s, &refreshed, "lease.refreshed"), 6);
    assert_stored(s, &key, &refreshed, 0, 0);

    // A longer TTL is capped at the hour too: a refresh at +30 minutes cannot slide past it.
    let mut long = lab_result();
    long["lease_ttl_seconds"] = json!(3600);
    let (_, lease) = leased(&long);
    let issued = s.now();
    assert_eq!(
        s.lease_call("GET", "/v1/lease", &lease, None).json()["expires_at"],
        rfc(issued + Duration::hours(1))
    );
    s.advance(Duration::minutes(30));
    let reply = s.lease_call("POST", "/v1/lease/refresh", &lease, None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["expires_at"], rfc(issued + Duration::hours(1)));
}

// ---------------------------------------------------------------------------------------------
// 7. Per-address rate limit on the consumer routes.

mod rate_limit {
    use serde_json::json;

    use linklease_store::testing::TestDb;

    use super::{DOB, count, exchange, flow_of, otp, retry_after};
    use crate::exchange::lab_result;
    use crate::harness::TestServer;

    fn limited(db: &TestDb) {
        // Link visits: three from one address, then 429 with Retry-After.
        let s = TestServer::start_with(db.store.clone(), 3);
        let (tenant, key) = s.tenant("clinic");
        let client = s.client(tenant, &[]);
        let g = s.create(&key, &lab_result());
        let id = g["id"].as_str().unwrap();
        let token = g["token"].as_str().unwrap();
        for _ in 0..3 {
            let visit = s.request("GET", &format!("/l/{token}"), &[], None);
            assert_eq!(visit.status, 303, "{}", visit.text);
        }
        let refused = s.request("GET", &format!("/l/{token}"), &[], None);
        assert_eq!(refused.status, 429, "{}", refused.text);
        let wait = retry_after(&refused);
        assert!((1..=20).contains(&wait), "Retry-After {wait}");
        assert_eq!(
            count(&s, id, "link.visited"),
            3,
            "the refused visit opened nothing"
        );
        // A partner on the same address has a budget of its own (crate::partner tests it).
        assert_eq!(exchange(&s, &client, token, Some(DOB)).status, 201);
        drop(s);

        // The partner exchange: three calls of one client, then 429; the code step is limited
        // too (the same budget).
        let s = TestServer::start_partner_limited(db.store.clone(), 10_000, 3);
        let flow = flow_of(&exchange(&s, &client, token, Some(DOB)));
        let code = s.last_code();
        for _ in 0..2 {
            assert_eq!(exchange(&s, &client, token, Some(DOB)).status, 201);
        }
        let refused = exchange(&s, &client, token, Some(DOB));
        refused.problem(429, "too_many_requests");
        assert!((1..=20).contains(&retry_after(&refused)));
        otp(&s, &client, &flow, &code).problem(429, "too_many_requests");
        assert_eq!(s.outbox().len(), 3, "no code for refused calls");
        assert_eq!(count(&s, id, "link.visited"), 7);
        assert_eq!(count(&s, id, "lease.issued"), 0);
        drop(s);

        // Bad credentials: three tries per address, then 429 whatever is sent.
        let s = TestServer::start_with(db.store.clone(), 3);
        for _ in 0..3 {
            s.post_as(
                "/v1/exchange",
                "Basic bm9ib2R5Om5vdGhpbmc=",
                &json!({"token": token}),
            )
            .problem(401, "unauthenticated");
        }
        s.post_as(
            "/v1/exchange",
            "Basic bm9ib2R5Om5vdGhpbmc=",
            &json!({"token": token}),
        )
        .problem(429, "too_many_requests");
        exchange(&s, &client, token, Some(DOB)).problem(429, "too_many_requests");
    }

    #[test]
    fn sqlite() {
        limited(&TestDb::sqlite());
    }

    #[test]
    fn postgres() {
        if let Some(db) = TestDb::postgres() {
            limited(&db);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Secrets stay out of the log and the audit trail.

fn secrets_stay_out_of_the_log_and_the_audit_trail(s: &TestServer) {
    let (tenant, key) = s.tenant("secretive");
    let client = s.client(tenant, &["127.0.0.0/8"]);
    let (client_id, client_secret) = credentials(&client);
    let pin = "40417733";
    let wrong_pin = "40417734";
    let dob = "1961-12-29";
    let wrong_dob = "1961-12-30";
    let pinned = s.create(
        &key,
        &json!({"payload": {"x": 1},
            "permissions": {"write_fields": {"note": {"type": "string", "max_length": 20}}},
            "factor": {"kind": "pin", "value": pin},
            "otp": {"channel": "sms", "to": "+15550100999"}, "max_uses": 2}),
    );
    let dated = s.create(
        &key,
        &json!({"payload": {"y": 2},
            "permissions": {"write_fields": {"ack": {"type": "boolean"}}},
            "factor": {"kind": "dob", "value": dob},
            "otp": {"channel": "email", "to": "zed@example.org"}}),
    );
    let pin_token = pinned["token"].as_str().unwrap().to_owned();
    let dob_token = dated["token"].as_str().unwrap().to_owned();
    let unknown_token = "Qk9HVVMtVE9LRU4tbmV2ZXItaXNzdWVkLWJ5LXVzLTEyMw".to_owned();
    let mut sent_codes: Vec<String> = Vec::new();
    let mut leases: Vec<String> = Vec::new();

    // Browser visits and a POST of the factor through the pages' route.
    for t in [&pin_token, &unknown_token] {
        s.request("GET", &format!("/l/{t}"), &[], None);
    }
    // Credentials that fail.
    let wrong_secret = format!("{client_secret}Q");
    exchange(s, &basic(&client_id, &wrong_secret), &pin_token, Some(pin))
        .problem(401, "unauthenticated");
    let revoked = s.client(tenant, &[]);
    let (_, revoked_secret) = credentials(&revoked);
    revoke_client(s, &revoked);
    exchange(s, &revoked, &pin_token, Some(pin)).problem(401, "unauthenticated");
    exchange(s, &client, &unknown_token, Some(pin)).problem(404, "link_invalid");
    // Wrong factors, wrong codes, a resend, then the right code.
    exchange(s, &client, &pin_token, Some(wrong_pin)).problem(401, "factor_mismatch");
    exchange(s, &client, &dob_token, Some(wrong_dob)).problem(401, "factor_mismatch");
    let flow = flow_of(&exchange(s, &client, &pin_token, Some(pin)));
    let first = s.last_code();
    let wrong = not_the(&first, 1);
    otp(s, &client, &flow, &wrong).problem(401, "otp_mismatch");
    sent_codes.push(wrong);
    s.advance(Duration::seconds(30));
    assert_eq!(resend(s, &client, &flow).status, 200);
    let second = s.last_code();
    if second != first {
        otp(s, &client, &flow, &first).problem(401, "otp_mismatch");
    }
    let leased = otp(s, &client, &flow, &second);
    assert_eq!(leased.status, 201, "{}", leased.text);
    let pin_lease = leased.json()["lease_token"].as_str().unwrap().to_owned();
    otp(s, &client, &flow, &second).problem(410, "flow_expired");
    leases.push(pin_lease.clone());
    let dob_lease = lease_for(s, &client, &dob_token, dob);
    leases.push(dob_lease.clone());

    // Use the leases, well and badly.
    assert_eq!(
        s.lease_call("GET", "/v1/lease", &pin_lease, None).status,
        200
    );
    submit(s, &pin_lease, &json!({"fields": {"note": "x".repeat(30)}}))
        .problem(422, "invalid_field");
    submit(s, &pin_lease, &json!({"fields": {"secret": pin}})).problem(422, "field_not_writable");
    let ok = submit(
        s,
        &pin_lease,
        &json!({"fields": {"note": "fine"}, "idempotency_key": "i-1"}),
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    let (header, claims, _) = jwt_parts(&pin_lease);
    let mut tampered = claims.clone();
    tampered["sub"] = json!(dated["id"]);
    let forged = format!(
        "{}.{}.{}",
        b64(&header),
        b64(&tampered),
        jwt_parts(&dob_lease).2
    );
    refused_everywhere(s, &forged, "forged");
    s.request(
        "GET",
        "/v1/lease",
        &[("cookie", &format!("__Host-ll_lease={dob_lease}"))],
        None,
    )
    .problem(403, "forbidden");
    let refreshed = s.lease_call("POST", "/v1/lease/refresh", &pin_lease, None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    leases.push(refreshed.json()["lease_token"].as_str().unwrap().to_owned());
    s.post(
        &format!("/v1/grants/{}/revoke", dated["id"].as_str().unwrap()),
        &key,
        &json!({"reason": "done"}),
    );
    s.lease_call("GET", "/v1/lease", &dob_lease, None)
        .problem(410, "grant_revoked");
    assert_eq!(
        s.lease_call("DELETE", "/v1/lease", &leases[2], None).status,
        204
    );
    // Secrets in places they do not belong: query strings and odd headers.
    s.request(
        "GET",
        &format!("/v1/lease?token={}", leases[2]),
        &[("x-lease", &leases[2])],
        None,
    );
    s.get(&format!("/v1/grants?cursor={pin_token}"), &key);

    for sent in s.outbox() {
        sent_codes.push(sent["code"].as_str().unwrap().to_owned());
    }
    assert!(sent_codes.len() >= 4);

    // The log and the audit trail hold none of it.
    let mut plain: Vec<(&str, String)> = vec![
        ("link token", pin_token.clone()),
        ("link token", dob_token.clone()),
        ("presented link token", unknown_token.clone()),
        ("factor", dob.to_owned()),
        ("wrong factor", wrong_dob.to_owned()),
        ("client secret", client_secret.clone()),
        ("revoked client secret", revoked_secret.clone()),
        ("wrong client secret", wrong_secret.clone()),
        (
            "client credentials",
            client.strip_prefix("Basic ").unwrap().to_owned(),
        ),
        ("API key", key.clone()),
        ("forged lease", forged.clone()),
    ];
    for lease in &leases {
        plain.push(("lease token", lease.clone()));
        plain.push(("lease signature", jwt_parts(lease).2));
    }
    let mut numeric: Vec<(&str, String)> = vec![
        ("factor", pin.to_owned()),
        ("wrong factor", wrong_pin.to_owned()),
    ];
    for code in &sent_codes {
        numeric.push(("code", code.clone()));
    }

    let log = logs();
    assert!(
        log.contains("linklease::access"),
        "the access log is captured"
    );
    for line in log.lines() {
        for (what, secret) in &plain {
            assert!(
                !line.contains(secret.as_str()),
                "log holds a {what}: {line}"
            );
        }
        for (what, secret) in &numeric {
            assert!(
                !contains_bounded(line, secret),
                "log holds a {what}: {line}"
            );
        }
    }
    let trail = s.store.read(audit::all).unwrap();
    assert!(trail.len() > 20, "{} events", trail.len());
    for event in &trail {
        let text = format!(
            "{} {:?} {:?} {:?}",
            event.detail, event.actor_id, event.actor_user_agent, event.actor_ip
        );
        for (what, secret) in &plain {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a {what}: {text}",
                event.kind
            );
        }
        for (what, secret) in &numeric {
            assert!(
                !contains_bounded(&text, secret),
                "{} holds a {what}: {text}",
                event.kind
            );
        }
    }
}
