//! The partner API's authentication and limits, over HTTP: the address is checked before the
//! secret, and each client has a budget of its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Barrier;
use std::time::Instant;

use linklease_store::testing::TestDb;

use crate::harness::{Reply, TestServer};
use crate::http_tests;

http_tests!(a_disallowed_address_cannot_tell_a_right_secret_from_a_wrong_one);

/// Runs `f` on SQLite and on PostgreSQL (for tests that start servers of their own).
macro_rules! db_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { super::$name(&linklease_store::testing::TestDb::sqlite()); } )*
        }
        mod on_postgres {
            $( #[test] fn $name() {
                if let Some(db) = linklease_store::testing::TestDb::postgres() {
                    super::$name(&db);
                }
            } )*
        }
    };
}

db_tests!(
    partners_have_a_budget_per_client_not_per_address,
    the_budgets_hold_under_concurrency,
);

/// A partner call the exchange answers `link_invalid` once the caller is authenticated: cheap,
/// and counted like any other.
fn call(s: &TestServer, client: &str) -> Reply {
    s.post_as("/v1/exchange", client, &json!({"token": "A".repeat(43)}))
}

/// The Basic credentials `client` with `secret` instead of its own.
fn with_secret(client: &str, secret: &str) -> String {
    let encoded = client.strip_prefix("Basic ").unwrap();
    let pair = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
    let (id, _) = pair.split_once(':').unwrap();
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// What a caller sees of an answer: its status, its headers but the per-request ones, and
/// its body. (`Connection: close` is the transport's: actix closes a connection whose request
/// body it did not read, if the body had not arrived when it answered.)
fn seen(reply: &Reply) -> (u16, Vec<(String, String)>, Value) {
    const PER_REQUEST: [&str; 3] = ["date", "x-request-id", "connection"];
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(n, _)| !PER_REQUEST.contains(&n.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    headers.sort();
    (reply.status, headers, reply.json())
}

fn a_disallowed_address_cannot_tell_a_right_secret_from_a_wrong_one(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let grant = s.create(&key, &json!({"payload": {"a": 1}}));
    let body = json!({"token": grant["token"]});
    // The test calls from 127.0.0.1; this client may call from 10.0.0.0/8 only.
    let far = s.client(tenant, &["10.0.0.0/8"]);
    let wrong = with_secret(&far, &format!("lls_{}", "x".repeat(43)));
    let right = s.post_as("/v1/exchange", &far, &body);
    right.problem(401, "unauthenticated");
    let guessed = s.post_as("/v1/exchange", &wrong, &body);
    assert_eq!(seen(&right), seen(&guessed));
    // A revoked-looking or unknown client gets that answer too.
    let unknown = s.post_as(
        "/v1/exchange",
        &format!(
            "Basic {}",
            STANDARD.encode("01a2097d-0000-7000-8000-000000000000:lls_x")
        ),
        &body,
    );
    assert_eq!(seen(&right), seen(&unknown));
    // From an allowed address the same grant exchanges (so the refusal was the address's).
    let near = s.client(tenant, &["127.0.0.0/8"]);
    let leased = s.post_as("/v1/exchange", &near, &body);
    assert_eq!(leased.status, 201, "{}", leased.text);
}

fn partners_have_a_budget_per_client_not_per_address(db: &TestDb) {
    // Browsers: 3 requests a minute per address; partners: 150 a minute per client.
    let s = TestServer::start_partner_limited(db.store.clone(), 3, 150);
    let (tenant, _) = s.tenant("clinic");
    let a = s.client(tenant, &[]);
    let b = s.client(tenant, &[]);
    let started = Instant::now();
    let mut passed = 0;
    let refused = loop {
        let reply = call(&s, &a);
        if reply.status == 429 || passed > 300 {
            break reply;
        }
        reply.problem(404, "link_invalid");
        passed += 1;
    };
    let refilled = (started.elapsed().as_secs_f64() * 150.0 / 60.0).ceil() as usize;
    assert!(
        (150..=150 + refilled).contains(&passed),
        "{passed} calls of one client passed, from one address allowed 3"
    );
    refused.problem(429, "too_many_requests");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Another client of the same address has its own budget.
    call(&s, &b).problem(404, "link_invalid");
    // A browser on that address still has 3.
    let link = format!("/l/{}", "A".repeat(43));
    for _ in 0..3 {
        let visit = s.request("GET", &link, &[], None);
        assert_ne!(visit.status, 429, "{}", visit.text);
    }
    assert_eq!(s.request("GET", &link, &[], None).status, 429);
    // A wrong secret of a known client counts against the address, not against that client.
    let wrong = with_secret(&b, "lls_wrong");
    for _ in 0..3 {
        s.post_as("/v1/exchange", &wrong, &json!({"token": "x"}))
            .problem(401, "unauthenticated");
    }
    // The address's tries are spent: even the right secret is not told apart now.
    s.post_as("/v1/exchange", &wrong, &json!({"token": "x"}))
        .problem(429, "too_many_requests");
    call(&s, &b).problem(429, "too_many_requests");
}

/// `n` calls at once (released together), each made by `f`; their statuses.
fn race(n: usize, f: impl Fn() -> u16 + Sync) -> Vec<u16> {
    let barrier = Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    f()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn the_budgets_hold_under_concurrency(db: &TestDb) {
    // One client allowed 20 a minute, raced by 48 callers: 20 pass (and what the clock
    // refilled meanwhile, a token every 3 seconds), the rest are 429.
    let s = TestServer::start_partner_limited(db.store.clone(), 10_000, 20);
    let (tenant, _) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let started = Instant::now();
    let statuses = race(48, || call(&s, &client).status);
    let refilled = (started.elapsed().as_secs_f64() * 20.0 / 60.0).floor() as usize;
    let passed = statuses.iter().filter(|&&st| st == 404).count();
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    assert_eq!(passed + limited, 48, "{statuses:?}");
    assert!((20..=20 + refilled).contains(&passed), "{statuses:?}");
    drop(s);

    // Wrong secrets, 48 at once from an address allowed 10 failures a minute: at most 10 are
    // judged (401), the rest are 429.
    let s = TestServer::start_partner_limited(db.store.clone(), 10, 10_000);
    let wrong = with_secret(&client, "lls_wrong");
    let started = Instant::now();
    let statuses = race(48, || {
        s.post_as("/v1/exchange", &wrong, &json!({"token": "x"}))
            .status
    });
    let refilled = (started.elapsed().as_secs_f64() * 10.0 / 60.0).floor() as usize;
    let judged = statuses.iter().filter(|&&st| st == 401).count();
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    assert_eq!(judged + limited, 48, "{statuses:?}");
    assert!((10..=10 + refilled).contains(&judged), "{statuses:?}");
}
