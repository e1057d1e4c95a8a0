//! `linklease-bench`: the load harness of issue 6.
//!
//! It starts a real `linklease serve` (the binary next to its own executable, so a release
//! build measures a release server) on loopback in a temporary directory, on a fresh SQLite
//! file or a fresh PostgreSQL schema, seeds it through the operator CLI and the public API,
//! and drives it over HTTP with its own keep-alive client, one thread per connection. The
//! server is a black box: nothing is read from its database or code. Scenarios, in order:
//! the HTTP ceiling (`GET /healthz`), P1 read (`GET /v1/lease`), P2 complete partner flows,
//! P3 grant creation (single and batches of 1,000), then the scale run (seed up to `--scale`
//! grants, P1 and P2 again). It prints one table and writes it as JSON.
// The harness's output is its table; printing is its job.
#![allow(clippy::print_stdout)]

mod http;
mod load;
mod outbox;
mod report;
mod scenarios;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::load::{Measured, Window};
use crate::report::Row;
use crate::scenarios::{Ctx, Kind};
use crate::server::{Memory, Options, Server, Setup};

/// Measures a real linklease over HTTP: ceiling, P1 read, P2 flows, P3 create, scale.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Recorded seconds per scenario [default: 10; --smoke: 1].
    #[arg(long)]
    seconds: Option<f64>,
    /// Unrecorded warm-up seconds before each scenario [default: 2; --smoke: 0.2].
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent connections (one client thread each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Concurrent calls in P3 batch (each creates 1,000 grants).
    #[arg(long, default_value_t = 4)]
    batch_connections: usize,
    /// Threads seeding grants through the batch route.
    #[arg(long, default_value_t = 4)]
    seed_threads: usize,
    /// Grants stored for the scale run [default: 1000000; --smoke: 2000].
    #[arg(long)]
    scale: Option<u64>,
    /// Grants stored before the first P1/P2 run, the base of the scale ratios [default: 10000;
    /// --smoke: 300].
    #[arg(long)]
    base_grants: Option<u64>,
    /// Leases (each on its own grant) P1 reads with [default: 1000; --smoke: 64].
    #[arg(long)]
    leases: Option<usize>,
    /// PostgreSQL server to use instead of the embedded SQLite (a fresh schema is made in it
    /// and dropped afterwards), e.g. postgres://postgres@127.0.0.1:5432/test.
    #[arg(long)]
    database_url: Option<String>,
    /// Everything tiny (about a second per scenario, scale 2,000): proves the harness works.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios (comma-separated): ceiling, p1, p2, p3, scale. `scale` also runs
    /// p1 and p2 at the base size, which its ratios need.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the JSON report [default: target/bench/bench.json of the target directory
    /// the harness runs from].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `linklease` binary [default: the one next to this executable].
    #[arg(long)]
    linklease: Option<PathBuf>,
    /// The server's `--rate-limit` and `--partner-rate-limit` (requests per minute per address,
    /// and per partner client on /v1/exchange): all load comes from 127.0.0.1, so it is set
    /// too high to trigger.
    #[arg(long, default_value_t = 100_000_000)]
    rate_limit: u64,
    /// An extra argument for `linklease serve` (repeatable), e.g. --serve-arg=--workers=4.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Keep the temporary directory (database, outbox, server log) and print its path.
    #[arg(long)]
    keep_dir: bool,
}

/// The settings after `--smoke` defaults.
#[derive(Serialize, Clone)]
struct Settings {
    smoke: bool,
    seconds: f64,
    warmup: f64,
    connections: usize,
    batch_connections: usize,
    seed_threads: usize,
    scale: u64,
    base_grants: u64,
    leases: usize,
    scenarios: Vec<String>,
}

impl Settings {
    fn of(args: &Args) -> Self {
        let smoke = args.smoke;
        let pick = |given: Option<f64>, full: f64, tiny: f64| {
            given.unwrap_or(if smoke { tiny } else { full })
        };
        let all = ["ceiling", "p1", "p2", "p3", "scale"];
        Settings {
            smoke,
            seconds: pick(args.seconds, 10.0, 1.0),
            warmup: pick(args.warmup, 2.0, 0.2),
            connections: args.connections.max(1),
            batch_connections: args.batch_connections.max(1),
            seed_threads: args.seed_threads.max(1),
            scale: args.scale.unwrap_or(if smoke { 2000 } else { 1_000_000 }),
            base_grants: args.base_grants.unwrap_or(if smoke { 300 } else { 10_000 }),
            leases: args.leases.unwrap_or(if smoke { 64 } else { 1000 }).max(1),
            scenarios: if args.only.is_empty() {
                all.iter().map(|s| (*s).to_owned()).collect()
            } else {
                args.only.iter().map(|s| s.trim().to_lowercase()).collect()
            },
        }
    }

    fn window(&self) -> Window {
        Window {
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            measure: Duration::from_secs_f64(self.seconds.max(0.05)),
        }
    }

    fn runs(&self, name: &str) -> bool {
        self.scenarios.iter().any(|s| s == name)
    }
}

/// The machine the run was on.
#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: Option<String>,
    memory_gb: Option<f64>,
    kernel: Option<String>,
    load_average_before: Option<String>,
}

impl Machine {
    fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gb = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| report::round(kib * 1024.0 / 1e9, 1));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        let load_average_before = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gb,
            kernel,
            load_average_before,
        }
    }
}

/// A seeding step, for the record.
#[derive(Serialize)]
struct SeedRecord {
    what: String,
    grants: u64,
    seconds: f64,
    grants_per_second: f64,
    /// Batch calls answered 429 or 503 (retried).
    throttled: u64,
}

/// The JSON report.
#[derive(Serialize)]
struct Report {
    harness: String,
    command: String,
    started_at: String,
    machine: Machine,
    server: ServerInfo,
    settings: Settings,
    scenarios: Vec<Row>,
    seeding: Vec<SeedRecord>,
    targets: Vec<report::Target>,
    server_log: ServerLog,
    /// Non-2xx answers (other than 429/503) and transport errors, all scenarios.
    errors: u64,
    /// 429 and 503 answers, all scenarios.
    throttled: u64,
    /// Why the run stopped early, if it did.
    failure: Option<String>,
}

#[derive(Serialize)]
struct ServerInfo {
    binary: String,
    /// `git rev-parse --short HEAD` of the checkout the binary sits in, `+dirty` with local
    /// changes (what was measured).
    source: Option<String>,
    banner: String,
    backend: String,
    serve_args: Vec<String>,
}

#[derive(Serialize, Default)]
struct ServerLog {
    warnings: u64,
    errors: u64,
    samples: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("linklease-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn default_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let dir = exe.parent().ok_or("own executable has no directory")?;
    Ok(dir.join("linklease"))
}

/// The git revision of the checkout around `binary`, with `+dirty` for local changes.
fn source_revision(binary: &Path) -> Option<String> {
    let dir = binary.parent()?;
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

fn default_out() -> PathBuf {
    // target/<profile>/linklease-bench → target/bench/bench.json.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench").join("bench.json")))
        .unwrap_or_else(|| PathBuf::from("target/bench/bench.json"))
}

// The report's timestamp is the harness's own wall clock, outside the server: the rule that the
// server's Clock is the one reader of the system clock is about the broker, not this tool.
#[allow(clippy::disallowed_methods)]
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What was seen of the server while a scenario ran.
struct Watched {
    /// Peak resident set, KiB.
    peak_kib: Option<u64>,
    /// The server's CPU time used so far, sampled every 100 ms.
    cpu: Vec<(std::time::Instant, Duration)>,
}

impl Watched {
    /// The server's CPU time between `from` and `to`, from the samples nearest to them.
    fn cpu_between(&self, from: std::time::Instant, to: std::time::Instant) -> Option<Duration> {
        let nearest = |at: std::time::Instant| {
            self.cpu
                .iter()
                .min_by_key(|(t, _)| t.max(&at).duration_since(*t.min(&at)))
                .map(|(_, cpu)| *cpu)
        };
        Some(nearest(to)?.saturating_sub(nearest(from)?))
    }
}

/// Runs `f` while tracking the server's peak memory and CPU time.
fn watched<R>(memory: &Memory, f: impl FnOnce() -> R) -> (R, Watched) {
    let reset = memory.reset_peak();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (result, (sampled, cpu)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = memory.rss_kib().unwrap_or(0);
            let mut cpu = Vec::new();
            loop {
                if let Some(used) = memory.cpu_time() {
                    cpu.push((std::time::Instant::now(), used));
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                peak = peak.max(memory.rss_kib().unwrap_or(0));
            }
            (peak, cpu)
        });
        let result = f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (result, sampler.join().unwrap_or_default())
    });
    let hwm = memory.peak_kib();
    let peak = if reset {
        hwm.map(|h| h.max(sampled))
    } else {
        Some(sampled)
    };
    let watched = Watched {
        peak_kib: peak.filter(|p| *p > 0),
        cpu,
    };
    (result, watched)
}

struct Run<'a> {
    settings: &'a Settings,
    ctx: Ctx,
    memory: Memory,
    rows: Vec<Row>,
    seeding: Vec<SeedRecord>,
}

impl Run<'_> {
    fn say(&self, what: &str) {
        eprintln!("[{:>9} grants stored] {what}", self.ctx.stored());
    }

    fn push(&mut self, row: Row) {
        eprintln!(
            "    {}: {:.0} {}/s, p50 {} ms, p99 {} ms, errors {}, 429/503 {}",
            row.name,
            row.per_second,
            row.unit,
            row.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
            row.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
            row.errors,
            row.throttled
        );
        for kind in &row.error_kinds {
            eprintln!(
                "      {} → {} × {}: {}",
                kind.request, kind.status, kind.count, kind.sample
            );
        }
        self.rows.push(row);
    }

    fn seed(&mut self, what: &str, plan: &[Kind]) -> Result<scenarios::Seeded, String> {
        let seeded = scenarios::seed(&self.ctx, plan)?;
        self.record_seed(what, &seeded);
        Ok(seeded)
    }

    fn record_seed(&mut self, what: &str, seeded: &scenarios::Seeded) {
        for (status, count, sample) in &seeded.throttled {
            eprintln!("    {what}: {count} × {status} (retried): {sample}");
        }
        self.seeding.push(SeedRecord {
            what: what.to_owned(),
            grants: seeded.count,
            seconds: report::round(seeded.elapsed.as_secs_f64(), 2),
            grants_per_second: report::round(seeded.rate(), 0),
            throttled: seeded.throttled.iter().map(|(_, n, _)| n).sum(),
        });
    }

    fn measure(
        &mut self,
        name: &str,
        what: &str,
        unit: &'static str,
        connections: usize,
        steps: &[&'static str],
        f: impl FnOnce(&Ctx) -> Measured,
    ) -> Row {
        let stored = self.ctx.stored();
        let (m, seen) = watched(&self.memory, || f(&self.ctx));
        let mut row = Row::from_measured(
            name,
            what,
            unit,
            connections,
            &m,
            seen.peak_kib,
            stored,
            steps,
        );
        if let Some(from) = m.recorded_from
            && m.units > 0
        {
            let cpu = seen.cpu_between(from, from + m.elapsed);
            row.server_cpu_us =
                cpu.map(|c| report::round(c.as_secs_f64() * 1e6 / m.units as f64, 1));
        }
        // Against the ceiling in HTTP requests per second; a batch call is not comparable.
        if !name.contains("batch")
            && let Some(ceiling) = self.rows.iter().find(|r| r.name == "ceiling")
        {
            row.ratio_to_ceiling = report::ratio(
                Some(row.requests_per_second),
                Some(ceiling.requests_per_second),
            );
        }
        row
    }

    /// P1: `GET /v1/lease` with one lease on each of `grants` (read grants), or on `--leases`
    /// fresh read grants.
    fn p1(&mut self, name: &str, grants: Option<Vec<(String, String)>>) -> Result<(), String> {
        let grants = match grants {
            Some(g) => g,
            None => {
                let leases = self.settings.leases;
                self.say(&format!("{name}: {leases} read grants"));
                self.seed(&format!("{name}: read grants"), &vec![Kind::Read; leases])?
                    .of(Kind::Read)
            }
        };
        self.say(&format!("{name}: {} leases", grants.len()));
        let tokens = scenarios::leases(&self.ctx, &grants)?;
        self.say(&format!("{name}: GET /v1/lease"));
        let window = self.settings.window();
        let row = self.measure(
            name,
            &format!("GET /v1/lease ({} leases)", tokens.len()),
            "req",
            self.ctx.connections,
            &[],
            |ctx| scenarios::p1_read(ctx, window, &tokens),
        );
        self.push(row);
        Ok(())
    }

    /// How many flow grants a P2 run needs at `rate` flows/s: half as many again as the
    /// recorded window (and warm-up) takes, plus two per connection.
    fn pool_size(&self, rate: f64, warmup: bool) -> usize {
        let seconds = self.settings.seconds + if warmup { self.settings.warmup } else { 0.0 };
        ((rate.max(10.0) * seconds * 1.5) as usize + 2 * self.ctx.connections).min(1_000_000)
    }

    /// P2: complete flows over `pool` (flow grants, each used once), after an unrecorded
    /// warm-up; or, without a pool, a short calibration run (which is the warm-up) sizes a
    /// pool of fresh flow grants first.
    fn p2(&mut self, name: &str, pool: Option<Vec<(String, String)>>) -> Result<(), String> {
        let settings = self.settings;
        let connections = self.ctx.connections;
        let (pool, window) = match pool {
            Some(pool) => (pool, settings.window()),
            None => {
                let calibrate = (connections * 4).max(256);
                self.say(&format!("{name}: calibrating on {calibrate} flow grants"));
                let warm_pool = self
                    .seed(
                        &format!("{name}: calibration grants"),
                        &vec![Kind::Flow; calibrate],
                    )?
                    .of(Kind::Flow);
                let warm = Window {
                    warmup: Duration::ZERO,
                    measure: Duration::from_secs_f64(settings.warmup.max(0.2)),
                };
                let (calibration, _) = watched(&self.memory, || {
                    scenarios::p2_flows(&self.ctx, warm, &warm_pool)
                });
                if calibration.errors > 0 {
                    let row = Row::from_measured(
                        &format!("{name}-calibration"),
                        "complete partner flows",
                        "flow",
                        connections,
                        &calibration,
                        None,
                        self.ctx.stored(),
                        &scenarios::FLOW_STEPS,
                    );
                    self.push(row);
                }
                let rate = calibration.rate();
                let size = self.pool_size(rate, false);
                self.say(&format!(
                    "{name}: {size} flow grants (calibration: {rate:.0} flows/s)"
                ));
                let pool = self
                    .seed(&format!("{name}: flow grants"), &vec![Kind::Flow; size])?
                    .of(Kind::Flow);
                let window = Window {
                    warmup: Duration::ZERO,
                    measure: settings.window().measure,
                };
                (pool, window)
            }
        };
        self.say(&format!("{name}: complete flows on {} grants", pool.len()));
        let row = self.measure(
            name,
            "exchange → code → otp → GET lease → submit",
            "flow",
            connections,
            &scenarios::FLOW_STEPS,
            |ctx| scenarios::p2_flows(ctx, window, &pool),
        );
        self.push(row);
        Ok(())
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let settings = Settings::of(args);
    for s in &settings.scenarios {
        if !["ceiling", "p1", "p2", "p3", "scale"].contains(&s.as_str()) {
            return Err(format!(
                "unknown scenario {s:?} in --only (ceiling, p1, p2, p3, scale)"
            ));
        }
    }
    let binary = match &args.linklease {
        Some(p) => p.clone(),
        None => default_binary()?,
    };
    if !binary.is_file() {
        return Err(format!(
            "no linklease binary at {} (build it: cargo build --release -p linklease-cli -p linklease-bench)",
            binary.display()
        ));
    }
    if binary.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: {} is a debug build; figures will be meaningless",
            binary.display()
        );
    }
    let out_path = args.out.clone().unwrap_or_else(default_out);
    let machine = Machine::probe();
    let started_at = now_rfc3339();

    eprintln!("starting {} …", binary.display());
    let setup = Setup::new(&Options {
        binary: &binary,
        database_url: args.database_url.as_deref(),
        keep_dir: args.keep_dir,
    })?;
    let creds = setup.seed_credentials()?;
    let mut server = setup.serve(args.rate_limit, &args.serve_arg)?;
    eprintln!("{}", server.banner);
    let ctx = Ctx::new(
        server.addr,
        creds,
        outbox::Outbox::new(server.outbox.clone()),
        settings.connections,
        settings.batch_connections,
        settings.seed_threads,
    );
    let mut run = Run {
        settings: &settings,
        ctx,
        memory: Memory::of(server.pid),
        rows: Vec::new(),
        seeding: Vec::new(),
    };
    let failure = scenarios_in_order(&mut run, &settings, &mut server).err();
    if let Some(f) = &failure {
        eprintln!("the run stopped: {f}");
    }

    // The report.
    let targets = report::targets(&run.rows, server.setup.backend);
    let (warnings, errors, samples) = server.log_problems(10);
    let total_errors: u64 = run.rows.iter().map(|r| r.errors).sum();
    let total_throttled: u64 = run.rows.iter().map(|r| r.throttled).sum();
    let report = Report {
        harness: format!("linklease-bench {}", env!("CARGO_PKG_VERSION")),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at,
        machine,
        server: ServerInfo {
            binary: binary.display().to_string(),
            source: source_revision(&binary),
            banner: server.banner.clone(),
            backend: server.setup.backend.to_owned(),
            serve_args: args.serve_arg.clone(),
        },
        settings: settings.clone(),
        scenarios: run.rows.clone(),
        seeding: run.seeding,
        targets: targets.clone(),
        server_log: ServerLog {
            warnings,
            errors,
            samples,
        },
        errors: total_errors,
        throttled: total_throttled,
        failure: failure.clone(),
    };
    println!();
    println!(
        "linklease-bench on {} ({} CPUs, {}), {} s per scenario, {} connections",
        report.server.backend,
        report.machine.cpus,
        report.machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        settings.seconds,
        settings.connections
    );
    print!("{}", report::table(&run.rows));
    println!();
    println!("targets (issue 6):");
    print!("{}", report::targets_text(&targets));
    if !report.seeding.is_empty() {
        println!();
        println!(
            "seeding (POST /v1/grants/batch, {} threads):",
            settings.seed_threads
        );
        for s in &report.seeding {
            println!(
                "  {:<40} {:>9} grants {:>9.1} s {:>9.0} grants/s{}",
                s.what,
                s.grants,
                s.seconds,
                s.grants_per_second,
                if s.throttled > 0 {
                    format!(", {} calls answered 429/503 and retried", s.throttled)
                } else {
                    String::new()
                }
            );
        }
    }
    let kinds: Vec<(&str, &report::ErrorRow)> = run
        .rows
        .iter()
        .flat_map(|r| r.error_kinds.iter().map(move |k| (r.name.as_str(), k)))
        .collect();
    if !kinds.is_empty() {
        println!();
        println!("errors and throttles:");
        for (scenario, k) in kinds {
            println!(
                "  {scenario}: {} → {} × {}: {}",
                k.request,
                if k.status == 0 {
                    "transport".to_owned()
                } else {
                    k.status.to_string()
                },
                k.count,
                k.sample
            );
        }
    }
    if warnings + errors > 0 {
        println!();
        println!("server log: {warnings} warnings, {errors} errors; e.g.");
        for s in &report.server_log.samples {
            println!("  {s}");
        }
    }
    write_json(&out_path, &report)?;
    println!();
    println!("JSON: {}", out_path.display());
    drop(server);
    Ok(failure.is_none() && total_errors == 0)
}

fn write_json(path: &Path, report: &Report) -> Result<(), String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn check_alive(server: &mut Server) -> Result<(), String> {
    if server.alive() {
        Ok(())
    } else {
        Err(format!(
            "the server exited; the end of its log:\n{}",
            server.log_tail(30)
        ))
    }
}

fn scenarios_in_order(
    run: &mut Run<'_>,
    settings: &Settings,
    server: &mut Server,
) -> Result<(), String> {
    let window = settings.window();
    let connections = run.ctx.connections;

    if settings.runs("ceiling") {
        run.say("ceiling: GET /healthz");
        let row = run.measure("ceiling", "GET /healthz", "req", connections, &[], |ctx| {
            scenarios::ceiling(ctx, window)
        });
        run.push(row);
        check_alive(server)?;
    }

    if settings.runs("p1") || settings.runs("p2") || settings.runs("scale") {
        // The base: about --base-grants grants stored before P1 and P2 (P1's own included).
        let filler = settings
            .base_grants
            .saturating_sub(run.ctx.stored() + settings.leases as u64);
        if filler > 0 {
            run.say(&format!("base: {filler} grants"));
            let filler = usize::try_from(filler).map_err(|e| e.to_string())?;
            run.seed("base grants", &vec![Kind::Filler; filler])?;
        }
    }
    if settings.runs("p1") || settings.runs("scale") {
        run.p1("p1-read", None)?;
        check_alive(server)?;
    }
    if settings.runs("p2") || settings.runs("scale") {
        run.p2("p2-flow", None)?;
        check_alive(server)?;
    }

    if settings.runs("p3") {
        run.say("p3-single: POST /v1/grants");
        let row = run.measure(
            "p3-single",
            "POST /v1/grants",
            "grant",
            connections,
            &[],
            |ctx| scenarios::p3_single(ctx, window),
        );
        run.push(row);
        check_alive(server)?;
        run.say("p3-batch: POST /v1/grants/batch (1,000 per call)");
        let batch_connections = run.ctx.batch_connections;
        let row = run.measure(
            "p3-batch",
            "POST /v1/grants/batch (1,000 per call)",
            "grant",
            batch_connections,
            &[],
            |ctx| scenarios::p3_batch(ctx, window),
        );
        run.push(row);
        check_alive(server)?;
    }

    if settings.runs("scale") {
        // Up to --scale grants, with P1's read grants and P2's flow grants spread evenly among
        // them, so that the scale run reads all over the table and its indexes.
        let missing = usize::try_from(settings.scale.saturating_sub(run.ctx.stored()))
            .map_err(|e| e.to_string())?;
        let base_rate = run
            .rows
            .iter()
            .find(|r| r.name == "p2-flow")
            .map_or(0.0, |r| r.per_second);
        let flows = run.pool_size(base_rate, true);
        let plan = scenarios::spread(missing, settings.leases, flows);
        run.say(&format!(
            "scale: seeding {} grants ({} read and {} flow grants among them)",
            plan.len(),
            settings.leases,
            flows
        ));
        let stored = run.ctx.stored();
        let (seeded, seen) = watched(&run.memory, || scenarios::seed(&run.ctx, &plan));
        let seeded = seeded?;
        let m = Measured {
            units: seeded.count,
            operations: seeded.latencies.len() as u64,
            requests: seeded.latencies.len() as u64,
            elapsed: seeded.elapsed,
            latencies: seeded.latencies.clone(),
            throttled: seeded.throttled.iter().map(|(_, n, _)| n).sum(),
            kinds: seeded
                .throttled
                .iter()
                .map(|(status, count, sample)| load::ErrorKind {
                    what: "POST /v1/grants/batch",
                    status: *status,
                    count: *count,
                    sample: sample.clone(),
                })
                .collect(),
            ..Measured::default()
        };
        let row = Row::from_measured(
            "scale-seed",
            "POST /v1/grants/batch (1,000 per call)",
            "grant",
            run.ctx.seed_threads,
            &m,
            seen.peak_kib,
            stored,
            &[],
        );
        run.record_seed("scale grants", &seeded);
        run.push(row);
        check_alive(server)?;

        run.p1("scale-p1-read", Some(seeded.of(Kind::Read)))?;
        check_alive(server)?;
        compare_last(run, "p1-read");
        run.p2("scale-p2-flow", Some(seeded.of(Kind::Flow)))?;
        check_alive(server)?;
        compare_last(run, "p2-flow");
    }
    Ok(())
}

/// Sets the last row's ratios to the row named `base`.
fn compare_last(run: &mut Run<'_>, base: &str) {
    let base_row = run.rows.iter().find(|r| r.name == base).cloned();
    if let (Some(base_row), Some(row)) = (base_row, run.rows.last_mut()) {
        row.compare_to(&base_row);
    }
}
