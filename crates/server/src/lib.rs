#![doc = include_str!("../README.md")]

pub mod auth;
pub mod body;
pub mod caches;
pub mod client_ip;
pub mod clock;
pub mod data_dir;
pub mod dispatch;
pub mod error;
pub mod exchange;
pub mod group;
pub mod keyring;
pub mod lease_auth;
pub mod lease_ops;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod partner;
pub mod rate_limit;
pub mod routes;
pub mod sweeper;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{App, HttpServer, web};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use linklease_courier::Courier;
use linklease_grant::{IpBlock, SecretKeys};
use linklease_lease::FlowLimits;
use linklease_store::{Store, StoreError};
use ring::rand::SystemRandom;

pub use clock::Clock;
pub use data_dir::DataDir;
pub use error::{ApiError, Code};

/// Settings of a running server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The base of every link, without a trailing slash (`https://links.example.org`).
    pub public_url: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trust_proxy: Vec<IpBlock>,
}

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The hashing keys.
    pub keys: Arc<SecretKeys>,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// The one source of `now`.
    pub clock: Clock,
    /// Request metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Flow and lease limits (spec §6).
    pub limits: Arc<FlowLimits>,
    /// Lease-signing keys.
    pub keyring: Arc<keyring::Keyring>,
    /// Delivers one-time codes through the courier, on threads of its own (see [`dispatch`]).
    pub dispatcher: Arc<dispatch::Dispatcher>,
    /// Per-address limits on the consumer routes.
    pub rate_limit: Arc<rate_limit::RateLimiter>,
    /// Per-client limits on the partner API, and per-address limits on its failed logins.
    pub partner_limits: Arc<rate_limit::PartnerLimits>,
    /// The system's secure randomness.
    pub rng: SystemRandom,
    /// Claims of lease tokens already verified.
    pub tokens: Arc<caches::TokenCache>,
    /// Parsed payloads (immutable).
    pub payloads: Arc<caches::PayloadCache>,
    /// Group commit for read events.
    pub audit_writer: Arc<group::AuditWriter>,
    /// Group read of lease facts (for requests whose other lookups are all in memory).
    pub lease_facts: Arc<group::FactsReader>,
    /// Grant rows (immutable), for the lease check.
    pub grants: Arc<caches::Immutable<linklease_grant::GrantId, linklease_grant::Grant>>,
    /// Leases as issued (their expiry and end are read on every request).
    pub leases:
        Arc<caches::Immutable<linklease_grant::LeaseId, linklease_store::leases::LeaseRecord>>,
    /// Partner clients' address blocks (their revocation is read on every request).
    pub client_blocks: Arc<caches::Immutable<linklease_grant::ClientId, Vec<IpBlock>>>,
}

impl AppState {
    /// A state over `store` with `keys`.
    pub fn new(store: Store, keys: SecretKeys, config: ServerConfig, clock: Clock) -> Self {
        Self {
            keys: Arc::new(keys),
            config: Arc::new(ServerConfig {
                public_url: config.public_url.trim_end_matches('/').to_owned(),
                ..config
            }),
            clock,
            metrics: Arc::default(),
            limits: Arc::new(FlowLimits::default()),
            keyring: Arc::default(),
            dispatcher: Arc::new(dispatch::Dispatcher::new(Arc::new(
                linklease_courier::ConsoleCourier,
            ))),
            rate_limit: Arc::new(rate_limit::RateLimiter::new(rate_limit::DEFAULT_PER_MINUTE)),
            partner_limits: Arc::new(rate_limit::PartnerLimits::new(
                rate_limit::DEFAULT_PARTNER_PER_MINUTE,
                rate_limit::DEFAULT_PER_MINUTE,
            )),
            rng: SystemRandom::new(),
            tokens: Arc::default(),
            payloads: Arc::default(),
            audit_writer: Arc::new(group::audit_writer(store.clone())),
            lease_facts: Arc::new(group::facts_reader(store.clone())),
            grants: Arc::default(),
            leases: Arc::default(),
            client_blocks: Arc::default(),
            store,
        }
    }

    /// The same state delivering codes through `courier`.
    pub fn with_courier(self, courier: Arc<dyn Courier>) -> Self {
        Self {
            dispatcher: Arc::new(dispatch::Dispatcher::new(courier)),
            ..self
        }
    }

    /// The same state under `limits` (checked by the caller with `FlowLimits::check`).
    pub fn with_limits(self, limits: FlowLimits) -> Self {
        Self {
            limits: Arc::new(limits),
            ..self
        }
    }

    /// The same state allowing `per_minute` requests per address on the consumer routes, and
    /// as many failed partner authentications per address.
    pub fn with_rate_limit(self, per_minute: u32) -> Self {
        Self {
            rate_limit: Arc::new(rate_limit::RateLimiter::new(per_minute)),
            partner_limits: Arc::new(rate_limit::PartnerLimits::new(
                self.partner_limits.per_client(),
                per_minute,
            )),
            ..self
        }
    }

    /// The same state allowing `per_minute` partner API requests per client.
    pub fn with_partner_rate_limit(self, per_minute: u32) -> Self {
        Self {
            partner_limits: Arc::new(rate_limit::PartnerLimits::new(
                per_minute,
                self.rate_limit.per_minute(),
            )),
            ..self
        }
    }

    /// Grant `id` as stored (it never changes: from the cache, read on a miss). Blocks on a
    /// miss. Its state is not part of it: read that where it is decided on.
    pub fn grant(
        &self,
        id: linklease_grant::GrantId,
    ) -> Result<Arc<linklease_grant::Grant>, StoreError> {
        self.grants.get_or(id, || {
            self.store
                .read(|c| linklease_store::grants::for_lease(c, id))
                .map(|r| r.grant)
        })
    }
}

/// Runs `f` with the store on the blocking thread pool, never on an async worker.
pub async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, StoreError>
where
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let store = state.store.clone();
    web::block(move || f(&store))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
}

/// Runs `f` with the whole state on the blocking thread pool: for service code (the exchange,
/// lease operations) that makes several store calls and may wait on a courier.
pub async fn run<T, F>(state: &web::Data<AppState>, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let state = state.clone();
    web::block(move || f(&state))
        .await
        .map_err(ApiError::unavailable)?
}

pub use linklease_grant::micros::rfc3339;

/// Blocking threads per worker (actix's default is 512 shared by the workers). Store calls are
/// what they run, and a store has few connections (`--db-pool-size`, 10 by default) and one
/// SQLite writer, so more threads only wait; each thread that allocates can also pin a malloc
/// arena, which is how peak memory grew past 150 MB under sustained batch creation.
pub const BLOCKING_THREADS_PER_WORKER: usize = 16;

/// A running server and the addresses it listens on.
pub struct Running {
    /// The server future's handle: await it to run, or use `handle()` to stop it.
    pub server: Server,
    /// Bound addresses (useful with port 0).
    pub addrs: Vec<SocketAddr>,
}

/// Binds `bind` and returns the server, not yet awaited.
pub fn start(state: AppState, bind: &str, workers: usize) -> std::io::Result<Running> {
    start_on(state, std::net::TcpListener::bind(bind)?, workers)
}

/// Serves on an already bound listener; returns the server, not yet awaited.
pub fn start_on(
    state: AppState,
    listener: std::net::TcpListener,
    workers: usize,
) -> std::io::Result<Running> {
    let data = web::Data::new(state);
    sweeper::start(std::sync::Arc::downgrade(&data.clone().into_inner()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(around_request))
            .configure(routes::configure)
            .default_service(web::to(routes::no_route))
    })
    .workers(workers.max(1))
    .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
    .listen(listener)?;
    let addrs = server.addrs();
    Ok(Running {
        server: server.run(),
        addrs,
    })
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Headers every response carries. Pages that render HTML set their own, looser CSP first.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Request id, security headers, access log, error causes and metrics, for every request.
async fn around_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = format!(
        "{:x}-{:x}",
        std::process::id(),
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    if let Some(cause) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .and_then(ApiError::cause)
    {
        // A 4xx (a conflict, say) is the client's doing and clients can repeat it at will:
        // logged below ERROR so that they cannot flood the error log. ERROR is for 5xx causes.
        let level = if status >= 500 {
            log::Level::Error
        } else {
            log::Level::Debug
        };
        log::log!(target: "linklease::error", level, "rid={request_id} {method} {route} {status}: {cause}");
    }
    let headers = res.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state
            .metrics
            .observe(method_name(&method), &route, status, elapsed.as_secs_f64());
    }
    log::info!(
        target: "linklease::access",
        "rid={request_id} {method} {route} {status} {:.1}ms",
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(res)
}

fn method_name(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
