//! Sending codes the way attackers and slow gateways make it happen: many resends at once on
//! one flow while the courier takes its time, a courier that holds every delivery, many flows
//! and many sends on one grant. Each limit must hold whatever the concurrency.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use crate::exchange::{lab_result, start_exchange};
use crate::harness::{Reply, TestServer};
use linklease_store::testing::TestDb;
use linklease_store::{audit, flows};

/// An SMS gateway on loopback that answers each delivery after `delay`, or only once opened.
struct Gateway {
    url: String,
    hits: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Gateway {
    fn start(delay: Duration, open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let (counted, gated) = (hits.clone(), gate.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (counted, gated) = (counted.clone(), gated.clone());
                std::thread::spawn(move || answer(stream, delay, &counted, &gated));
            }
        });
        Self { url, hits, gate }
    }

    fn open(&self) {
        let (open, wake) = &*self.gate;
        *open.lock().unwrap() = true;
        wake.notify_all();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn courier(&self) -> Arc<dyn linklease_courier::Courier> {
        linklease_courier::from_spec(
            &format!("webhook:{}", self.url),
            &linklease_courier::CourierOptions {
                webhook_secret: Some(linklease_grant::SecretString::new("s3cret")),
                timeout: Duration::from_secs(60),
                allow_insecure: true,
                ..Default::default()
            },
        )
        .unwrap()
    }
}

/// Reads one request, counts it, waits, answers 200.
fn answer(
    mut stream: std::net::TcpStream,
    delay: Duration,
    hits: &AtomicUsize,
    gate: &(Mutex<bool>, Condvar),
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        line.clear();
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    hits.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(delay);
    let (open, wake) = gate;
    let mut opened = open.lock().unwrap();
    while !*opened {
        opened = wake.wait(opened).unwrap();
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

fn sms_grant() -> Value {
    let mut body = lab_result();
    body["otp"] = json!({"channel": "sms", "to": "+15550100"});
    body
}

fn kinds(s: &TestServer, grant: &str) -> Vec<String> {
    s.store
        .read(|c| audit::for_grant(c, grant.parse().unwrap()))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// Runs `f` on `n` threads released together; returns every answer.
fn at_once(n: usize, f: &(dyn Fn() -> Reply + Sync)) -> Vec<Reply> {
    let start = Barrier::new(n);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    f()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Whether every answer is one of `allowed`.
#[track_caller]
fn only(replies: &[Reply], allowed: &[u16]) {
    assert!(
        replies.iter().all(|r| allowed.contains(&r.status)),
        "{:?}",
        statuses(replies)
    );
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    let mut all: Vec<u16> = replies.iter().map(|r| r.status).collect();
    all.sort_unstable();
    all
}

/// 199 resends at once, three times 30 s apart, on a flow whose gateway takes 0.5 s: the
/// flow's three codes leave, no more, and each has its `otp.sent`.
fn concurrent_resends_send_at_most_three_codes(db: &TestDb) {
    let gateway = Gateway::start(Duration::from_millis(500), true);
    let s = TestServer::start_full(db.store.clone(), 100_000, Some(gateway.courier()));
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &sms_grant());
    let id = grant["id"].as_str().unwrap().to_owned();
    let token = grant["token"].as_str().unwrap();
    let flow = start_exchange(&s, &client, token, "1984-03-02");
    assert_eq!(gateway.hits(), 1);

    let path = format!("/v1/exchange/{flow}/resend");
    for round in 1..=3 {
        s.advance(time::Duration::seconds(30));
        let replies = at_once(199, &|| s.post_as(&path, &client, &json!({})));
        // One wins; the others lost the flow's compare-and-set (409) or came too late (429).
        only(&replies, &[200, 409, 429]);
        let passed = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(passed, usize::from(round < 3), "round {round}");
        for r in replies.iter().filter(|r| r.status == 429) {
            r.problem(429, "too_many_requests");
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(gateway.hits(), 3, "at most three codes per flow ever leave");
    let kinds = kinds(&s, &id);
    assert_eq!(count(&kinds, "otp.sent"), 3, "{kinds:?}");
    assert_eq!(count(&kinds, "otp.failed_to_send"), 0, "{kinds:?}");
}

/// The same storm through the browser's form.
fn concurrent_browser_resends_send_at_most_three_codes(db: &TestDb) {
    let gateway = Gateway::start(Duration::from_millis(500), true);
    let s = TestServer::start_full(db.store.clone(), 100_000, Some(gateway.courier()));
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &sms_grant());
    let id = grant["id"].as_str().unwrap().to_owned();
    let visited = s.request(
        "GET",
        &format!("/l/{}", grant["token"].as_str().unwrap()),
        &[],
        None,
    );
    let cookie = visited
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-ll_flow="))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .unwrap();
    let page = s.request("GET", "/flow", &[("cookie", &cookie)], None);
    let marker = "name=\"csrf\" value=\"";
    let at = page.text.find(marker).unwrap() + marker.len();
    let csrf = page.text[at..at + page.text[at..].find('"').unwrap()].to_owned();
    let post = move |s: &TestServer, path: &str, body: String| {
        s.request(
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(body.as_bytes()),
        )
    };
    let passed = post(&s, "/flow/factor", format!("csrf={csrf}&factor=1984-03-02"));
    assert_eq!(passed.status, 303, "{}", passed.text);
    for round in 1..=3 {
        s.advance(time::Duration::seconds(30));
        let replies = at_once(199, &|| post(&s, "/flow/resend", format!("csrf={csrf}")));
        only(&replies, &[303, 409, 429]);
        let passed = replies.iter().filter(|r| r.status == 303).count();
        assert_eq!(passed, usize::from(round < 3), "round {round}");
    }
    assert_eq!(gateway.hits(), 3);
    assert_eq!(count(&kinds(&s, &id), "otp.sent"), 3);
}

/// A gateway that holds every delivery: the database's work goes on meanwhile (`/readyz`,
/// the originator API, a visit), and once it lets go every held code is delivered.
fn a_held_courier_holds_no_database_thread(db: &TestDb) {
    let gateway = Gateway::start(Duration::ZERO, false);
    let s = TestServer::start_full(db.store.clone(), 100_000, Some(gateway.courier()));
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    // More held deliveries than the blocking pool has threads.
    let tokens: Vec<String> = (0..40)
        .map(|_| {
            s.create(&key, &sms_grant())["token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let answers: Vec<Reply> = std::thread::scope(|scope| {
        let exchanges: Vec<_> = tokens
            .iter()
            .map(|token| {
                let body = json!({"token": token, "factor": "1984-03-02"});
                let (s, client) = (&s, &client);
                scope.spawn(move || s.post_as("/v1/exchange", client, &body))
            })
            .collect();
        while gateway.hits() < linklease_server::dispatch::COURIER_THREADS {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every courier thread is held and the rest wait in its queue; the database answers.
        assert_eq!(s.request("GET", "/readyz", &[], None).status, 200);
        assert_eq!(s.get("/v1/grants", &key).status, 200);
        let fresh = s.create(&key, &lab_result());
        let link = format!("/l/{}", fresh["token"].as_str().unwrap());
        assert_eq!(s.request("GET", &link, &[], None).status, 303);
        gateway.open();
        exchanges.into_iter().map(|t| t.join().unwrap()).collect()
    });
    only(&answers, &[201]);
    assert_eq!(gateway.hits(), 40);
}

/// One link, many flows at once from anywhere: at most `open_flows_per_grant` open, at most
/// `sends_per_grant_per_hour` codes in an hour, then 429 with `Retry-After`; an hour later the
/// link works again, and ended flows are swept.
fn one_grant_costs_a_bounded_number_of_flows_and_codes(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap().to_owned();
    let id = grant["id"].as_str().unwrap().to_owned();

    // 30 visits at once: 20 flows open, the rest refused.
    let path = format!("/l/{token}");
    let visits = at_once(30, &|| s.request("GET", &path, &[], None));
    assert_eq!(
        visits.iter().filter(|r| r.status == 303).count(),
        20,
        "{:?}",
        statuses(&visits)
    );
    for refused in visits.iter().filter(|r| r.status != 303) {
        assert_eq!(refused.status, 429);
        assert!(refused.text.contains("Too many attempts"));
        let wait: i64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=15 * 60 + 1).contains(&wait), "{wait}");
    }
    s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": token, "factor": "1984-03-02"}),
    )
    .problem(429, "too_many_requests");

    // The flows expire; now 14 partner exchanges at once, each sending its first code.
    s.advance(time::Duration::minutes(16));
    let body = json!({"token": token, "factor": "1984-03-02"});
    let started = at_once(14, &|| s.post_as("/v1/exchange", &client, &body));
    assert_eq!(
        started.iter().filter(|r| r.status == 201).count(),
        10,
        "{:?}",
        statuses(&started)
    );
    for refused in started.iter().filter(|r| r.status != 201) {
        refused.problem(429, "too_many_requests");
        assert!(refused.header("retry-after").is_some());
    }
    assert_eq!(s.outbox().len(), 10, "ten codes per grant per hour");
    // A resend on one of those flows is refused the same way.
    let flow = started.iter().find(|r| r.status == 201).unwrap().json()["flow_id"].clone();
    s.advance(time::Duration::seconds(31));
    s.post_as(
        &format!("/v1/exchange/{}/resend", flow.as_str().unwrap()),
        &client,
        &json!({}),
    )
    .problem(429, "too_many_requests");
    assert_eq!(count(&kinds(s, &id), "otp.sent"), 10);

    // An hour after those flows ended the link sends again, and the ended flows are swept.
    s.advance(time::Duration::minutes(76));
    let again = s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": token, "factor": "1984-03-02"}),
    );
    assert_eq!(again.status, 201, "{}", again.text);
    let sweep = || {
        let before = s.now() - linklease_lease::limits::SEND_WINDOW;
        s.store.write(|c| flows::sweep(c, before, 1000)).unwrap()
    };
    assert_eq!(
        sweep(),
        34,
        "every flow that ended over an hour ago, none with a lease"
    );
    assert_eq!(sweep(), 0);
}

#[test]
fn concurrent_resends_send_at_most_three_codes_sqlite() {
    concurrent_resends_send_at_most_three_codes(&TestDb::sqlite());
}

#[test]
fn concurrent_resends_send_at_most_three_codes_postgres() {
    if let Some(db) = TestDb::postgres() {
        concurrent_resends_send_at_most_three_codes(&db);
    }
}

#[test]
fn concurrent_browser_resends_send_at_most_three_codes_sqlite() {
    concurrent_browser_resends_send_at_most_three_codes(&TestDb::sqlite());
}

#[test]
fn concurrent_browser_resends_send_at_most_three_codes_postgres() {
    if let Some(db) = TestDb::postgres() {
        concurrent_browser_resends_send_at_most_three_codes(&db);
    }
}

#[test]
fn a_held_courier_holds_no_database_thread_sqlite() {
    a_held_courier_holds_no_database_thread(&TestDb::sqlite());
}

#[test]
fn a_held_courier_holds_no_database_thread_postgres() {
    if let Some(db) = TestDb::postgres() {
        a_held_courier_holds_no_database_thread(&db);
    }
}

crate::http_tests!(one_grant_costs_a_bounded_number_of_flows_and_codes);

/// Two instances on one PostgreSQL: visits spread over both still open at most 20 flows of one
/// grant, since the database, not an instance, decides.
#[test]
fn two_instances_share_the_per_grant_caps_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    let (a, b) = (TestServer::start(&db), TestServer::start(&db));
    let (_, key) = a.tenant("clinic");
    let grant = a.create(&key, &lab_result());
    let path = format!("/l/{}", grant["token"].as_str().unwrap());
    let turn = AtomicUsize::new(0);
    let visits = at_once(30, &|| {
        let s = if turn.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            &a
        } else {
            &b
        };
        s.request("GET", &path, &[], None)
    });
    only(&visits, &[303, 429]);
    assert_eq!(visits.iter().filter(|r| r.status == 303).count(), 20);
}
