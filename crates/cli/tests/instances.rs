//! Several linklease processes on one database: the last allowed use of a grant is taken
//! exactly once, however many submissions race for it, whichever instance they reach; a key
//! rotation reaches every instance. On SQLite one server owns the file: a second is refused,
//! and operators' commands reach the running server at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

mod common;

use common::Instance;
use linklease_store::backend_tests;
use linklease_store::testing::TestDb;

fn linklease(db: &TestDb, data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linklease"));
    cmd.env("LINKLEASE_DATABASE_URL", &db.url)
        .env("LINKLEASE_DATA_DIR", data_dir)
        .env("LINKLEASE_LOG", "warn");
    cmd
}

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serve(db: &TestDb, data_dir: &std::path::Path) -> Instance {
    let mut command = linklease(db, data_dir);
    command.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--rate-limit",
        "1000000",
        "--partner-rate-limit",
        "1000000",
    ]);
    common::serve(command)
}

fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn post(agent: &ureq::Agent, url: &str, auth: &str, body: &Value) -> (u16, Value) {
    let mut reply = agent
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = reply.status().as_u16();
    let text = reply.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An operator's set-up: tenant `clinic`, an API key with every grant and submission scope,
/// and a partner client allowed from loopback. Returns the two `Authorization` values and the
/// client's id.
fn operator_setup(db: &TestDb, dir: &std::path::Path) -> (String, String, String) {
    json_of(linklease(db, dir).args(["tenant", "create", "clinic", "--json"]));
    let key = json_of(linklease(db, dir).args([
        "apikey",
        "create",
        "--tenant",
        "clinic",
        "--scopes",
        "grants:write,grants:read,submissions:read",
        "--json",
    ]));
    let client = json_of(linklease(db, dir).args([
        "client",
        "create",
        "--tenant",
        "clinic",
        "--name",
        "partner",
        "--allow-ip",
        "127.0.0.0/8",
        "--json",
    ]));
    let pair = format!(
        "{}:{}",
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap()
    );
    use base64::Engine as _;
    (
        format!("Bearer {}", key["key"].as_str().unwrap()),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ),
        client["client_id"].as_str().unwrap().to_owned(),
    )
}

fn is_sqlite(db: &TestDb) -> bool {
    db.url.starts_with("sqlite")
}

/// The servers a test runs: two on PostgreSQL, the one a SQLite file allows.
fn instances(db: &TestDb, dir: &std::path::Path) -> Vec<Instance> {
    let count = if is_sqlite(db) { 1 } else { 2 };
    (0..count).map(|_| serve(db, dir)).collect()
}

fn two_instances_take_the_last_use_exactly_once(db: &TestDb) {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let (key, basic, _) = operator_setup(db, dir);

    let instances = instances(db, dir);
    let n = instances.len();
    let agent = new_agent();
    let (status, grant) = post(
        &agent,
        &format!("{}/v1/grants", instances[0].url),
        &key,
        &json!({
            "payload": {"case": "c-1"},
            "max_uses": 3,
            "permissions": {"write_fields": {"note": {"type": "string"}}}
        }),
    );
    assert_eq!(status, 201, "{grant}");
    let grant_id = grant["id"].as_str().unwrap().to_owned();

    // Sixteen leases on the one grant, opened through every instance.
    let leases: Vec<String> = (0..16)
        .map(|i| {
            let url = format!("{}/v1/exchange", instances[i % n].url);
            let (status, started) = post(&agent, &url, &basic, &json!({"token": grant["token"]}));
            assert_eq!(status, 201, "{started}");
            started["lease"]["lease_token"].as_str().unwrap().to_owned()
        })
        .collect();

    // 64 submissions at once, spread over the instances.
    let barrier = Arc::new(Barrier::new(64));
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let barrier = barrier.clone();
            let url = format!("{}/v1/lease/submissions", urls[i % n]);
            let lease = format!("Bearer {}", leases[i % leases.len()]);
            std::thread::spawn(move || {
                let agent = new_agent();
                barrier.wait();
                post(
                    &agent,
                    &url,
                    &lease,
                    &json!({"fields": {"note": format!("n{i}")}}),
                )
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = results.iter().filter(|(s, _)| *s == 201).count();
    let used = results
        .iter()
        .filter(|(s, body)| *s == 410 && body["code"] == "grant_used")
        .count();
    let others: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != 201 && *s != 410)
        .collect();
    assert_eq!(
        others,
        Vec::<&(u16, Value)>::new(),
        "only 201 and 410 grant_used"
    );
    assert_eq!((accepted, used), (3, 61));
    let last = results
        .iter()
        .filter(|(s, body)| *s == 201 && body["grant_status"] == "used")
        .count();
    assert_eq!(last, 1, "exactly one submission took the last use");

    for instance in &instances {
        let mut reply = agent
            .get(format!("{}/v1/grants/{grant_id}", instance.url))
            .header("authorization", &key)
            .call()
            .unwrap();
        let view: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(
            (view["uses"].as_u64(), view["status"].as_str()),
            (Some(3), Some("used"))
        );
        let mut reply = agent
            .get(format!("{}/v1/grants/{grant_id}/submissions", instance.url))
            .header("authorization", &key)
            .call()
            .unwrap();
        let list: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(list["submissions"].as_array().unwrap().len(), 3);
    }
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn get_lease(agent: &ureq::Agent, url: &str, lease: &str) -> u16 {
    agent
        .get(format!("{url}/v1/lease"))
        .header("authorization", format!("Bearer {lease}"))
        .call()
        .unwrap()
        .status()
        .as_u16()
}

fn rotation_reaches_every_instance(db: &TestDb) {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let (key, basic, _) = operator_setup(db, dir);
    let agent = new_agent();
    let first = serve(db, dir);
    let lease_on = |url: &str| -> String {
        let (status, grant) = post(
            &agent,
            &format!("{url}/v1/grants"),
            &key,
            &json!({"payload": {"a": 1}}),
        );
        assert_eq!(status, 201, "{grant}");
        let (status, started) = post(
            &agent,
            &format!("{url}/v1/exchange"),
            &basic,
            &json!({"token": grant["token"]}),
        );
        assert_eq!(status, 201, "{started}");
        started["lease"]["lease_token"].as_str().unwrap().to_owned()
    };
    let old = lease_on(&first.url);

    let rotated = json_of(linklease(db, dir).args(["keys", "rotate", "--json"]));
    let new_kid = rotated["kid"].as_str().unwrap();
    assert_ne!(kid_of(&old), new_kid);

    if is_sqlite(db) {
        // One server per file: the rotation went through the running server's hold, and a
        // restart signs with the new key and still accepts the old lease.
        drop(first);
        let restarted = serve(db, dir);
        let new = lease_on(&restarted.url);
        assert_eq!(kid_of(&new), new_kid);
        assert_eq!(get_lease(&agent, &restarted.url, &old), 200);
        return;
    }
    // A new instance signs with the new key; the old lease still works on it.
    let second = serve(db, dir);
    let new = lease_on(&second.url);
    assert_eq!(kid_of(&new), new_kid);
    assert_eq!(get_lease(&agent, &second.url, &old), 200);
    // The first instance has not reloaded yet, but a token with a kid it does not know makes
    // it read the keys again.
    assert_eq!(get_lease(&agent, &first.url, &new), 200);
    assert_eq!(get_lease(&agent, &first.url, &old), 200);
}

backend_tests!(
    two_instances_take_the_last_use_exactly_once,
    rotation_reaches_every_instance
);

/// A partner lease read through a warm server (its facts copied in memory).
fn warm_lease(agent: &ureq::Agent, url: &str, key: &str, basic: &str) -> String {
    let (status, grant) = post(
        agent,
        &format!("{url}/v1/grants"),
        key,
        &json!({"payload": {"a": 1}}),
    );
    assert_eq!(status, 201, "{grant}");
    let (status, started) = post(
        agent,
        &format!("{url}/v1/exchange"),
        basic,
        &json!({"token": grant["token"]}),
    );
    assert_eq!(status, 201, "{started}");
    let lease = started["lease"]["lease_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(get_lease(agent, url, &lease), 200);
    }
    lease
}

/// SQLite has one server per file: a second `serve` on it is refused with a clear message.
#[test]
fn a_second_server_on_one_sqlite_file_is_refused() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let first = serve(&db, data.path());
    let out = linklease(&db, data.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another linklease process holds this SQLite database"),
        "{stderr}"
    );
    // The first one is unharmed.
    assert_eq!(
        new_agent()
            .get(format!("{}/healthz", first.url))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// An operator's `client revoke` on the running server's SQLite file ends the client's leases
/// at once, although the server answers them from memory: the command holds the server (which
/// then reads the database) until its change is committed, and the copy starts over.
#[test]
fn a_cli_revocation_reaches_the_running_sqlite_server_at_once() {
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let (key, basic, client) = operator_setup(&db, dir);
    let server = serve(&db, dir);
    let agent = new_agent();
    let lease = warm_lease(&agent, &server.url, &key, &basic);
    let out = linklease(&db, dir)
        .args(["client", "revoke", &client, "--reason", "contract ended"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get_lease(&agent, &server.url, &lease), 401);
    // The client's credentials are refused too.
    let (status, grant) = post(
        &agent,
        &format!("{}/v1/grants", server.url),
        &key,
        &json!({"payload": {"a": 2}}),
    );
    assert_eq!(status, 201, "{grant}");
    let (status, refused) = post(
        &agent,
        &format!("{}/v1/exchange", server.url),
        &basic,
        &json!({"token": grant["token"]}),
    );
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("unauthenticated")),
        "{refused}"
    );
}
