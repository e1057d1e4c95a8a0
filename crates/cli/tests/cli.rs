//! The `linklease` binary, run as an operator would, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

use linklease_store::backend_tests;
use linklease_store::testing::TestDb;

struct Cli<'a> {
    db: &'a TestDb,
    data_dir: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(db: &'a TestDb) -> Self {
        Self {
            db,
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs the binary with the database and data dir given through the environment.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_linklease"))
            .args(args)
            .env("LINKLEASE_DATABASE_URL", &self.db.url)
            .env("LINKLEASE_DATA_DIR", self.data_dir.path())
            .env("LINKLEASE_LOG", "debug")
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    #[track_caller]
    fn fails(&self, args: &[&str], message: &str) {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

fn operator_verbs_work_and_print_json(db: &TestDb) {
    let cli = Cli::new(db);
    let out = cli.run(&["migrate"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "database is up to date"
    );

    let tenant = cli.ok_json(&["tenant", "create", "acme", "--json"]);
    assert_eq!(tenant["name"], "acme");
    cli.fails(&["tenant", "create", "acme"], "already exists");
    cli.fails(&["tenant", "create", "Not Valid!"], "tenant names are");

    let key = cli.ok_json(&[
        "apikey",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "grants:write,grants:read",
        "--json",
    ]);
    let secret = key["key"].as_str().unwrap();
    assert!(secret.starts_with("llk_") && secret.len() == 47);
    assert_eq!(
        key["scopes"],
        serde_json::json!(["grants:write", "grants:read"])
    );
    cli.fails(
        &[
            "apikey",
            "create",
            "--tenant",
            "acme",
            "--scopes",
            "grants:delete",
        ],
        "--scopes must be",
    );
    cli.fails(
        &[
            "apikey",
            "create",
            "--tenant",
            "nobody",
            "--scopes",
            "grants:read",
        ],
        "no tenant",
    );
    // The tenant may be named by id, and --tenant may come from the environment.
    let by_env = Command::new(env!("CARGO_BIN_EXE_linklease"))
        .args(["apikey", "create", "--scopes", "audit:read", "--json"])
        .env("LINKLEASE_DATABASE_URL", &db.url)
        .env("LINKLEASE_DATA_DIR", cli.data_dir.path())
        .env("LINKLEASE_TENANT", tenant["id"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        by_env.status.success(),
        "{}",
        String::from_utf8_lossy(&by_env.stderr)
    );

    let key_id = key["id"].as_str().unwrap();
    let revoked = cli.ok_json(&["apikey", "revoke", key_id, "--json"]);
    assert!(revoked["revoked_at"].is_string());
    let listed = cli.ok_json(&["apikey", "list", "--tenant", "acme", "--json"]);
    let keys = listed["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        !listed.to_string().contains(secret),
        "listing never shows a key"
    );
    cli.fails(&["apikey", "revoke", "not-an-id"], "not an API key id");

    let client = cli.ok_json(&[
        "client",
        "create",
        "--tenant",
        "acme",
        "--name",
        "clinic portal",
        "--allow-ip",
        "10.0.0.0/8,2001:db8::/32",
        "--allow-ip",
        "192.0.2.7",
        "--json",
    ]);
    let client_secret = client["client_secret"].as_str().unwrap();
    assert!(client_secret.starts_with("lls_"));
    assert_eq!(
        client["allowed_ip_blocks"],
        serde_json::json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"])
    );
    cli.fails(
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--allow-ip",
            "10.0.0.1/8",
        ],
        "did you mean 10.0.0.0/8",
    );
    let client_id = client["client_id"].as_str().unwrap();
    let revoked = cli.ok_json(&[
        "client",
        "revoke",
        client_id,
        "--reason",
        "contract ended",
        "--json",
    ]);
    assert_eq!(revoked["revoke_reason"], "contract ended");
    assert!(revoked["revoked_at"].is_string());
    cli.fails(&["client", "revoke", client_id], "--reason");
    let clients = cli.ok_json(&["client", "list", "--tenant", "acme", "--json"]);
    assert_eq!(clients["clients"][0]["revoke_reason"], "contract ended");
    assert!(!clients.to_string().contains(client_secret));

    // Text output shows the secret once, with a warning; stderr (the log) never shows it.
    let text = cli.run(&[
        "apikey",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "grants:read",
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("shown once"));
    let shown = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("llk_"))
        .unwrap();
    for out in [&text, &cli.run(&["client", "list", "--tenant", "acme"])] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(shown) && !stderr.contains(client_secret) && !stderr.contains(secret)
        );
    }
}

/// `serve` on a fresh directory: makes its keys and database, prints its URL, and honours keys
/// the CLI made.
#[test]
fn serve_on_a_fresh_directory_makes_everything_itself() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_linklease"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let tenant = run(&["tenant", "create", "acme"]);
    assert!(
        tenant.status.success(),
        "{}",
        String::from_utf8_lossy(&tenant.stderr)
    );
    let key_out = run(&[
        "apikey",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "grants:write,grants:read",
        "--json",
    ]);
    let key: Value = serde_json::from_slice(&key_out.stdout).unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    assert!(
        dir.path().join("linklease.db").exists(),
        "default database sqlite://linklease.db"
    );
    check_owner_only(&dir.path().join("linklease-data"));

    let mut command = Command::new(env!("CARGO_BIN_EXE_linklease"));
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path());
    let server = common::serve(command);
    let url = server.url.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let health = agent.get(format!("{url}/healthz")).call().unwrap();
    assert_eq!(health.status(), 200);
    let mut created = agent
        .post(format!("{url}/v1/grants"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(r#"{"payload": {"hello": "world"}}"#)
        .unwrap();
    let status = created.status();
    let body = created.body_mut().read_to_string().unwrap();
    drop(server);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(&format!("\"link\":\"{url}/l/")), "{body}");
}

#[cfg(unix)]
fn check_owner_only(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::metadata(data_dir).unwrap().permissions().mode() & 0o777;
    let key = std::fs::metadata(data_dir.join("master.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!((dir, key), (0o700, 0o600));
}

#[cfg(not(unix))]
fn check_owner_only(_: &Path) {}

#[test]
fn bad_urls_fail_clearly_without_echoing_passwords() {
    let out = Command::new(env!("CARGO_BIN_EXE_linklease"))
        .args([
            "tenant",
            "list",
            "--database-url",
            "mysql://root:hunter2@db/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sqlite:// or postgres://"), "{stderr}");
    assert!(!stderr.contains("hunter2"));
}

backend_tests!(operator_verbs_work_and_print_json);

#[test]
fn demo_prints_a_link_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_linklease"))
        .args(["demo", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut link = None;
    let mut key = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("link: ") {
            link = Some(rest.to_owned());
        }
        if let Some(rest) = line.strip_prefix("API key (all scopes): ") {
            key = Some(rest.to_owned());
        }
        if line.contains("listening on") {
            break;
        }
    }
    let (link, key) = (link.expect("a link"), key.expect("a key"));
    assert!(key.starts_with("llk_"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let opened = agent.get(&link).call().unwrap();
    let status = opened.status().as_u16();
    let location = opened
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let listed = agent
        .get(link.split("/l/").next().unwrap().to_owned() + "/v1/grants")
        .header("authorization", format!("Bearer {key}"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!((status, location.as_deref()), (303, Some("/flow")));
    assert_eq!(listed, 200);
}

#[test]
fn limits_may_be_stricter_never_looser() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, message) in [
        ("--otp-tries", "6", "otp_tries must be between 1 and 5"),
        (
            "--flow-ttl-minutes",
            "16",
            "flow_ttl must be between 1 and 15 minutes",
        ),
        (
            "--lease-max-minutes",
            "61",
            "lease_absolute must be between 1 and 60 minutes",
        ),
        ("--otp-resend-seconds", "10", "otp_resend_interval"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_linklease"))
            .args(["serve", "--bind", "127.0.0.1:0", flag, value])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flag}: {stderr}");
    }
}
