//! `linklease audit …` and `linklease purge`, run as an operator and an auditor would, on SQLite
//! and on PostgreSQL: a real history made through `serve`, then the log tampered with raw SQL in
//! every way an attacker with database access could, and verification naming what changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::RunQueryDsl;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::Instance;
use linklease_grant::GrantId;
use linklease_store::testing::TestDb;
use linklease_store::{audit, backend_tests, grants, submissions};

/// The operator's shell: one database, one data dir, one scratch dir for files.
struct Env<'a> {
    db: &'a TestDb,
    data_dir: tempfile::TempDir,
    files: tempfile::TempDir,
}

/// What the set-up made.
struct History {
    /// Used up by its one submission.
    used: GrantId,
    /// Never visited.
    active: GrantId,
    /// The tenant (its chain is named by this id).
    tenant: String,
}

impl<'a> Env<'a> {
    fn new(db: &'a TestDb) -> Self {
        Self {
            db,
            data_dir: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_linklease"));
        cmd.env("LINKLEASE_DATABASE_URL", &self.db.url)
            .env("LINKLEASE_DATA_DIR", self.data_dir.path())
            .env("LINKLEASE_LOG", "warn");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[track_caller]
    fn ok_json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs a verb that must find tampering: exit code 2; returns stderr.
    #[track_caller]
    fn tampered(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        stderr
    }

    /// `audit verify` on the live database must pass.
    #[track_caller]
    fn intact(&self) -> Value {
        let report = self.ok_json(&["audit", "verify", "--json"]);
        assert_eq!(report["intact"], true, "{report}");
        report
    }

    /// Raw SQL on the database, as an attacker with write access would run it.
    fn sql(&self, sql: &str) {
        self.db
            .store
            .write(|c| Ok(diesel::sql_query(sql).execute(c)?))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn postgres(&self) -> bool {
        self.db.store.backend_name() == "postgres"
    }

    /// A byte string as an SQL literal of this backend.
    fn blob(&self, bytes: &[u8]) -> String {
        let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if self.postgres() {
            format!("decode('{digits}', 'hex')")
        } else {
            format!("X'{digits}'")
        }
    }

    fn serve(&self) -> Instance {
        let mut command = self.command();
        command.args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--rate-limit",
            "100000",
            "--partner-rate-limit",
            "100000",
        ]);
        common::serve(command)
    }

    /// A tenant, an API key and a partner client made with the CLI; through a server, a grant
    /// visited, read, written and so used up, and a second grant left active.
    fn history(&self) -> History {
        let tenant = self.ok_json(&["tenant", "create", "clinic", "--json"]);
        let key = self.ok_json(&[
            "apikey",
            "create",
            "--tenant",
            "clinic",
            "--scopes",
            "grants:write,grants:read,submissions:read,audit:read",
            "--json",
        ]);
        let client = self.ok_json(&[
            "client",
            "create",
            "--tenant",
            "clinic",
            "--allow-ip",
            "127.0.0.0/8",
            "--json",
        ]);
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                client["client_id"].as_str().unwrap(),
                client["client_secret"].as_str().unwrap()
            ))
        );
        let bearer = format!("Bearer {}", key["key"].as_str().unwrap());
        let server = self.serve();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let call = |method: &str, path: &str, auth: &str, body: Option<Value>| -> (u16, Value) {
            let url = format!("{}{path}", server.url);
            let mut reply = match body {
                Some(body) => agent
                    .post(&url)
                    .header("authorization", auth)
                    .header("content-type", "application/json")
                    .send(body.to_string())
                    .unwrap(),
                None if method == "GET" => agent
                    .get(&url)
                    .header("authorization", auth)
                    .call()
                    .unwrap(),
                None => agent
                    .post(&url)
                    .header("authorization", auth)
                    .send_empty()
                    .unwrap(),
            };
            let status = reply.status().as_u16();
            let text = reply.body_mut().read_to_string().unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        };
        let (status, used) = call(
            "POST",
            "/v1/grants",
            &bearer,
            Some(json!({
                "payload": {"patient_id": "P-1042", "result": "negative"},
                "permissions": {"write_fields": {"note": {"type": "string"}}},
                "labels": {"case_id": "c-77"}
            })),
        );
        assert_eq!(status, 201, "{used}");
        let (status, started) = call(
            "POST",
            "/v1/exchange",
            &basic,
            Some(json!({"token": used["token"]})),
        );
        assert_eq!(status, 201, "{started}");
        let lease = format!(
            "Bearer {}",
            started["lease"]["lease_token"].as_str().unwrap()
        );
        let (status, read) = call("GET", "/v1/lease", &lease, None);
        assert_eq!(status, 200, "{read}");
        let (status, submitted) = call(
            "POST",
            "/v1/lease/submissions",
            &lease,
            Some(json!({"fields": {"note": "seen, thanks"}})),
        );
        assert_eq!(status, 201, "{submitted}");
        assert_eq!(submitted["grant_status"], "used");
        let (status, active) = call(
            "POST",
            "/v1/grants",
            &bearer,
            Some(json!({"payload": {"patient_id": "P-2001"}})),
        );
        assert_eq!(status, 201, "{active}");
        History {
            used: used["id"].as_str().unwrap().parse().unwrap(),
            active: active["id"].as_str().unwrap().parse().unwrap(),
            tenant: tenant["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Every event as stored: (seq, chain, chain_seq, kind).
    fn events(&self) -> Vec<(i64, String, i64, String)> {
        self.db
            .store
            .read(audit::all)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.chain.unwrap(), e.chain_seq.unwrap(), e.kind))
            .collect()
    }

    /// The events of one chain, in order.
    fn chain(&self, chain: &str) -> Vec<(i64, i64, String)> {
        self.events()
            .into_iter()
            .filter(|(_, c, _, _)| c == chain)
            .map(|(seq, _, pos, kind)| (seq, pos, kind))
            .collect()
    }

    fn export(&self, name: &str, extra: &[&str]) -> PathBuf {
        let file = self.file(name);
        let mut args = vec!["audit", "export", "--out", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let made = self.ok_json(&args);
        assert_eq!(made["file"], file.to_str().unwrap());
        assert!(made["events"].as_u64().unwrap() > 0, "{made}");
        file
    }

    fn public_keys(&self, name: &str) -> PathBuf {
        let file = self.file(name);
        self.ok(&["audit", "public-key", "--out", file.to_str().unwrap()]);
        file
    }

    /// `audit verify --bundle` with a database URL that cannot be reached: offline means offline.
    fn verify_offline(&self, bundle: &Path, keys: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_linklease"))
            .args(["audit", "verify", "--json", "--bundle"])
            .arg(bundle)
            .arg("--public-key")
            .arg(keys)
            .env(
                "LINKLEASE_DATABASE_URL",
                "postgres://nobody@127.0.0.1:1/none",
            )
            .env("LINKLEASE_DATA_DIR", self.files.path().join("no-data-dir"))
            .output()
            .unwrap()
    }
}

/// One chain position of `chain` that has a successor in the chain, and that successor.
fn middle(chain: &[(i64, i64, String)]) -> ((i64, i64), (i64, i64)) {
    let i = chain.len() / 2;
    assert!(i + 1 < chain.len(), "{chain:?}");
    ((chain[i].0, chain[i].1), (chain[i + 1].0, chain[i + 1].1))
}

// ---------------------------------------------------------------------------------------------

fn an_intact_log_verifies_and_show_prints_the_timeline(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let report = env.intact();
    let events = env.events();
    assert_eq!(report["events"], events.len());
    assert_eq!(report["unchained"], 0);
    assert_eq!(report["chains"], 2, "the tenant's and the system chain");
    let text = env.ok(&["audit", "verify"]);
    assert!(
        text.starts_with(&format!(
            "audit log intact: {} events in 2 chains",
            events.len()
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");

    // The timeline: one line per event, in log order, with who and from where.
    let stored: Vec<String> = db
        .store
        .read(|c| audit::for_grant(c, h.used))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        "grant.created",
        "lease.issued",
        "payload.read",
        "submission.accepted",
        "grant.used",
    ] {
        assert!(stored.contains(&kind.to_string()), "{kind} in {stored:?}");
    }
    let shown = env.ok(&["audit", "show", &h.used.to_string()]);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].contains(&h.used.to_string()) && lines[0].contains("status used"));
    let rows: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("20"))
        .collect();
    let kinds: Vec<&str> = rows
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(kinds, stored, "{shown}");
    let issued = rows.iter().find(|l| l.contains("lease.issued")).unwrap();
    assert!(
        issued.contains("client ") && issued.contains("127.0.0.1"),
        "{issued}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with(&format!("{} events", stored.len()))
    );
    assert!(
        !shown.contains("P-1042"),
        "the timeline never shows the payload"
    );

    let json = env.ok_json(&["audit", "show", &h.used.to_string(), "--json"]);
    let json_kinds: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(json_kinds, stored);
    assert_eq!(json["tenant_id"], h.tenant);

    // Unknown and malformed ids fail clearly.
    let unknown = h
        .active
        .to_string()
        .replace(|c: char| c.is_ascii_digit(), "0");
    let out = env.run(&["audit", "show", &unknown]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no grant {unknown}")));
    let out = env.run(&["audit", "show", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\" is not a grant id"));
}

fn an_edited_detail_is_named(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let ((seq, _), _) = middle(&env.chain(&h.tenant));
    env.sql(&format!(
        "UPDATE audit_events SET detail = '{{\"reason\":\"nothing happened\"}}' WHERE seq = {seq}"
    ));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!(
            "event {seq}: its contents do not match its hash (edited)"
        )),
        "{stderr}"
    );
    // --json says so on stdout too.
    let out = env.run(&["audit", "verify", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], false);
    assert!(
        report["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("event {seq}"))
    );

    // Re-hashing the edited event does not help: its successor no longer links to it.
    let (_, (next, _)) = middle(&env.chain(&h.tenant));
    let edited = db
        .store
        .read(audit::all)
        .unwrap()
        .into_iter()
        .find(|e| e.seq == seq)
        .unwrap()
        .record()
        .unwrap();
    env.sql(&format!(
        "UPDATE audit_events SET hash = {} WHERE seq = {seq}",
        env.blob(&edited.expected_hash())
    ));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!("event {next}: chain {}", h.tenant))
            && stderr.contains("(deleted, inserted or reordered)"),
        "{stderr}"
    );
}

fn a_deleted_row_is_named(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let ((seq, pos), (next, _)) = middle(&env.chain(&h.tenant));
    env.sql(&format!("DELETE FROM audit_events WHERE seq = {seq}"));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!(
            "event {next}: chain {} expected position {pos} linked to the previous hash, found {} (deleted, inserted or reordered)",
            h.tenant,
            pos + 1
        )),
        "{stderr}"
    );
}

fn inserted_rows_are_named(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let chain = env.chain(&h.tenant);
    let (last_seq, _, _) = chain.last().unwrap().clone();
    let next = env.events().last().unwrap().0 + 1;
    let overriding = if env.postgres() {
        "OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    // A forged read of the active grant, copied from the chain's last event and placed after it.
    env.sql(&format!(
        "INSERT INTO audit_events (seq, at, tenant_id, grant_id, lease_id, kind, actor_kind, \
         actor_id, actor_ip, actor_user_agent, detail, prev_hash, hash, chain, chain_seq) \
         {overriding} SELECT {next}, at, tenant_id, '{}', lease_id, 'payload.read', 'lease', \
         actor_id, '203.0.113.9', actor_user_agent, '{{}}', hash, hash, chain, chain_seq + 1 \
         FROM audit_events WHERE seq = {last_seq}",
        h.active
    ));
    env.sql(&format!(
        "UPDATE audit_heads SET chain_seq = chain_seq + 1 WHERE chain = '{}'",
        h.tenant
    ));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!("event {next}: its contents do not match its hash")),
        "{stderr}"
    );
    env.sql(&format!("DELETE FROM audit_events WHERE seq = {next}"));
    env.sql(&format!(
        "UPDATE audit_heads SET chain_seq = chain_seq - 1 WHERE chain = '{}'",
        h.tenant
    ));
    env.intact();

    // The same forgery without chain fields, passing itself off as older than the chain.
    env.sql(&format!(
        "INSERT INTO audit_events (seq, at, tenant_id, grant_id, kind, actor_kind, actor_ip, \
         detail) {overriding} VALUES ({next}, 0, '{}', '{}', 'payload.read', 'lease', \
         '203.0.113.9', '{{}}')",
        h.tenant, h.active
    ));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(stderr.contains(&format!("event {next}:")), "{stderr}");
}

fn swapped_rows_are_named(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let ((a, _), (b, _)) = middle(&env.chain(&h.tenant));
    // Each row takes the other's contents (chain fields included): the log's order changes.
    let columns = "at, tenant_id, grant_id, lease_id, kind, actor_kind, actor_id, actor_ip, \
                   actor_user_agent, detail, prev_hash, hash, chain, chain_seq";
    env.sql(&format!(
        "CREATE TABLE tamper_swap AS SELECT seq, {columns} FROM audit_events WHERE seq IN ({a}, {b})"
    ));
    env.sql(&format!(
        "UPDATE audit_events SET chain_seq = NULL WHERE seq IN ({a}, {b})"
    ));
    for (row, from) in [(a, b), (b, a)] {
        env.sql(&format!(
            "UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM tamper_swap WHERE seq = {from}) WHERE seq = {row}"
        ));
    }
    env.sql("DROP TABLE tamper_swap");
    let kinds: Vec<String> = env
        .events()
        .into_iter()
        .filter(|(s, ..)| *s == a || *s == b)
        .map(|(.., k)| k)
        .collect();
    assert_eq!(kinds.len(), 2);
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!("event {a}: chain {}", h.tenant))
            && stderr.contains("(deleted, inserted or reordered)"),
        "{stderr}"
    );
}

fn a_truncated_tail_is_caught_by_the_export_checkpoint(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    // The export signs a checkpoint of every chain's head; the auditor keeps the bundle.
    let bundle = env.export("kept.ndjson", &[]);
    let keys = env.public_keys("keys.json");
    let chain = env.chain(&h.tenant);
    let end = chain.last().unwrap().1;
    let keep = end - 2;
    // The attacker removes the last two events and rewinds the head to match.
    env.sql(&format!(
        "DELETE FROM audit_events WHERE chain = '{}' AND chain_seq > {keep}",
        h.tenant
    ));
    env.sql(&format!(
        "UPDATE audit_heads SET chain_seq = {keep}, hash = (SELECT hash FROM audit_events \
         WHERE chain = '{0}' AND chain_seq = {keep}) WHERE chain = '{0}'",
        h.tenant
    ));
    let stderr = env.tampered(&["audit", "verify"]);
    assert!(
        stderr.contains(&format!(
            "chain {}: ends at position {keep}, its head says {end} (tail removed)",
            h.tenant
        )),
        "{stderr}"
    );

    // Deleting the checkpoints too hides it from the live check alone ...
    env.sql("DELETE FROM audit_checkpoints");
    env.intact();
    // ... but not from the bundle the auditor kept.
    let stderr = env.tampered(&[
        "audit",
        "verify",
        "--public-key",
        keys.to_str().unwrap(),
        "--against",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains(&format!("chain {} position {end}", h.tenant))
            && stderr.contains("is missing")
            && stderr.contains("kept.ndjson"),
        "{stderr}"
    );
    // The kept bundle itself still verifies offline.
    let out = env.verify_offline(&bundle, &keys);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn a_checkpoint_by_an_injected_key_fails_against_trusted_keys(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    env.ok(&["audit", "checkpoint"]);
    let trusted = env.public_keys("keys.json");
    env.ok_json(&[
        "audit",
        "verify",
        "--public-key",
        trusted.to_str().unwrap(),
        "--json",
    ]);
    // The attacker (who may have rewritten the chain) adds a key of their own and signs a
    // checkpoint of the current head with it.
    let rogue = linklease_audit::AuditKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    let head = db
        .store
        .read(audit::heads)
        .unwrap()
        .into_iter()
        .find(|head| head.chain == h.tenant)
        .unwrap();
    let signed = linklease_audit::Checkpoint::sign(head, 1, &rogue);
    let hex = |b: &[u8]| env.blob(b);
    use base64::Engine as _;
    let public = base64::engine::general_purpose::STANDARD
        .decode(&rogue.public().public_key)
        .unwrap();
    env.sql(&format!(
        "INSERT INTO audit_keys (kid, created_at, public_key, sealed_private) VALUES ('{}', 1, {}, {})",
        rogue.kid,
        hex(&public),
        hex(b"x")
    ));
    env.sql(&format!(
        "INSERT INTO audit_checkpoints (at, chain, chain_seq, hash, kid, signature) VALUES \
         (1, '{}', {}, {}, '{}', {})",
        signed.head.chain,
        signed.head.chain_seq,
        hex(&signed.head.hash),
        signed.kid,
        hex(&signed.signature)
    ));
    // Against the auditor's own key file it is refused by its signer alone (against the keys
    // stored in the database it would pass: see docs/AUDIT.md, "Trust anchors").
    let stderr = env.tampered(&["audit", "verify", "--public-key", trusted.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("signed by audit key {}", rogue.kid))
            && stderr.contains("not among the trusted public keys"),
        "{stderr}"
    );
}

fn bundles_verify_offline_flip_a_byte_and_survive_rotation(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let bundle = env.export("all.ndjson", &[]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let keys = env.public_keys("keys.json");
    let out = env.verify_offline(&bundle, &keys);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], true);
    assert_eq!(report["events"], env.events().len());
    let text = env.ok(&[
        "audit",
        "verify",
        "--bundle",
        bundle.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ]);
    assert!(text.starts_with("bundle intact: "), "{text}");

    // One flipped byte anywhere (header, an event, the signature) fails, naming the problem.
    let bytes = std::fs::read(&bundle).unwrap();
    let first_newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    for at in [10, first_newline + 40, bytes.len() / 2, bytes.len() - 10] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let file = env.file("flipped.ndjson");
        std::fs::write(&file, &flipped).unwrap();
        let out = env.verify_offline(&file, &keys);
        assert_eq!(out.status.code(), Some(2), "byte {at}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("does not verify"), "byte {at}: {stderr}");
    }
    // A wrong key file is an error, not a verdict.
    std::fs::write(env.file("bad.json"), "{\"nope\": 1}").unwrap();
    let out = env.verify_offline(&bundle, &env.file("bad.json"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an audit public key"));

    // A tenant's window of the log verifies on its own too.
    let window = env.export(
        "window.ndjson",
        &[
            "--tenant",
            "clinic",
            "--from",
            "2000-01-01",
            "--to",
            "2999-01-01T00:00:00Z",
        ],
    );
    let out = env.verify_offline(&window, &keys);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tenant"], h.tenant);
    assert_eq!(report["events"], env.chain(&h.tenant).len());
    let out = env.run(&["audit", "export", "--out", "x", "--from", "yesterday"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from must be RFC 3339"));

    // Rotation: both kids reported; the old bundle verifies with the keys fetched afterwards,
    // the new bundle is signed by the new key, which the old key file does not know.
    let rotated = env.ok_json(&["keys", "rotate", "--json"]);
    let (kid, audit_kid) = (
        rotated["kid"].as_str().unwrap(),
        rotated["audit_kid"].as_str().unwrap(),
    );
    assert!(!kid.is_empty() && !audit_kid.is_empty() && kid != audit_kid);
    let after = env.public_keys("keys-after.json");
    let listed: Value = serde_json::from_slice(&std::fs::read(&after).unwrap()).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert_eq!(listed["keys"][0]["kid"], audit_kid, "the active key first");
    let out = env.verify_offline(&bundle, &after);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = env.export("fresh.ndjson", &[]);
    let out = env.verify_offline(&fresh, &after);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kid"], audit_kid);
    let out = env.verify_offline(&fresh, &keys);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("signed by unknown key {audit_kid}"))
    );
    // A single key object (not a list) is accepted too.
    std::fs::write(env.file("one.json"), listed["keys"][0].to_string()).unwrap();
    let out = env.verify_offline(&fresh, &env.file("one.json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rotation is on the record, and the live log (checkpoints of both keys) verifies.
    let system: Vec<String> = env.chain("system").into_iter().map(|(.., k)| k).collect();
    assert_eq!(system, ["keys.rotated", "keys.rotated"]);
    let report = env.intact();
    assert!(report["checkpoints"].as_u64().unwrap() >= 4, "{report}");
    let made = env.ok_json(&["audit", "checkpoint", "--json"]);
    assert_eq!(made["kid"], audit_kid);
    assert_eq!(made["checkpoints"].as_array().unwrap().len(), 2);
}

fn purge_empties_ended_grants_and_keeps_the_chain(db: &TestDb) {
    let env = Env::new(db);
    let h = env.history();
    let tenant = h.tenant.parse().unwrap();
    let before: Vec<_> = db
        .store
        .read(|c| submissions::list(c, tenant, Some(h.used), None, 10))
        .unwrap();
    assert_eq!(before.len(), 1);
    assert!(before[0].body.contains("seen, thanks"));

    // Before the use, nothing had ended.
    let none = env.ok_json(&["purge", "--ended-before", "2000-01-01", "--json"]);
    assert_eq!(none["grants"], 0);
    // After it: the used grant only.
    let purged = env.ok_json(&["purge", "--ended-before", "2999-01-01", "--json"]);
    assert_eq!(
        (
            &purged["grants"],
            &purged["payloads"],
            &purged["submissions"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{purged}"
    );
    assert_eq!(purged["ended_before"], "2999-01-01T00:00:00Z");
    assert_eq!(db.store.read(|c| grants::payload(c, h.used)).unwrap(), None);
    let after: Vec<_> = db
        .store
        .read(|c| submissions::list(c, tenant, Some(h.used), None, 10))
        .unwrap();
    assert_eq!(after[0].body, "");
    assert_eq!(
        after[0].body_sha256, before[0].body_sha256,
        "the hash stays"
    );
    let used = db.store.read(|c| grants::by_id(c, h.used)).unwrap();
    assert_eq!(
        used.grant.id, h.used,
        "the grant (and its payload hash) stays"
    );
    assert!(
        db.store
            .read(|c| grants::payload(c, h.active))
            .unwrap()
            .is_some()
    );

    // The chain is untouched and records the purge.
    env.intact();
    let shown = env.ok(&["audit", "show", &h.used.to_string()]);
    let last = shown.lines().rfind(|l| l.starts_with("20")).unwrap();
    assert!(
        last.contains("payload.purged")
            && last.contains("operator")
            && last.contains("payload_removed=true"),
        "{last}"
    );
    // Again: nothing left to do.
    let text = env.ok(&["purge", "--ended-before", "2999-01-01T00:00:00Z"]);
    assert!(
        text.starts_with("purged 0 grants that ended before 2999-01-01T00:00:00Z"),
        "{text}"
    );
    let out = env.run(&["purge", "--ended-before", "last week"]);
    assert_eq!(out.status.code(), Some(1));
}

backend_tests!(
    an_intact_log_verifies_and_show_prints_the_timeline,
    an_edited_detail_is_named,
    a_deleted_row_is_named,
    inserted_rows_are_named,
    swapped_rows_are_named,
    a_truncated_tail_is_caught_by_the_export_checkpoint,
    a_checkpoint_by_an_injected_key_fails_against_trusted_keys,
    bundles_verify_offline_flip_a_byte_and_survive_rotation,
    purge_empties_ended_grants_and_keeps_the_chain,
);
