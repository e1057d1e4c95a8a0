//! What `linklease serve` checks and says as it starts: database files only the owner can read,
//! no courier that sends codes in clear unless asked for, and the log filter's variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod common;

/// The binary run under `umask 022` (the usual one, which makes files 0644 by default) in
/// `dir`, on `dir/linklease.db`.
fn linklease(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_linklease"))
        .args(args)
        .current_dir(dir)
        .env_remove("LINKLEASE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("LINKLEASE_ALLOW_SHARED_FILES")
        .env_remove("LINKLEASE_COURIER_ALLOW_INSECURE")
        .env("LINKLEASE_DATABASE_URL", "sqlite://linklease.db");
    command
}

fn output(mut command: Command) -> Output {
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `serve` that listens: the process and its URL.
struct Serving {
    child: Child,
    url: String,
}

/// Starts serve with stderr kept; returns it once it listens, or its output if it ended first.
fn start(mut command: Command) -> Result<Serving, Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.split_whitespace().find(|w| w.starts_with("http://")) {
        Some(url) if line.contains("listening on") => Ok(Serving {
            url: url.to_owned(),
            child,
        }),
        _ => Err(child.wait_with_output().unwrap()),
    }
}

/// Stops `child` and returns what it logged.
fn stop(serving: Serving) -> String {
    let mut child = serving.child;
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    log
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn fresh_database_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::serve(linklease(dir.path(), &["serve", "--bind", "127.0.0.1:0"]));
    assert!(server.url.starts_with("http://127.0.0.1:"));
    // A request that reads the database, so that a pooled connection holds the WAL open.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for name in ["linklease.db", "linklease.db-wal", "linklease.db-shm"] {
        let path = dir.path().join(name);
        assert!(path.exists(), "{name} exists while serving");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    drop(server);
}

#[cfg(unix)]
#[test]
fn serve_refuses_a_database_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let migrated = output(linklease(dir.path(), &["migrate"]));
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let db = dir.path().join("linklease.db");
    assert_eq!(mode(&db), 0o600);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let Err(refused) = start(linklease(dir.path(), &["serve", "--bind", "127.0.0.1:0"])) else {
        panic!("serve started on a database others can read");
    };
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("linklease.db (mode 0644)"), "{message}");
    assert!(message.contains("chmod 600 linklease.db"), "{message}");
    assert!(message.contains("--allow-shared-files"), "{message}");

    for allowed in [
        linklease(
            dir.path(),
            &["serve", "--bind", "127.0.0.1:0", "--allow-shared-files"],
        ),
        {
            let mut command = linklease(dir.path(), &["serve", "--bind", "127.0.0.1:0"]);
            command.env("LINKLEASE_ALLOW_SHARED_FILES", "true");
            command
        },
    ] {
        let child = start(allowed).unwrap_or_else(|out| panic!("{}", stderr(&out)));
        let log = stop(child);
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("--allow-shared-files"), "{log}");
    }
}

#[test]
fn serve_refuses_a_courier_that_sends_codes_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    for courier in ["webhook:http://127.0.0.1:9/sms", "smtp:smtp://127.0.0.1:9"] {
        let args = [
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--courier",
            courier,
            "--webhook-secret",
            "s3cret",
        ];
        let refused = output(linklease(dir.path(), &args));
        assert!(!refused.status.success(), "{courier}");
        let message = stderr(&refused);
        assert!(message.contains("in clear"), "{courier}: {message}");
        assert!(
            message.contains("--courier-allow-insecure"),
            "{courier}: {message}"
        );
        assert!(!message.contains("s3cret"), "{message}");

        let mut allowed = args.to_vec();
        allowed.push("--courier-allow-insecure");
        let child = start(linklease(dir.path(), &allowed))
            .unwrap_or_else(|out| panic!("{courier}: {}", stderr(&out)));
        let log = stop(child);
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("in clear")),
            "{courier}: {log}"
        );
    }
}

/// Serves until one refused lease token has been logged (at DEBUG), and returns the log.
fn log_of_a_refused_lease(vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = linklease(dir.path(), &["serve", "--bind", "127.0.0.1:0"]);
    command.envs(vars.iter().copied());
    let serving = start(command).unwrap_or_else(|out| panic!("{}", stderr(&out)));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let status = agent
        .get(format!("{}/v1/lease", serving.url))
        .header("authorization", "Bearer not.a.token")
        .call()
        .unwrap()
        .status();
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_millis(200));
    stop(serving)
}

#[test]
fn rust_log_is_read_and_linklease_log_wins() {
    let log = log_of_a_refused_lease(&[("RUST_LOG", "debug")]);
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("lease token refused")),
        "{log}"
    );
    let log = log_of_a_refused_lease(&[("RUST_LOG", "debug"), ("LINKLEASE_LOG", "error")]);
    assert!(!log.contains("DEBUG") && !log.contains("INFO"), "{log}");
    let log = log_of_a_refused_lease(&[]);
    assert!(log.contains("INFO") && !log.contains("DEBUG"), "{log}");

    let help = output(linklease(Path::new("."), &["serve", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "LINKLEASE_LOG",
        "RUST_LOG",
        "--allow-shared-files",
        "--courier-allow-insecure",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}
