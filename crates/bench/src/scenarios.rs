//! Seeding through the public API, and the scenarios of issue 6: the ceiling, P1 read, P2 flow,
//! P3 create (single and batched), and the helpers the scale run reuses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::http::{self, Client, Response};
use crate::load::{self, Measured, Outcome, Window};
use crate::outbox::Outbox;
use crate::server::Credentials;

/// Largest batch `POST /v1/grants/batch` takes.
pub const BATCH: usize = 1000;

/// The date of birth every flow grant asks for.
const DOB: &str = "1984-03-02";

/// What a run shares with its scenarios.
pub struct Ctx {
    /// The server.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// The seeded API key and partner client.
    pub creds: Credentials,
    /// Grants created so far (every route, warm-up included).
    pub stored: AtomicU64,
    /// Serial number for grant payloads, so that no two are alike.
    serial: AtomicU64,
    /// The codes the courier wrote.
    pub outbox: Outbox,
    /// Concurrent connections of the main scenarios.
    pub connections: usize,
    /// Concurrent batch calls in P3 batch.
    pub batch_connections: usize,
    /// Threads seeding grants.
    pub seed_threads: usize,
}

/// Which kind of grant to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// P1: no factor, no OTP (the exchange issues the lease at once), read only, a one-hour
    /// lease.
    Read,
    /// P2: factor `dob`, OTP by e-mail, one writable field, one use.
    Flow,
    /// Everything else: the README's example grant (factor, OTP, fields, child records).
    Filler,
}

impl Ctx {
    /// A context for the server at `addr`.
    pub fn new(
        addr: SocketAddr,
        creds: Credentials,
        outbox: Outbox,
        connections: usize,
        batch_connections: usize,
        seed_threads: usize,
    ) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            creds,
            stored: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            outbox,
            connections: connections.max(1),
            batch_connections: batch_connections.max(1),
            seed_threads: seed_threads.max(1),
        }
    }

    /// Grants created so far.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// One grant request body of `kind`.
    pub fn grant_json(&self, kind: Kind) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let payload = format!(
            r#""payload":{{"patient_id":"P-{n}","test":"SARS-CoV-2 PCR","result":"negative"}}"#
        );
        match kind {
            Kind::Read => {
                format!(r#"{{{payload},"lease_ttl_seconds":3600,"labels":{{"case_id":"r-{n}"}}}}"#)
            }
            Kind::Flow => format!(
                concat!(
                    r#"{{{payload},"permissions":{{"write_fields":{{"result_ack":{{"type":"boolean"}},"#,
                    r#""note":{{"type":"string","max_length":200}}}}}},"max_uses":1,"#,
                    r#""factor":{{"kind":"dob","value":"{dob}"}},"#,
                    r#""otp":{{"channel":"email","to":"pat@example.org"}},"labels":{{"case_id":"f-{n}"}}}}"#
                ),
                payload = payload,
                dob = DOB,
                n = n
            ),
            Kind::Filler => format!(
                concat!(
                    r#"{{{payload},"permissions":{{"read":true,"write_fields":{{"result_ack":{{"type":"boolean"}},"#,
                    r#""note":{{"type":"string","max_length":200}}}},"create":{{"kind":"contact","max":10,"#,
                    r#""fields":{{"name":{{"type":"string","max_length":80}},"phone":{{"type":"string"}}}}}}}},"#,
                    r#""max_uses":1,"lease_ttl_seconds":900,"factor":{{"kind":"dob","value":"{dob}"}},"#,
                    r#""otp":{{"channel":"email","to":"pat@example.org"}},"labels":{{"case_id":"c-{n}"}}}}"#
                ),
                payload = payload,
                dob = DOB,
                n = n
            ),
        }
    }

    /// A `POST /v1/grants/batch` body with one grant of each kind in `kinds`.
    pub fn batch_json(&self, kinds: &[Kind]) -> String {
        let grants: Vec<String> = kinds.iter().map(|k| self.grant_json(*k)).collect();
        format!(r#"{{"grants":[{}]}}"#, grants.join(","))
    }

    fn api_key(&self) -> [(&str, &str); 1] {
        [("Authorization", self.creds.api_key.as_str())]
    }
}

/// A seeding result: the grants made that are not fillers (kind, id, link token), and how
/// long it took.
pub struct Seeded {
    /// `(kind, grant id, link token)` of every grant not of kind `Filler`.
    pub grants: Vec<(Kind, String, String)>,
    /// Grants made.
    pub count: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latency of each batch call, in microseconds, sorted.
    pub latencies: Vec<u32>,
    /// Calls answered 429 or 503 (each retried after a pause), by status, with the first body.
    pub throttled: Vec<(u16, u64, String)>,
}

impl Seeded {
    /// Grants per second.
    pub fn rate(&self) -> f64 {
        load::per_second(self.count, self.elapsed)
    }

    /// The `(id, token)` pairs of `kind`.
    pub fn of(&self, kind: Kind) -> Vec<(String, String)> {
        self.grants
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, id, token)| (id.clone(), token.clone()))
            .collect()
    }
}

/// `total` grants: `reads` of kind `Read` and `flows` of kind `Flow` spread evenly among
/// fillers (so that, at scale, the grants P1 and P2 use lie all over the table and its
/// indexes, not only at their newest end). `total` is raised to `reads + flows` if smaller.
pub fn spread(total: usize, reads: usize, flows: usize) -> Vec<Kind> {
    let special = reads + flows;
    let total = total.max(special);
    let mut plan = vec![Kind::Filler; total];
    for j in 0..special {
        // The reads spread evenly among the special positions, the rest are flows.
        let is_read = (j + 1) * reads / special.max(1) > j * reads / special.max(1);
        plan[j * total / special] = if is_read { Kind::Read } else { Kind::Flow };
    }
    plan
}

fn created_pairs(r: &Response) -> Result<Vec<(String, String)>, String> {
    let v = r.json();
    let grants = v["grants"]
        .as_array()
        .ok_or_else(|| format!("no grants in the batch answer: {}", r.snippet()))?;
    grants
        .iter()
        .map(|g| match (g["id"].as_str(), g["token"].as_str()) {
            (Some(id), Some(token)) => Ok((id.to_owned(), token.to_owned())),
            _ => Err(format!("a created grant without id or token: {g}")),
        })
        .collect()
}

/// Creates the grants of `plan` (one per entry, of that kind) through
/// `POST /v1/grants/batch`, 1,000 per call, on `ctx.seed_threads` threads; keeps the ids and
/// tokens of those that are not fillers.
pub fn seed(ctx: &Ctx, plan: &[Kind]) -> Result<Seeded, String> {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let kept = Mutex::new(Vec::new());
    let latencies = Mutex::new(Vec::new());
    let throttled = Mutex::new(Vec::new());
    let made = AtomicU64::new(0);
    let threads = ctx.seed_threads.min(plan.len().div_ceil(BATCH)).max(1);
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    let mut client = Client::new(ctx.addr);
                    let key = ctx.api_key();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let start = next.fetch_add(BATCH, Ordering::Relaxed);
                        if start >= plan.len() {
                            return Ok(());
                        }
                        let kinds = &plan[start..(start + BATCH).min(plan.len())];
                        let body = ctx.batch_json(kinds);
                        let mut attempt = 0u32;
                        let (r, elapsed) = loop {
                            let t0 = Instant::now();
                            let r = client
                                .post("/v1/grants/batch", &key, body.as_bytes())
                                .map_err(|e| format!("POST /v1/grants/batch: {e}"));
                            let elapsed = t0.elapsed();
                            match &r {
                                // An overload signal: counted, then the same batch again.
                                Ok(r) if (r.status == 429 || r.status == 503) && attempt < 50 => {
                                    attempt += 1;
                                    let mut throttled =
                                        throttled.lock().unwrap_or_else(PoisonError::into_inner);
                                    match throttled.iter_mut().find(|(s, _, _)| *s == r.status) {
                                        Some(entry) => entry.1 += 1,
                                        None => throttled.push((r.status, 1, r.snippet())),
                                    }
                                    drop(throttled);
                                    std::thread::sleep(Duration::from_millis(
                                        100 * u64::from(attempt.min(10)),
                                    ));
                                }
                                _ => break (r, elapsed),
                            }
                        };
                        let r = match r {
                            Ok(r) if r.is_success() => r,
                            Ok(r) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(format!(
                                    "POST /v1/grants/batch answered {}: {}",
                                    r.status,
                                    r.snippet()
                                ));
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        };
                        latencies
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                        ctx.stored.fetch_add(kinds.len() as u64, Ordering::Relaxed);
                        made.fetch_add(kinds.len() as u64, Ordering::Relaxed);
                        if kinds.iter().any(|k| *k != Kind::Filler) {
                            let pairs = created_pairs(&r)?;
                            if pairs.len() != kinds.len() {
                                return Err(format!(
                                    "a batch of {} made {} grants",
                                    kinds.len(),
                                    pairs.len()
                                ));
                            }
                            let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                            for (kind, (id, token)) in kinds.iter().zip(pairs) {
                                if *kind != Kind::Filler {
                                    kept.push((*kind, id, token));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("a seeding thread panicked".to_owned()),
            })
            .collect()
    });
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let mut latencies = latencies
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    latencies.sort_unstable();
    Ok(Seeded {
        grants: kept.into_inner().unwrap_or_else(PoisonError::into_inner),
        count: made.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
        throttled: throttled
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
    })
}

/// Exchanges each link token (of a `Kind::Read` grant: no factor, no OTP) for a lease through
/// the partner API; returns the lease tokens.
pub fn leases(ctx: &Ctx, grants: &[(String, String)]) -> Result<Vec<String>, String> {
    let threads = 8.min(grants.len()).max(1);
    let chunk = grants.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<String>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = grants
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut client = Client::new(ctx.addr);
                    let auth = [("Authorization", ctx.creds.client.as_str())];
                    part.iter()
                        .map(|(_, token)| {
                            let body = format!(r#"{{"token":"{token}"}}"#);
                            let r = client
                                .post("/v1/exchange", &auth, body.as_bytes())
                                .map_err(|e| format!("POST /v1/exchange: {e}"))?;
                            let v = r.json();
                            match v["lease"]["lease_token"].as_str() {
                                Some(lease) if r.is_success() => Ok(lease.to_owned()),
                                _ => Err(format!(
                                    "POST /v1/exchange answered {}: {}",
                                    r.status,
                                    r.snippet()
                                )),
                            }
                        })
                        .collect::<Result<Vec<String>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a lease thread panicked".into()))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(grants.len());
    for r in results {
        out.extend(r?);
    }
    // One read, checked in full, before the load: the scenario itself only checks statuses.
    let mut client = Client::new(ctx.addr);
    if let Some(lease) = out.first() {
        let r = client
            .get(
                "/v1/lease",
                &[("Authorization", &format!("Bearer {lease}"))],
            )
            .map_err(|e| format!("GET /v1/lease: {e}"))?;
        if !r.is_success() || r.json()["payload"]["patient_id"].as_str().is_none() {
            return Err(format!(
                "GET /v1/lease answered {}: {}",
                r.status,
                r.snippet()
            ));
        }
    }
    Ok(out)
}

/// Ceiling: `GET /healthz`.
pub fn ceiling(ctx: &Ctx, window: Window) -> Measured {
    let raw = http::request("GET", &ctx.host, "/healthz", &[], None);
    load::drive(ctx.addr, ctx.connections, window, |_| {
        let raw = &raw;
        move |client: &mut Client| load::send(client, "GET /healthz", raw)
    })
}

/// P1 read: `GET /v1/lease` with the given leases, each connection cycling through its share.
pub fn p1_read(ctx: &Ctx, window: Window, leases: &[String]) -> Measured {
    let requests: Vec<Vec<u8>> = leases
        .iter()
        .map(|lease| {
            let auth = format!("Bearer {lease}");
            http::request(
                "GET",
                &ctx.host,
                "/v1/lease",
                &[("Authorization", &auth)],
                None,
            )
        })
        .collect();
    let connections = ctx.connections;
    load::drive(ctx.addr, connections, window, |i| {
        let mine: Vec<&[u8]> = if requests.len() >= connections {
            requests
                .iter()
                .skip(i)
                .step_by(connections)
                .map(Vec::as_slice)
                .collect()
        } else {
            vec![requests[i % requests.len().max(1)].as_slice()]
        };
        let mut next = 0usize;
        move |client: &mut Client| {
            let raw = mine[next % mine.len()];
            next += 1;
            load::send(client, "GET /v1/lease", raw)
        }
    })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `Ok(response)` if 2xx, else the outcome that records the failure.
fn expect(what: &'static str, r: std::io::Result<Response>) -> Result<Response, Outcome> {
    match r {
        Ok(r) if r.is_success() => Ok(r),
        Ok(r) => Err(Outcome::Refused {
            what,
            status: r.status,
            body: r.snippet(),
        }),
        Err(e) => Err(Outcome::Transport {
            what,
            error: e.to_string(),
        }),
    }
}

/// One complete partner flow on a fresh `Kind::Flow` grant: exchange (link + factor), the code
/// from the outbox, the OTP step (lease), a read, and the submission that uses the grant up.
fn flow(ctx: &Ctx, client: &mut Client, grant_id: &str, token: &str) -> Result<Vec<u32>, Outcome> {
    let basic = [("Authorization", ctx.creds.client.as_str())];
    let t0 = Instant::now();
    let body = format!(r#"{{"token":"{token}","factor":"{DOB}"}}"#);
    let started = expect(
        "POST /v1/exchange",
        client.post("/v1/exchange", &basic, body.as_bytes()),
    )?
    .json();
    let t1 = Instant::now();
    let flow_id = match (started["flow_id"].as_str(), started["next"].as_str()) {
        (Some(id), Some("otp")) => id.to_owned(),
        _ => {
            return Err(Outcome::Transport {
                what: "POST /v1/exchange",
                error: format!("unexpected answer: {started}"),
            });
        }
    };
    let Some(code) = ctx.outbox.take(grant_id, Duration::from_secs(10)) else {
        return Err(Outcome::Transport {
            what: "outbox",
            error: "no code in the outbox within 10 s".into(),
        });
    };
    let t2 = Instant::now();
    let body = format!(r#"{{"code":"{code}"}}"#);
    let leased = expect(
        "POST /v1/exchange/{flow}/otp",
        client.post(
            &format!("/v1/exchange/{flow_id}/otp"),
            &basic,
            body.as_bytes(),
        ),
    )?
    .json();
    let t3 = Instant::now();
    let Some(lease) = leased["lease_token"].as_str() else {
        return Err(Outcome::Transport {
            what: "POST /v1/exchange/{flow}/otp",
            error: format!("no lease_token in {leased}"),
        });
    };
    let bearer = format!("Bearer {lease}");
    let auth = [("Authorization", bearer.as_str())];
    expect("GET /v1/lease", client.get("/v1/lease", &auth))?;
    let t4 = Instant::now();
    let body = format!(
        r#"{{"fields":{{"result_ack":true,"note":"seen"}},"idempotency_key":"bench-{grant_id}"}}"#
    );
    expect(
        "POST /v1/lease/submissions",
        client.post("/v1/lease/submissions", &auth, body.as_bytes()),
    )?;
    let t5 = Instant::now();
    Ok(vec![
        micros(t1 - t0),
        micros(t2 - t1),
        micros(t3 - t2),
        micros(t4 - t3),
        micros(t5 - t4),
    ])
}

/// The step names of a P2 flow, in the order of its step latencies.
pub const FLOW_STEPS: [&str; 5] = [
    "POST /v1/exchange",
    "code from the outbox",
    "POST /v1/exchange/{flow}/otp",
    "GET /v1/lease",
    "POST /v1/lease/submissions",
];

/// P2 flows over `pool` (each grant used once); stops early if the pool runs out.
pub fn p2_flows(ctx: &Ctx, window: Window, pool: &[(String, String)]) -> Measured {
    let next = AtomicUsize::new(0);
    load::drive(ctx.addr, ctx.connections, window, |_| {
        let next = &next;
        move |client: &mut Client| {
            let Some((grant_id, token)) = pool.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Outcome::Exhausted;
            };
            match flow(ctx, client, grant_id, token) {
                Ok(steps) => Outcome::Done {
                    units: 1,
                    requests: 4,
                    steps,
                },
                Err(outcome) => outcome,
            }
        }
    })
}

/// P3 single: `POST /v1/grants`, one grant per request.
pub fn p3_single(ctx: &Ctx, window: Window) -> Measured {
    let body = ctx.grant_json(Kind::Filler);
    let raw = http::request(
        "POST",
        &ctx.host,
        "/v1/grants",
        &ctx.api_key(),
        Some(body.as_bytes()),
    );
    load::drive(ctx.addr, ctx.connections, window, |_| {
        let raw = &raw;
        move |client: &mut Client| {
            let outcome = load::send(client, "POST /v1/grants", raw);
            if matches!(outcome, Outcome::Done { .. }) {
                ctx.stored.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }
    })
}

/// P3 batch: `POST /v1/grants/batch` with 1,000 grants per request.
pub fn p3_batch(ctx: &Ctx, window: Window) -> Measured {
    let body = ctx.batch_json(&[Kind::Filler; BATCH]);
    let raw = http::request(
        "POST",
        &ctx.host,
        "/v1/grants/batch",
        &ctx.api_key(),
        Some(body.as_bytes()),
    );
    load::drive(ctx.addr, ctx.batch_connections, window, |_| {
        let raw = &raw;
        move |client: &mut Client| match load::send(client, "POST /v1/grants/batch", raw) {
            Outcome::Done { .. } => {
                ctx.stored.fetch_add(BATCH as u64, Ordering::Relaxed);
                Outcome::Done {
                    units: BATCH as u64,
                    requests: 1,
                    steps: Vec::new(),
                }
            }
            other => other,
        }
    })
}
