//! What each verb does. Secrets are printed once, to stdout, and never logged.

use ring::rand::SystemRandom;
use serde_json::json;
use std::fmt;

use linklease_grant::{ApiKeyId, ClientId, IpBlock, SecretKeys, SecretString, limits};
use linklease_server::{AppState, Clock, DataDir, ServerConfig};
use linklease_store::api_keys::{self, Scope};
use linklease_store::audit::{self, Actor, AuditKind, NewEvent};
use linklease_store::{PoolOptions, Store, StoreError, audit_keys, clients, signing_keys, tenants};

use crate::cli::{
    ApiKeyCommand, Cli, ClientCommand, Command, JsonFlag, KeysCommand, ServeArgs, TenantCommand,
};

/// A failure, said plainly, with the process's exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// The exit code: 1 for an error, 2 when verification found tampering.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        fail(match e {
            StoreError::NotFound => "not found".into(),
            other => other.to_string(),
        })
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        fail(e.to_string())
    }
}

/// An error (exit code 1).
pub(crate) fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

/// Verification found the log or a bundle altered (exit code 2).
pub(crate) fn tampered(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 2,
    }
}

/// Runs one verb.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let pool = PoolOptions {
        max_size: cli.db_pool_size.max(1),
        ..PoolOptions::default()
    };
    match cli.command {
        Command::Serve(args) => serve(&cli.database_url, &cli.data_dir, &pool, args, None),
        Command::Demo(args) => serve(&cli.database_url, &cli.data_dir, &pool, args, Some(demo)),
        Command::Migrate => {
            let applied = linklease_store::migrate::run_pending(
                &linklease_store::Backend::from_url(&cli.database_url)?,
            )?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for name in applied {
                println!("applied {name}");
            }
            Ok(())
        }
        Command::Audit(command) => {
            crate::audit::run(command, &cli.database_url, &cli.data_dir, &pool)
        }
        Command::Purge(args) => {
            let store = Store::open_migrated(&cli.database_url, &pool)?;
            let _hold = store.hold_for_write()?;
            crate::audit::purge(&store, &args)
        }
        command => {
            let store = Store::open_migrated(&cli.database_url, &pool)?;
            // A running SQLite server must not keep facts this command changes.
            let _hold = store.hold_for_write()?;
            let keys = DataDir::open(&cli.data_dir)?.secret_keys(&SystemRandom::new())?;
            admin(&store, &keys, command)
        }
    }
}

#[allow(clippy::disallowed_methods)] // The CLI's clock: operators act now.
pub(crate) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub(crate) fn print(out: JsonFlag, value: serde_json::Value, text: impl FnOnce() -> String) {
    if out.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn scopes_of(raw: &str) -> Result<std::collections::BTreeSet<Scope>, Failure> {
    Scope::parse_list(raw).ok_or_else(|| {
        let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        fail(format!(
            "--scopes must be a comma-separated list of: {}",
            all.join(", ")
        ))
    })
}

fn blocks_of(raw: &[String]) -> Result<Vec<IpBlock>, Failure> {
    if raw.len() > limits::MAX_IP_BLOCKS {
        return Err(fail(format!(
            "at most {} --allow-ip blocks",
            limits::MAX_IP_BLOCKS
        )));
    }
    raw.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<IpBlock>()
                .map_err(|e| fail(format!("--allow-ip {s}: {e}")))
        })
        .collect()
}

pub(crate) fn tenant(store: &Store, id_or_name: &str) -> Result<tenants::Tenant, Failure> {
    store
        .read(|c| tenants::resolve(c, id_or_name))
        .map_err(|e| match e {
            StoreError::NotFound => fail(format!("no tenant {id_or_name:?}")),
            other => other.into(),
        })
}

fn admin(store: &Store, keys: &SecretKeys, command: Command) -> Result<(), Failure> {
    let rng = SystemRandom::new();
    match command {
        Command::Tenant(TenantCommand::Create { name, out }) => {
            let t = store
                .write(|c| tenants::create(c, &name, now(), &rng))
                .map_err(|e| match e {
                    StoreError::Conflict(_) if tenants::valid_name(&name) => {
                        fail(format!("tenant {name:?} already exists"))
                    }
                    StoreError::Conflict(why) => fail(why),
                    other => other.into(),
                })?;
            print(out, json!({"id": t.id, "name": t.name}), || {
                format!("created tenant {} ({})", t.name, t.id)
            });
        }
        Command::Tenant(TenantCommand::List { out }) => {
            let all = store.read(tenants::list)?;
            print(out, json!({"tenants": all}), || {
                all.iter()
                    .map(|t| format!("{}  {}", t.id, t.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Apikey(ApiKeyCommand::Create {
            tenant: t,
            scopes,
            out,
        }) => {
            let scopes = scopes_of(&scopes)?;
            let t = tenant(store, &t)?;
            let (key, secret) =
                store.write(|c| api_keys::create(c, keys, t.id, &scopes, now(), &rng))?;
            let scope_names: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
            print(
                out,
                json!({"id": key.id, "key": secret.expose(), "tenant_id": t.id, "scopes": scope_names}),
                || {
                    format!(
                        "created API key {} for tenant {} with scopes {}\n\n  {}\n\nThis key is shown once; store it now.",
                        key.id,
                        t.name,
                        scope_names.join(","),
                        secret.expose()
                    )
                },
            );
        }
        Command::Apikey(ApiKeyCommand::Revoke { id, out }) => {
            let id: ApiKeyId = id.parse().map_err(|_| fail("not an API key id"))?;
            let key = store
                .write(|c| api_keys::revoke(c, id, now()))
                .map_err(|e| match e {
                    StoreError::NotFound => fail(format!("no API key {id}")),
                    other => other.into(),
                })?;
            print(
                out,
                json!({"id": key.id, "revoked_at": key.revoked_at.map(linklease_server::rfc3339)}),
                || format!("revoked API key {}", key.id),
            );
        }
        Command::Apikey(ApiKeyCommand::List { tenant: t, out }) => {
            let t = tenant(store, &t)?;
            let all = store.read(|c| api_keys::list(c, t.id))?;
            print(out, json!({"api_keys": all}), || {
                all.iter()
                    .map(|k| {
                        let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        format!("{}  {state}  {}", k.id, scopes.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Client(ClientCommand::Create {
            tenant: t,
            name,
            allow_ip,
            out,
        }) => {
            let blocks = blocks_of(&allow_ip)?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(fail("--name must be 1 to 100 characters"));
            }
            let t = tenant(store, &t)?;
            let (client, secret) =
                store.write(|c| clients::create(c, keys, t.id, name, &blocks, now(), &rng))?;
            print(
                out,
                json!({"client_id": client.id, "client_secret": secret.expose(), "tenant_id": t.id,
                       "name": client.name, "allowed_ip_blocks": client.allowed_ip_blocks}),
                || {
                    format!(
                        "created client {} for tenant {}\n\n  client_id:     {}\n  client_secret: {}\n\nThe secret is shown once; store it now.",
                        client.name,
                        t.name,
                        client.id,
                        secret.expose()
                    )
                },
            );
        }
        Command::Client(ClientCommand::Revoke { id, reason, out }) => {
            let id: ClientId = id.parse().map_err(|_| fail("not a client id"))?;
            let reason = reason.trim();
            if reason.is_empty() || reason.chars().count() > limits::MAX_REASON_CHARS {
                return Err(fail(format!(
                    "--reason must be 1 to {} characters",
                    limits::MAX_REASON_CHARS
                )));
            }
            let client = store
                .write(|c| clients::revoke(c, id, reason, now()))
                .map_err(|e| match e {
                    StoreError::NotFound => fail(format!("no client {id}")),
                    other => other.into(),
                })?;
            print(
                out,
                json!({"client_id": client.id, "revoked_at": client.revoked_at.map(linklease_server::rfc3339),
                       "revoke_reason": client.revoke_reason}),
                || format!("revoked client {}", client.id),
            );
        }
        Command::Client(ClientCommand::List { tenant: t, out }) => {
            let t = tenant(store, &t)?;
            let all = store.read(|c| clients::list(c, t.id))?;
            print(out, json!({"clients": all}), || {
                all.iter()
                    .map(|c| {
                        let state = match &c.revoke_reason {
                            Some(why) => format!("revoked ({why})"),
                            None => "active".into(),
                        };
                        let blocks: Vec<String> = c
                            .allowed_ip_blocks
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        format!("{}  {}  {state}  {}", c.id, c.name, blocks.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Keys(KeysCommand::Rotate { out }) => {
            let limits = linklease_lease::FlowLimits::default();
            let now = now();
            let (kid, audit_kid) = store.write(|c| {
                signing_keys::ensure(c, keys, now, &rng)?;
                let kid = signing_keys::rotate(c, keys, &limits, &Actor::operator(), now, &rng)?;
                // The newest audit key is the active one (keys are only ever added).
                let retired: Vec<String> = audit_keys::public_keys(c)?
                    .into_iter()
                    .take(1)
                    .map(|k| k.kid)
                    .collect();
                let audit_kid = audit_keys::rotate(c, keys, now, &rng)?;
                audit::append(
                    c,
                    &NewEvent {
                        at: linklease_grant::micros::truncate(now),
                        tenant: None,
                        grant: None,
                        lease: None,
                        kind: AuditKind::KeysRotated,
                        actor: Actor::operator(),
                        detail: json!({ "audit_kid": audit_kid, "audit_retired": retired }),
                    },
                )?;
                Ok((kid, audit_kid))
            })?;
            print(out, json!({ "kid": kid, "audit_kid": audit_kid }), || {
                format!(
                    "new lease-signing key {kid}; servers use it within 30 s\n\
                     new audit key {audit_kid}; old audit public keys stay published, so old \
                     bundles still verify"
                )
            });
        }
        Command::Serve(_)
        | Command::Demo(_)
        | Command::Migrate
        | Command::Audit(_)
        | Command::Purge(_) => {}
    }
    Ok(())
}

/// Prepares something on the database once the public URL is known (the demo's grant).
type OnReady = fn(&Store, &SecretKeys, &str) -> Result<(), Failure>;

/// The demo grant: the README's example, readable, writable, with a date of birth and a code.
const DEMO_GRANT: &str = include_str!("../../../examples/grant.json");

/// `demo`: a tenant `demo`, a fresh API key and the example grant, printed with its link.
fn demo(store: &Store, keys: &SecretKeys, url: &str) -> Result<(), Failure> {
    let rng = SystemRandom::new();
    let tenant = match store.read(|c| tenants::resolve(c, "demo")) {
        Ok(t) => t,
        Err(StoreError::NotFound) => store.write(|c| tenants::create(c, "demo", now(), &rng))?,
        Err(e) => return Err(e.into()),
    };
    let scopes = Scope::ALL.iter().copied().collect();
    let (key, secret) =
        store.write(|c| api_keys::create(c, keys, tenant.id, &scopes, now(), &rng))?;
    let request: linklease_grant::GrantRequest =
        serde_json::from_str(DEMO_GRANT).map_err(|e| fail(format!("demo grant: {e}")))?;
    let issuer = linklease_grant::Issuer {
        tenant: tenant.id,
        api_key: key.id,
    };
    let issued = request
        .issue(issuer, now(), keys, &rng)
        .map_err(|e| fail(format!("demo grant: {e:?}")))?;
    store.write(|c| linklease_store::grants::insert(c, &issued.grant, &Actor::operator()))?;
    println!("demo tenant: demo");
    println!("API key (all scopes): {}", secret.expose());
    println!("link: {url}/l/{}", issued.token.expose());
    println!("date of birth: 1984-03-02; the one-time code is printed here when it is sent");
    Ok(())
}

fn serve(
    database_url: &str,
    data_dir: &std::path::Path,
    pool: &PoolOptions,
    args: ServeArgs,
    on_ready: Option<OnReady>,
) -> Result<(), Failure> {
    let limits = args
        .limits
        .limits()
        .map_err(|e| fail(format!("limits: {e}")))?;
    let trust_proxy = blocks_of(&args.trust_proxy)
        .map_err(|e| fail(e.message.replace("--allow-ip", "--trust-proxy")))?;
    let courier = linklease_courier::from_spec(
        &args.courier,
        &linklease_courier::CourierOptions {
            smtp_from: args.smtp_from.clone(),
            webhook_secret: args.webhook_secret.clone().map(SecretString::new),
            allow_insecure: args.courier_allow_insecure,
            ..Default::default()
        },
    )
    .map_err(|e| fail(format!("--courier: {e}")))?;
    if args.courier_allow_insecure {
        log::warn!(
            "--courier-allow-insecure: a webhook:http:// or smtp:// courier without TLS sends one-time codes in clear"
        );
    }
    let keys = DataDir::open(data_dir)?.secret_keys(&SystemRandom::new())?;
    crate::files::check_private(database_url, args.allow_shared_files)?;
    let store = Store::open_migrated(database_url, pool)?;
    // SQLite: this server owns the file while it runs (and keeps an exact copy of the lease
    // facts); operators' commands reach it through the lock's socket.
    let _owned = store.serve_exclusively()?;
    // PostgreSQL: audit events are queued with their changes and chained in the background.
    let _chainer = store.start_audit_chainer()?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    actix_web::rt::System::new().block_on(async move {
        let public_url = args.public_url.clone();
        let backend = store.backend_name();
        let provisional = ServerConfig {
            public_url: public_url.clone().unwrap_or_default(),
            trust_proxy,
        };
        // Bind first, so that port 0 resolves before the public URL is derived from it.
        let listener = std::net::TcpListener::bind(&args.bind)
            .map_err(|e| fail(format!("cannot bind {}: {e}", args.bind)))?;
        let addr = listener.local_addr()?;
        let config = ServerConfig {
            public_url: public_url.unwrap_or_else(|| format!("http://{addr}")),
            ..provisional
        };
        let url = config.public_url.clone();
        if let Some(prepare) = on_ready {
            prepare(&store, &keys, &url)?;
        }
        let state = AppState::new(store, keys, config, Clock::system())
            .with_courier(courier)
            .with_rate_limit(args.rate_limit)
            .with_partner_rate_limit(args.partner_rate_limit)
            .with_limits(limits);
        let running = linklease_server::start_on(state, listener, workers)?;
        println!(
            "linklease {} listening on http://{addr} ({backend}); links use {url}",
            env!("CARGO_PKG_VERSION")
        );
        log::info!("serving on {addr} with {workers} workers, backend {backend}");
        running.server.await.map_err(Failure::from)
    })
}
