//! The linklease under test: a real `linklease serve` process on loopback in a temporary
//! directory, its database (a fresh SQLite file, or a fresh PostgreSQL schema that is dropped
//! afterwards), the operator's CLI verbs run against the same database, and its memory.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use serde_json::Value;

use crate::http::Client;

/// Where the database lives.
enum Db {
    /// A file in the temporary directory.
    Sqlite,
    /// A schema made for this run, dropped when the run ends.
    Postgres { admin_url: String, schema: String },
}

/// The credentials the harness seeds: an originator API key and a partner client.
pub struct Credentials {
    /// `Authorization` value of the API key.
    pub api_key: String,
    /// `Authorization` value of the partner client (HTTP Basic).
    pub client: String,
}

/// The database and data directory of one run, and the operator's CLI on them. Dropping it
/// drops the PostgreSQL schema (and deletes the temporary directory unless it was kept).
pub struct Setup {
    binary: PathBuf,
    database_url: String,
    data_dir: PathBuf,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    db: Db,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

/// A running linklease, killed when dropped (before its [`Setup`] is dropped).
pub struct Server {
    child: Child,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// The line the server printed when it started listening.
    pub banner: String,
    /// The server's process id (for `/proc/<pid>/status`).
    pub pid: u32,
    /// The outbox file the courier appends codes to.
    pub outbox: PathBuf,
    /// The server's stderr (its log).
    pub log: PathBuf,
    /// Its database and CLI.
    pub setup: Setup,
}

/// How to start the server.
pub struct Options<'a> {
    /// The `linklease` binary.
    pub binary: &'a Path,
    /// `None`: SQLite in the temporary directory; else a `postgres://` URL (a schema is made).
    pub database_url: Option<&'a str>,
    /// Keep the temporary directory (print its path) instead of deleting it.
    pub keep_dir: bool,
}

impl Setup {
    /// A temporary directory and a fresh, migrated database.
    pub fn new(options: &Options<'_>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("linklease-bench-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let path = dir.path().to_owned();
        let (database_url, db, backend) = match options.database_url {
            None => (
                format!("sqlite://{}", path.join("linklease.db").display()),
                Db::Sqlite,
                "sqlite",
            ),
            Some(url) if url.starts_with("sqlite:") => (url.to_owned(), Db::Sqlite, "sqlite"),
            Some(url) => {
                let (with_schema, schema) = postgres_schema(url)?;
                (
                    with_schema,
                    Db::Postgres {
                        admin_url: url.to_owned(),
                        schema,
                    },
                    "postgres",
                )
            }
        };
        let mut setup = Setup {
            binary: options.binary.to_owned(),
            database_url,
            data_dir: path.join("data"),
            backend,
            db,
            dir: Some(dir),
            path,
        };
        if options.keep_dir
            && let Some(dir) = setup.dir.take()
        {
            eprintln!("keeping {}", dir.path().display());
            let _ = dir.keep();
        }
        setup.cli(&["migrate"])?;
        Ok(setup)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("LINKLEASE_DATABASE_URL", &self.database_url)
            .env("LINKLEASE_DATA_DIR", &self.data_dir)
            .env("LINKLEASE_LOG", "warn")
            .env_remove("LINKLEASE_BIND")
            .env_remove("LINKLEASE_COURIER")
            .env_remove("LINKLEASE_JSON");
        cmd
    }

    /// Runs a CLI verb against the database; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`linklease {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.cli(args)?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "`linklease {}` printed no JSON ({e}): {text}",
                args.join(" ")
            )
        })
    }

    /// The operator's set-up through the CLI: a tenant, an API key with the grant scopes and a
    /// partner client allowed from loopback.
    pub fn seed_credentials(&self) -> Result<Credentials, String> {
        self.cli_json(&["tenant", "create", "bench", "--json"])?;
        let key = self.cli_json(&[
            "apikey",
            "create",
            "--tenant",
            "bench",
            "--scopes",
            "grants:write,grants:read,submissions:read",
            "--json",
        ])?;
        let client = self.cli_json(&[
            "client",
            "create",
            "--tenant",
            "bench",
            "--name",
            "bench",
            "--allow-ip",
            "127.0.0.0/8",
            "--json",
        ])?;
        let field = |v: &Value, name: &str| -> Result<String, String> {
            v[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} in {v}"))
        };
        let pair = format!(
            "{}:{}",
            field(&client, "client_id")?,
            field(&client, "client_secret")?
        );
        Ok(Credentials {
            api_key: format!("Bearer {}", field(&key, "key")?),
            client: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ),
        })
    }

    /// Starts `linklease serve` on `127.0.0.1:0` with the outbox courier and `rate_limit` (per
    /// address and per partner client), and waits until `/healthz` answers.
    pub fn serve(self, rate_limit: u64, serve_args: &[String]) -> Result<Server, String> {
        let outbox = self.path.join("outbox.jsonl");
        let log = self.path.join("serve.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--courier".into(),
            format!("outbox:{}", outbox.display()),
            "--rate-limit".into(),
            rate_limit.to_string(),
            "--partner-rate-limit".into(),
            rate_limit.to_string(),
        ];
        args.extend(serve_args.iter().cloned());
        let mut child = self
            .command()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut server = Server {
            pid: child.id(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            banner: String::new(),
            outbox,
            log,
            setup: self,
        };
        let mut reader = BufReader::new(stdout);
        let mut banner = String::new();
        reader
            .read_line(&mut banner)
            .map_err(|e| format!("reading the server's first line: {e}"))?;
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| {
                format!(
                    "the server did not print its URL (got {banner:?}); its log:\n{}",
                    server.log_tail(20)
                )
            })?;
        server.addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("bad address in {url:?}: {e}"))?;
        server.banner = banner.trim().to_owned();

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = Client::new(server.addr);
        loop {
            match client.get("/healthz", &[]) {
                Ok(r) if r.is_success() => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(r) => return Err(format!("/healthz answered {}", r.status)),
                Err(e) => return Err(format!("/healthz: {e}")),
            }
        }
        Ok(server)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Db::Postgres { admin_url, schema } = &self.db {
            match diesel::PgConnection::establish(admin_url) {
                Ok(mut admin) => {
                    if let Err(e) =
                        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    {
                        eprintln!("could not drop schema {schema}: {e}");
                    }
                }
                Err(e) => eprintln!("could not drop schema {schema}: {e}"),
            }
        }
    }
}

impl Server {
    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Counts of `WARN` and `ERROR` lines in the server's log, and up to `n` distinct ones.
    pub fn log_problems(&self, n: usize) -> (u64, u64, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let (mut warn, mut error) = (0, 0);
        let mut samples: Vec<String> = Vec::new();
        for line in text.lines() {
            let level = if line.contains(" ERROR ") {
                error += 1;
                true
            } else if line.contains(" WARN ") {
                warn += 1;
                true
            } else {
                false
            };
            if level && samples.len() < n {
                // Without the timestamp, so that repeats collapse.
                let tail = line.split_once(' ').map_or(line, |(_, rest)| rest);
                let tail: String = tail.chars().take(300).collect();
                if !samples.contains(&tail) {
                    samples.push(tail);
                }
            }
        }
        (warn, error, samples)
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a fresh schema on the PostgreSQL server of `admin_url` and returns the URL that
/// selects it (libpq `options=-csearch_path=…`, as the store's test databases do).
fn postgres_schema(admin_url: &str) -> Result<(String, String), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let schema = format!(
        "bench_{:x}_{}",
        nanos & 0xffff_ffff_ffff,
        std::process::id()
    );
    let mut admin = diesel::PgConnection::establish(admin_url)
        .map_err(|e| format!("PostgreSQL at {admin_url} is unreachable: {e}"))?;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .map_err(|e| format!("CREATE SCHEMA {schema}: {e}"))?;
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    Ok((
        format!("{admin_url}{sep}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

/// The server's memory, from `/proc/<pid>/status`.
pub struct Memory {
    pid: u32,
}

impl Memory {
    /// Memory of process `pid`.
    pub fn of(pid: u32) -> Self {
        Self { pid }
    }

    fn field(&self, name: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Peak resident set size (`VmHWM`) in KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        self.field("VmHWM:")
    }

    /// CPU time the server has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name (which may hold spaces): utime and stime are the 12th
        // and 13th, in clock ticks of 1/100 s (Linux's fixed USER_HZ).
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_millis((utime + stime) * 10))
    }

    /// Current resident set size (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.field("VmRSS:")
    }

    /// Resets the peak to the current size (`echo 5 > /proc/<pid>/clear_refs`), so that the
    /// next [`Memory::peak_kib`] is the peak of one scenario. `false` if the kernel refused.
    pub fn reset_peak(&self) -> bool {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{}/clear_refs", self.pid))
            .and_then(|mut f| f.write_all(b"5"))
            .is_ok()
    }
}
