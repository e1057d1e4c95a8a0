//! Closed-loop load: N threads, each with its own keep-alive connection, each running one
//! operation (a request, a whole flow, a batch) after the other for a fixed time. Operations
//! started during the warm-up are not recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::http::Client;

/// What one operation came to.
pub enum Outcome {
    /// It succeeded: `units` things done (requests, flows or grants) with `requests` HTTP
    /// requests; `steps` are the latencies of its requests in microseconds, if it has several.
    Done {
        /// Things done.
        units: u64,
        /// HTTP requests made.
        requests: u64,
        /// Latency of each step, in microseconds.
        steps: Vec<u32>,
    },
    /// A request got an answer that is not 2xx.
    Refused {
        /// Which request (`POST /v1/exchange`).
        what: &'static str,
        /// Its status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// A request failed below HTTP (connection refused or reset, timeout, bad response).
    Transport {
        /// Which request.
        what: &'static str,
        /// The error.
        error: String,
    },
    /// There is nothing left to do (a pool of prepared grants ran out).
    Exhausted,
}

impl Outcome {
    /// One successful request.
    pub fn one() -> Self {
        Outcome::Done {
            units: 1,
            requests: 1,
            steps: Vec::new(),
        }
    }
}

/// How long to run.
#[derive(Clone, Copy)]
pub struct Window {
    /// Unrecorded time first.
    pub warmup: Duration,
    /// Recorded time.
    pub measure: Duration,
}

/// Errors of one kind: a request and a status (0 for a transport error).
#[derive(Clone, Debug)]
pub struct ErrorKind {
    /// The request.
    pub what: &'static str,
    /// The status, 0 for a transport error.
    pub status: u16,
    /// How many.
    pub count: u64,
    /// The first answer's body (or the transport error).
    pub sample: String,
}

/// What a run measured.
#[derive(Default)]
pub struct Measured {
    /// Things done in the recorded window.
    pub units: u64,
    /// Operations completed in the recorded window.
    pub operations: u64,
    /// HTTP requests made in the recorded window (successful operations only).
    pub requests: u64,
    /// From the start of the recorded window to the last recorded completion.
    pub elapsed: Duration,
    /// When the recorded window started.
    pub recorded_from: Option<Instant>,
    /// Latency of each successful operation, in microseconds, sorted.
    pub latencies: Vec<u32>,
    /// Per step, the latencies of successful operations' steps, sorted.
    pub steps: Vec<Vec<u32>>,
    /// Non-2xx answers other than 429 and 503, and transport errors.
    pub errors: u64,
    /// 429 and 503 answers (overload signals, counted apart).
    pub throttled: u64,
    /// Errors and throttles by request and status.
    pub kinds: Vec<ErrorKind>,
    /// Whether the work ran out before the window ended.
    pub exhausted: bool,
}

impl Measured {
    /// Things per second.
    pub fn rate(&self) -> f64 {
        per_second(self.units, self.elapsed)
    }

    /// HTTP requests per second.
    pub fn request_rate(&self) -> f64 {
        per_second(self.requests, self.elapsed)
    }

    /// Latency percentile `p` (0-100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile_ms(&self.latencies, p)
    }
}

/// `count / elapsed`, 0 for an empty window.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(f64::from(sorted[index]) / 1000.0)
}

#[derive(Default)]
struct Local {
    units: u64,
    operations: u64,
    requests: u64,
    last: Option<Instant>,
    latencies: Vec<u32>,
    steps: Vec<Vec<u32>>,
    errors: u64,
    throttled: u64,
    kinds: BTreeMap<(&'static str, u16), (u64, String)>,
    exhausted: bool,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs `connections` threads against `addr` for `window`. `make(i)` builds thread `i`'s
/// operation, which is then called over and over with that thread's connection.
pub fn drive<F, W>(addr: SocketAddr, connections: usize, window: Window, make: F) -> Measured
where
    F: Fn(usize) -> W + Sync,
    W: FnMut(&mut Client) -> Outcome,
{
    let begin = Instant::now() + Duration::from_millis(20);
    let measure_start = begin + window.warmup;
    let end = measure_start + window.measure;
    let locals: Vec<Local> = std::thread::scope(|scope| {
        let make = &make;
        let handles: Vec<_> = (0..connections.max(1))
            .map(|i| {
                scope.spawn(move || {
                    let mut operation = make(i);
                    let mut client = Client::new(addr);
                    let mut local = Local::default();
                    if let Some(wait) = begin.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    loop {
                        let start = Instant::now();
                        if start >= end {
                            break;
                        }
                        let outcome = operation(&mut client);
                        let done = Instant::now();
                        let recorded = start >= measure_start;
                        match outcome {
                            Outcome::Exhausted => {
                                local.exhausted = true;
                                break;
                            }
                            _ if !recorded => {}
                            Outcome::Done {
                                units,
                                requests,
                                steps,
                            } => {
                                local.units += units;
                                local.operations += 1;
                                local.requests += requests;
                                local.last = Some(done);
                                local.latencies.push(micros(done - start));
                                if local.steps.len() < steps.len() {
                                    local.steps.resize(steps.len(), Vec::new());
                                }
                                for (i, step) in steps.into_iter().enumerate() {
                                    local.steps[i].push(step);
                                }
                            }
                            Outcome::Refused {
                                what, status, body, ..
                            } => {
                                local.operations += 1;
                                local.last = Some(done);
                                if status == 429 || status == 503 {
                                    local.throttled += 1;
                                } else {
                                    local.errors += 1;
                                }
                                local
                                    .kinds
                                    .entry((what, status))
                                    .or_insert_with(|| (0, body))
                                    .0 += 1;
                            }
                            Outcome::Transport { what, error } => {
                                local.operations += 1;
                                local.errors += 1;
                                local.kinds.entry((what, 0)).or_insert_with(|| (0, error)).0 += 1;
                                // Do not spin against a server that is gone.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });

    let mut total = Measured::default();
    let mut kinds: BTreeMap<(&'static str, u16), (u64, String)> = BTreeMap::new();
    let mut last = measure_start;
    for local in locals {
        total.units += local.units;
        total.operations += local.operations;
        total.requests += local.requests;
        total.errors += local.errors;
        total.throttled += local.throttled;
        total.exhausted |= local.exhausted;
        total.latencies.extend(local.latencies);
        if total.steps.len() < local.steps.len() {
            total.steps.resize(local.steps.len(), Vec::new());
        }
        for (i, step) in local.steps.into_iter().enumerate() {
            total.steps[i].extend(step);
        }
        if let Some(l) = local.last {
            last = last.max(l);
        }
        for (key, (count, sample)) in local.kinds {
            kinds.entry(key).or_insert_with(|| (0, sample)).0 += count;
        }
    }
    total.recorded_from = Some(measure_start);
    total.elapsed = if total.operations == 0 {
        window.measure
    } else {
        last - measure_start
    };
    total.latencies.sort_unstable();
    for step in &mut total.steps {
        step.sort_unstable();
    }
    total.kinds = kinds
        .into_iter()
        .map(|((what, status), (count, sample))| ErrorKind {
            what,
            status,
            count,
            sample,
        })
        .collect();
    total
}

/// Sends one prepared request and checks for a 2xx answer.
pub fn send(client: &mut Client, what: &'static str, raw: &[u8]) -> Outcome {
    match client.send(raw) {
        Ok(r) if r.is_success() => Outcome::one(),
        Ok(r) => Outcome::Refused {
            what,
            status: r.status,
            body: r.snippet(),
        },
        Err(e) => Outcome::Transport {
            what,
            error: e.to_string(),
        },
    }
}
