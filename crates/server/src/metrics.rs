//! Prometheus metrics, rendered by hand (text format 0.0.4). Routes are labelled by their
//! pattern (`/l/{token}`), never by the path: paths can carry secrets and unbounded values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Method, route pattern and status of a group of requests.
type RequestKey = (&'static str, String, u16);

/// How many requests, and the seconds they took together.
type RequestTotals = (u64, f64);

/// Request counters and latency sums.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, RequestTotals>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.requests.lock() {
            let entry = map
                .entry((method, route.to_owned(), status))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += seconds;
        }
    }

    /// The text exposition, with the pool gauges and SQLite's group commit counters passed in.
    pub fn render(
        &self,
        backend: &str,
        pool_connections: u32,
        pool_idle: u32,
        writes: Option<linklease_store::WriteStats>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP linklease_build_info Build and backend of this instance."
        );
        let _ = writeln!(out, "# TYPE linklease_build_info gauge");
        let _ = writeln!(
            out,
            "linklease_build_info{{version=\"{}\",backend=\"{backend}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP linklease_db_pool_connections Open database connections."
        );
        let _ = writeln!(out, "# TYPE linklease_db_pool_connections gauge");
        let _ = writeln!(out, "linklease_db_pool_connections {pool_connections}");
        let _ = writeln!(
            out,
            "# HELP linklease_db_pool_idle Idle database connections."
        );
        let _ = writeln!(out, "# TYPE linklease_db_pool_idle gauge");
        let _ = writeln!(out, "linklease_db_pool_idle {pool_idle}");
        if let Some(writes) = writes {
            let _ = writeln!(
                out,
                "# HELP linklease_sqlite_commits_total Transactions SQLite's writer committed."
            );
            let _ = writeln!(out, "# TYPE linklease_sqlite_commits_total counter");
            let _ = writeln!(out, "linklease_sqlite_commits_total {}", writes.commits);
            let _ = writeln!(
                out,
                "# HELP linklease_sqlite_committed_writes_total Writes those transactions held (group commit)."
            );
            let _ = writeln!(
                out,
                "# TYPE linklease_sqlite_committed_writes_total counter"
            );
            let _ = writeln!(
                out,
                "linklease_sqlite_committed_writes_total {}",
                writes.writes
            );
        }
        let Ok(map) = self.requests.lock() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# HELP linklease_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE linklease_http_requests_total counter");
        for ((method, route, status), (count, _)) in map.iter() {
            let _ = writeln!(
                out,
                "linklease_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP linklease_http_request_duration_seconds_sum Time spent answering, by route."
        );
        let _ = writeln!(
            out,
            "# TYPE linklease_http_request_duration_seconds_sum counter"
        );
        for ((method, route, status), (_, sum)) in map.iter() {
            let _ = writeln!(
                out,
                "linklease_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {sum:.6}"
            );
        }
        out
    }
}
