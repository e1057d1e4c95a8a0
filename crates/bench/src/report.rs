//! The report: one row per scenario, the targets of issue 6 with their measured values, the
//! errors seen, as a table on stdout and as JSON.

use serde::Serialize;

use crate::load::{self, ErrorKind, Measured};

/// One scenario's figures.
#[derive(Clone, Serialize)]
pub struct Row {
    /// `ceiling`, `p1-read`, `p2-flow`, `p3-single`, `p3-batch`, `scale-seed`, `scale-p1-read`,
    /// `scale-p2-flow`.
    pub name: String,
    /// What was measured (`GET /v1/lease`).
    pub what: String,
    /// What `per_second` counts: `req`, `flow` or `grant`.
    pub unit: &'static str,
    /// Concurrent connections.
    pub connections: usize,
    /// Length of the recorded window, seconds.
    pub seconds: f64,
    /// Units done in the window.
    pub count: u64,
    /// Units per second.
    pub per_second: f64,
    /// HTTP requests per second (successful operations only).
    pub requests_per_second: f64,
    /// Latency of one operation (a request, a whole flow, a batch call), milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: Option<f64>,
    /// Slowest, milliseconds.
    pub max_ms: Option<f64>,
    /// Non-2xx answers other than 429/503, and transport errors.
    pub errors: u64,
    /// 429 and 503 answers.
    pub throttled: u64,
    /// Errors and throttles by request and status.
    pub error_kinds: Vec<ErrorRow>,
    /// The server's peak resident set size during the scenario, MB (10^6 bytes).
    pub peak_rss_mb: Option<f64>,
    /// The server's CPU time (user + system, all threads) per unit in the recorded window,
    /// microseconds: unlike rates, it hardly moves when other guests take the machine's cores.
    pub server_cpu_us: Option<f64>,
    /// `requests_per_second` / the ceiling's, same run.
    pub ratio_to_ceiling: Option<f64>,
    /// Grants stored when the scenario started.
    pub grants_stored: u64,
    /// Per-step latencies of a multi-request operation (P2).
    pub steps: Vec<StepRow>,
    /// At scale: ratios to the same scenario at the base size.
    pub vs_base: Option<VsBase>,
    /// Anything to know about the figures.
    pub note: Option<String>,
}

/// Errors of one kind.
#[derive(Clone, Serialize)]
pub struct ErrorRow {
    /// The request.
    pub request: &'static str,
    /// Its status (0: transport error).
    pub status: u16,
    /// How many.
    pub count: u64,
    /// The first answer's body or the error.
    pub sample: String,
}

/// One step of a multi-request operation.
#[derive(Clone, Serialize)]
pub struct StepRow {
    /// The request.
    pub what: &'static str,
    /// Median, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
}

/// A scale row against its base row.
#[derive(Clone, Serialize)]
pub struct VsBase {
    /// The base row's name.
    pub base: String,
    /// Grants stored at the base run.
    pub base_grants: u64,
    /// p99 at scale / p99 at base.
    pub p99_ratio: Option<f64>,
    /// Throughput at scale / throughput at base.
    pub rate_ratio: Option<f64>,
}

impl Row {
    /// A row from a load run.
    #[allow(clippy::too_many_arguments)]
    pub fn from_measured(
        name: &str,
        what: &str,
        unit: &'static str,
        connections: usize,
        m: &Measured,
        peak_kib: Option<u64>,
        grants_stored: u64,
        step_names: &[&'static str],
    ) -> Self {
        Row {
            name: name.to_owned(),
            what: what.to_owned(),
            unit,
            connections,
            seconds: round(m.elapsed.as_secs_f64(), 3),
            count: m.units,
            per_second: round(m.rate(), 1),
            requests_per_second: round(m.request_rate(), 1),
            p50_ms: m.percentile_ms(50.0).map(ms),
            p99_ms: m.percentile_ms(99.0).map(ms),
            p999_ms: m.percentile_ms(99.9).map(ms),
            max_ms: m.percentile_ms(100.0).map(ms),
            errors: m.errors,
            throttled: m.throttled,
            error_kinds: m.kinds.iter().map(ErrorRow::from).collect(),
            peak_rss_mb: peak_kib.map(mb),
            server_cpu_us: None,
            ratio_to_ceiling: None,
            grants_stored,
            steps: step_names
                .iter()
                .zip(&m.steps)
                .map(|(what, lat)| StepRow {
                    what,
                    p50_ms: load::percentile_ms(lat, 50.0).map(ms),
                    p99_ms: load::percentile_ms(lat, 99.0).map(ms),
                })
                .collect(),
            vs_base: None,
            note: m.exhausted.then(|| {
                format!(
                    "the prepared grants ran out after {:.1} s; the rate is over that time",
                    m.elapsed.as_secs_f64()
                )
            }),
        }
    }

    /// Sets `vs_base` from `base`.
    pub fn compare_to(&mut self, base: &Row) {
        self.vs_base = Some(VsBase {
            base: base.name.clone(),
            base_grants: base.grants_stored,
            p99_ratio: ratio(self.p99_ms, base.p99_ms),
            rate_ratio: ratio(Some(self.per_second), Some(base.per_second)),
        });
    }
}

impl From<&ErrorKind> for ErrorRow {
    fn from(k: &ErrorKind) -> Self {
        ErrorRow {
            request: k.what,
            status: k.status,
            count: k.count,
            sample: k.sample.clone(),
        }
    }
}

/// `a / b` rounded, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round(a / b, 3)),
        _ => None,
    }
}

/// Rounds to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn ms(x: f64) -> f64 {
    round(x, 3)
}

/// KiB to MB (10^6 bytes).
pub fn mb(kib: u64) -> f64 {
    round(kib as f64 * 1024.0 / 1e6, 1)
}

/// One target of issue 6 and what was measured.
#[derive(Clone, Serialize)]
pub struct Target {
    /// The target as the issue states it.
    pub target: String,
    /// The measured value, as text with its unit.
    pub measured: String,
    /// Met, not met, or `None` when it was not measured in this run.
    pub met: Option<bool>,
}

fn find<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

fn check(
    target: String,
    value: Option<f64>,
    show: impl Fn(f64) -> String,
    ok: impl Fn(f64) -> bool,
) -> Target {
    Target {
        target,
        measured: value.map_or_else(|| "not measured".to_owned(), &show),
        met: value.map(ok),
    }
}

/// The targets of issue 6, item 3, for `backend`, with this run's figures.
pub fn targets(rows: &[Row], backend: &str) -> Vec<Target> {
    let sqlite = backend == "sqlite";
    let p1 = find(rows, "p1-read");
    let p2 = find(rows, "p2-flow");
    let mut out = Vec::new();
    let (p1_share, p2_rate) = if sqlite {
        (0.50, 2000.0)
    } else {
        (0.15, 500.0)
    };
    out.push(check(
        format!(
            "P1 read ≥ {:.0} % of the ceiling's req/s ({backend})",
            p1_share * 100.0
        ),
        p1.and_then(|r| r.ratio_to_ceiling),
        |v| format!("{:.1} %", v * 100.0),
        |v| v >= p1_share,
    ));
    if sqlite {
        out.push(check(
            "P1 read p99 < 5 ms (sqlite)".into(),
            p1.and_then(|r| r.p99_ms),
            |v| format!("{v:.2} ms"),
            |v| v < 5.0,
        ));
    }
    out.push(check(
        format!("P2 ≥ {p2_rate:.0} complete flows/s ({backend})"),
        p2.map(|r| r.per_second),
        |v| format!("{v:.0} flows/s"),
        |v| v >= p2_rate,
    ));
    if !sqlite {
        out.push(check(
            "P2 stretch ≥ 1,000 complete flows/s (postgres)".into(),
            p2.map(|r| r.per_second),
            |v| format!("{v:.0} flows/s"),
            |v| v >= 1000.0,
        ));
    }
    let p3_note = if sqlite {
        ""
    } else {
        " (the target is for sqlite)"
    };
    out.push(check(
        format!("P3 ≥ 5,000 grants/s single{p3_note}"),
        find(rows, "p3-single").map(|r| r.per_second),
        |v| format!("{v:.0} grants/s"),
        |v| v >= 5000.0,
    ));
    out.push(check(
        format!("P3 ≥ 20,000 grants/s batched{p3_note}"),
        find(rows, "p3-batch").map(|r| r.per_second),
        |v| format!("{v:.0} grants/s"),
        |v| v >= 20000.0,
    ));
    for (name, label) in [("scale-p1-read", "P1"), ("scale-p2-flow", "P2")] {
        let row = find(rows, name);
        let sizes = row
            .and_then(|r| r.vs_base.as_ref().map(|b| (b.base_grants, r.grants_stored)))
            .map_or(String::new(), |(b, s)| format!(" ({} vs {} grants)", s, b));
        out.push(check(
            format!("scale: {label} p99 at scale ≤ 1.25 × base{sizes}"),
            row.and_then(|r| r.vs_base.as_ref())
                .and_then(|v| v.p99_ratio),
            |v| format!("{v:.3} ×"),
            |v| v <= 1.25,
        ));
    }
    let rss = rows
        .iter()
        .filter(|r| r.name.ends_with("p1-read"))
        .filter_map(|r| r.peak_rss_mb)
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    out.push(check(
        "server peak RSS < 100 MB under P1".into(),
        rss,
        |v| format!("{v:.1} MB"),
        |v| v < 100.0,
    ));
    out
}

fn cell(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The table as text (also what `docs/PERFORMANCE.md` shows).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:>6} {:>10} {:>10} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}  {}\n",
        "scenario",
        "conns",
        "rate/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "429/503",
        "RSS MB",
        "CPU µs",
        "×ceiling",
        "grants",
        "vs base (p99 ×, rate ×)"
    ));
    for r in rows {
        let rate = format!("{:.0} {}", r.per_second, r.unit);
        let vs = r.vs_base.as_ref().map_or(String::new(), |v| {
            format!("{} / {}", cell(v.p99_ratio, 2), cell(v.rate_ratio, 2))
        });
        out.push_str(&format!(
            "{:<14} {:>6} {:>10} {:>10.0} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9}  {}\n",
            r.name,
            r.connections,
            rate,
            r.requests_per_second,
            cell(r.p50_ms, 2),
            cell(r.p99_ms, 2),
            r.errors,
            r.throttled,
            cell(r.peak_rss_mb, 1),
            cell(r.server_cpu_us, 0),
            cell(r.ratio_to_ceiling, 3),
            r.grants_stored,
            vs
        ));
    }
    out
}

/// The targets as text.
pub fn targets_text(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        out.push_str(&format!(
            "  {:<62} {:>16}  {}\n",
            t.target, t.measured, verdict
        ));
    }
    out
}
