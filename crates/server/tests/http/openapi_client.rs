//! `/openapi.json` checked by tools that are not ours: `openapi-spec-validator` must accept the
//! document, `openapi-python-client` must generate a client from it without an error or a
//! warning, and that generated client must carry a partner from a link to a submission against
//! the real server (`openapi_client.py`).
//!
//! The tools live in a Python virtual environment: `LINKLEASE_TEST_VENV`, else
//! `${CARGO_TARGET_DIR:-target}/venv`, made from `.ci/requirements.txt` (by `.ci/run`, or here
//! when missing or out of date). Without Python or PyPI the test is skipped, except under CI,
//! where it fails.

use base64::Engine as _;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use crate::exchange::lab_result;
use crate::harness::TestServer;
use crate::http_tests;

http_tests!(the_document_is_valid_and_a_generated_client_works);

fn the_document_is_valid_and_a_generated_client_works(s: &TestServer) {
    let Some(venv) = venv() else { return };
    let bin = venv.join("bin");
    let work = tempfile::tempdir().unwrap();

    // 1. The document, as a client fetches it.
    let reply = s.request("GET", "/openapi.json", &[], None);
    assert_eq!(reply.status, 200);
    let document = work.path().join("openapi.json");
    std::fs::write(&document, &reply.text).unwrap();

    // 2. Valid OpenAPI.
    let validated = run(Command::new(bin.join("openapi-spec-validator")).arg(&document));
    assert!(
        validated.status.success(),
        "openapi-spec-validator refused the document"
    );

    // 3. A client generated from it, with nothing skipped or guessed. The configuration names
    // the package and maps the audit export's NDJSON, which the generator does not know, to text.
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http");
    let generated = run(Command::new(bin.join("openapi-python-client"))
        .env("PATH", path_with(&bin))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&document)
        .arg("--output-path")
        .arg(work.path().join("linklease_client"))
        .arg("--config")
        .arg(here.join("openapi_client.yml")));
    assert!(generated.status.success(), "openapi-python-client failed");
    let said = text(&generated).to_lowercase();
    assert!(
        !said.contains("warning") && !said.contains("error"),
        "openapi-python-client reported problems"
    );

    // 4. The partner journey through the generated client.
    let (tenant, key) = s.tenant("clinic");
    let (client_id, client_secret) = basic_pair(&s.client(tenant, &["127.0.0.0/8"]));
    let grant = s.create(&key, &lab_result());
    let journey = run(Command::new(bin.join("python"))
        .arg(here.join("openapi_client.py"))
        .env("PYTHONPATH", work.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["--base-url", &s.base, "--outbox"])
        .arg(s.outbox_path())
        .args(["--client-id", &client_id, "--client-secret", &client_secret])
        .args(["--token", grant["token"].as_str().unwrap()])
        .args(["--factor", "1984-03-02"])
        .args(["--grant-id", grant["id"].as_str().unwrap()]));
    assert_eq!(
        journey.status.code(),
        Some(0),
        "the generated client's journey failed"
    );

    // What the script submitted is what the originator reads.
    let id = grant["id"].as_str().unwrap();
    let list = s.get(&format!("/v1/grants/{id}/submissions"), &key);
    assert_eq!(list.status, 200, "{}", list.text);
    let items = list.json()["submissions"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", list.text);
    assert_eq!(
        items[0]["fields"],
        json!({"result_ack": true, "note": "seen"})
    );
}

/// `Basic base64(id:secret)` as the id and the secret.
fn basic_pair(authorization: &str) -> (String, String) {
    let encoded = authorization.strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let pair = String::from_utf8(decoded).unwrap();
    let (id, secret) = pair.split_once(':').unwrap();
    (id.to_owned(), secret.to_owned())
}

/// Runs `command` and shows what it said (visible with `--nocapture`, and on failure).
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    eprintln!("$ {command:?}\n{}\n({})", text(&output), output.status);
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `PATH` with `bin` first (the generator runs `ruff` from the venv after generating).
fn path_with(bin: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(&rest));
    std::env::join_paths(paths).unwrap()
}

/// The venv with the tools of `.ci/requirements.txt`, made once per test binary; `None` (the
/// test is skipped) when it cannot be made outside CI.
fn venv() -> Option<PathBuf> {
    static VENV: OnceLock<Mutex<Option<Result<PathBuf, String>>>> = OnceLock::new();
    let mut made = VENV.get_or_init(|| Mutex::new(None)).lock().unwrap();
    let result = made.get_or_insert_with(make_venv).clone();
    match result {
        Ok(dir) => Some(dir),
        Err(why) if std::env::var_os("CI").is_some() => panic!("Python tools unavailable: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: Python tools unavailable ({why}); CI runs this test");
            None
        }
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var_os("LINKLEASE_TEST_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), |t| root.join(t))
            .join("venv"),
    };
    let requirements = root.join(".ci/requirements.txt");
    let wanted = std::fs::read(&requirements).map_err(|e| format!("{requirements:?}: {e}"))?;
    // `.ci/run` and this test leave a copy of the requirements they installed.
    let marker = dir.join("requirements.txt");
    if std::fs::read(&marker).ok().as_ref() == Some(&wanted) {
        return Ok(dir);
    }
    let step = |command: &mut Command| -> Result<(), String> {
        match command.output() {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(format!("{command:?} failed: {}", text(&output))),
            Err(e) => Err(format!("{command:?}: {e}")),
        }
    };
    if !dir.join("bin/python").exists() {
        step(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    }
    step(
        Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements),
    )?;
    std::fs::write(&marker, &wanted).map_err(|e| format!("{marker:?}: {e}"))?;
    Ok(dir)
}
