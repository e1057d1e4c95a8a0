//! A running server per test, with a clock the test moves and a log the test reads.
#![allow(dead_code)] // Shared by the http and browser test binaries; each uses a part.

use ring::rand::SystemRandom;
use serde_json::Value;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::datetime;

use linklease_grant::{SecretKeys, TenantId};
use linklease_server::{AppState, Clock, ServerConfig};
use linklease_store::api_keys::{self, Scope};
use linklease_store::tenants;
use linklease_store::testing::TestDb;

/// The instant every test starts at.
pub const START: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);
/// The master secret of test servers.
pub const MASTER: [u8; 32] = [42; 32];
/// The public URL test servers put in links.
pub const PUBLIC_URL: &str = "https://links.example.test";

/// A running linklease.
pub struct TestServer {
    pub base: String,
    pub store: linklease_store::Store,
    now: Arc<Mutex<OffsetDateTime>>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
    /// Holds the outbox file the courier writes codes to.
    outbox: tempfile::TempDir,
    /// SQLite: this server owns the file, as `linklease serve` does (the single-node copy of
    /// lease facts is on, so every test also checks it).
    _serving: Option<linklease_store::ServeLock>,
    _chainer: Option<linklease_store::audit_queue::AuditChainer>,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem answer with `status` and `code`, and returns its document.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "status of {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let doc = self.json();
        assert_eq!(doc["code"], code, "{doc}");
        assert_eq!(doc["status"], status);
        assert_eq!(doc["type"], format!("urn:linklease:problem:{code}"));
        assert!(doc["title"].is_string() && doc["detail"].is_string());
        doc
    }
}

impl TestServer {
    /// Starts a server on `db`.
    pub fn start(db: &TestDb) -> Self {
        Self::start_on(db.store.clone())
    }

    /// Starts a server on any store (an unreachable one, say).
    pub fn start_on(store: linklease_store::Store) -> Self {
        Self::start_with(store, 10_000)
    }

    /// Starts a server allowing `per_minute` requests per address on the consumer routes.
    pub fn start_with(store: linklease_store::Store, per_minute: u32) -> Self {
        Self::start_full(store, per_minute, None)
    }

    /// Starts a server delivering codes through `courier` (default: an outbox file).
    pub fn start_full(
        store: linklease_store::Store,
        per_minute: u32,
        courier: Option<std::sync::Arc<dyn linklease_courier::Courier>>,
    ) -> Self {
        Self::start_at(store, (per_minute, 10_000), courier, None)
    }

    /// Starts a server allowing `per_minute` requests per address on the consumer routes (and
    /// failed partner logins per address), and `partner_per_minute` per partner client.
    pub fn start_partner_limited(
        store: linklease_store::Store,
        per_minute: u32,
        partner_per_minute: u32,
    ) -> Self {
        Self::start_at(store, (per_minute, partner_per_minute), None, None)
    }

    /// Starts a server whose links use its own address (for a real browser, whose `Origin`
    /// must match the public URL).
    pub fn start_self_addressed(store: linklease_store::Store) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_at(store, (10_000, 10_000), None, Some(listener))
    }

    fn start_at(
        store: linklease_store::Store,
        (per_minute, partner_per_minute): (u32, u32),
        courier: Option<std::sync::Arc<dyn linklease_courier::Courier>>,
        listener: Option<std::net::TcpListener>,
    ) -> Self {
        capture_logs();
        let serving = store.serve_exclusively().unwrap();
        let chainer = store.start_audit_chainer().unwrap();
        let outbox = tempfile::tempdir().unwrap();
        let courier = courier.unwrap_or_else(|| {
            linklease_courier::from_spec(
                &format!("outbox:{}", outbox.path().join("outbox.jsonl").display()),
                &linklease_courier::CourierOptions::default(),
            )
            .unwrap()
        });
        let now = Arc::new(Mutex::new(START));
        let clock_now = now.clone();
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap());
        let state = AppState::new(
            store.clone(),
            SecretKeys::from_master(&MASTER),
            ServerConfig {
                public_url: match &listener {
                    Some(l) => format!("http://{}", l.local_addr().unwrap()),
                    None => format!("{PUBLIC_URL}/"),
                },
                trust_proxy: Vec::new(),
            },
            clock,
        )
        .with_courier(courier)
        .with_rate_limit(per_minute)
        .with_partner_rate_limit(partner_per_minute);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let running = match listener {
                    Some(listener) => linklease_server::start_on(state, listener, 2),
                    None => linklease_server::start(state, "127.0.0.1:0", 1),
                }
                .expect("bind");
                tx.send((running.addrs[0], running.server.handle()))
                    .unwrap();
                let _ = running.server.await;
            });
        });
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            store,
            now,
            handle,
            thread: Some(thread),
            agent,
            outbox,
            _serving: serving,
            _chainer: chainer,
        }
    }

    /// The file the default courier appends codes to (JSON lines; absent until the first).
    pub fn outbox_path(&self) -> std::path::PathBuf {
        self.outbox.path().join("outbox.jsonl")
    }

    /// Every code the courier delivered, as spec §5 JSON lines.
    pub fn outbox(&self) -> Vec<Value> {
        std::fs::read_to_string(self.outbox_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The last code delivered.
    #[track_caller]
    pub fn last_code(&self) -> String {
        let all = self.outbox();
        all.last().expect("a code was sent")["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A partner client of `tenant` allowed from `blocks`; returns the Basic credentials.
    pub fn client(&self, tenant: TenantId, blocks: &[&str]) -> String {
        use base64::Engine as _;
        let keys = SecretKeys::from_master(&MASTER);
        let blocks: Vec<linklease_grant::IpBlock> =
            blocks.iter().map(|b| b.parse().unwrap()).collect();
        let (client, secret) = self
            .store
            .write(|c| {
                linklease_store::clients::create(
                    c,
                    &keys,
                    tenant,
                    "partner",
                    &blocks,
                    START,
                    &SystemRandom::new(),
                )
            })
            .unwrap();
        let pair = format!("{}:{}", client.id, secret.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// POST JSON with any authorization header value.
    pub fn post_as(&self, path: &str, authorization: &str, body: &Value) -> Reply {
        let bytes = body.to_string();
        self.request(
            "POST",
            path,
            &[
                ("authorization", authorization),
                ("content-type", "application/json"),
            ],
            Some(bytes.as_bytes()),
        )
    }

    /// A request with a lease token (Bearer).
    pub fn lease_call(&self, method: &str, path: &str, lease: &str, body: Option<&Value>) -> Reply {
        let auth = format!("Bearer {lease}");
        match body {
            Some(body) => {
                let bytes = body.to_string();
                self.request(
                    method,
                    path,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    Some(bytes.as_bytes()),
                )
            }
            None => self.request(method, path, &[("authorization", &auth)], None),
        }
    }

    /// Moves the server's clock.
    pub fn advance(&self, by: time::Duration) {
        *self.now.lock().unwrap() += by;
    }

    /// The server's current time.
    pub fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap()
    }

    /// A tenant and an API key with every scope.
    pub fn tenant(&self, name: &str) -> (TenantId, String) {
        let rng = SystemRandom::new();
        let t = self
            .store
            .write(|c| tenants::create(c, name, START, &rng))
            .unwrap();
        (t.id, self.key(t.id, &Scope::ALL))
    }

    /// An API key of `tenant` with `scopes`.
    pub fn key(&self, tenant: TenantId, scopes: &[Scope]) -> String {
        self.key_with_id(tenant, scopes).1
    }

    /// An API key of `tenant` with `scopes`, and its id.
    pub fn key_with_id(
        &self,
        tenant: TenantId,
        scopes: &[Scope],
    ) -> (linklease_grant::ApiKeyId, String) {
        let keys = SecretKeys::from_master(&MASTER);
        let scopes = scopes.iter().copied().collect();
        let (record, secret) = self
            .store
            .write(|c| api_keys::create(c, &keys, tenant, &scopes, START, &SystemRandom::new()))
            .unwrap();
        (record.id, secret.expose().to_owned())
    }

    /// Any request.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let uri = format!("{}{path}", self.base);
        let mut builder = ureq::http::Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let result = match body {
            Some(bytes) => self.agent.run(builder.body(bytes.to_vec()).unwrap()),
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    /// GET with an API key.
    pub fn get(&self, path: &str, key: &str) -> Reply {
        let auth = format!("Bearer {key}");
        self.request("GET", path, &[("authorization", &auth)], None)
    }

    /// POST JSON with an API key.
    pub fn post(&self, path: &str, key: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {key}");
        let bytes = body.to_string();
        self.request(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(bytes.as_bytes()),
        )
    }

    /// Creates a grant and returns the 201 document.
    #[track_caller]
    pub fn create(&self, key: &str, body: &Value) -> Value {
        let reply = self.post("/v1/grants", key, body);
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ =
            std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(false)))
                .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything every server of this test binary logged, at every level. The test's own HTTP
/// client (ureq) logs the URLs it fetches; those lines are the client's, not the server's.
static LOG: Mutex<String> = Mutex::new(String::new());
static INSTALL: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        !metadata.target().starts_with("ureq")
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {} {}\n", record.level(), record.target(), record.args());
        if let Ok(mut log) = LOG.lock() {
            log.push_str(&line);
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    INSTALL.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The captured log so far.
pub fn logs() -> String {
    LOG.lock().unwrap().clone()
}

/// Runs each `fn name(server: &TestServer)` on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! http_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() {
                let db = linklease_store::testing::TestDb::sqlite();
                super::$name(&$crate::harness::TestServer::start(&db));
            } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(db) = linklease_store::testing::TestDb::postgres() {
                    super::$name(&$crate::harness::TestServer::start(&db));
                }
            } )*
        }
    };
}
