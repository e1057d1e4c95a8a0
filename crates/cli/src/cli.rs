//! The command line. Every flag `--some-name` can also come from `LINKLEASE_SOME_NAME`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// linklease: a link-and-lease session broker with immutable grants.
#[derive(Debug, Parser)]
#[command(name = "linklease", version, about)]
pub struct Cli {
    /// Database URL: sqlite://PATH (embedded default) or postgres://… (scale-out).
    #[arg(
        long,
        global = true,
        env = "LINKLEASE_DATABASE_URL",
        default_value = "sqlite://linklease.db"
    )]
    pub database_url: String,

    /// Directory of the broker's keys (created with mode 0700 on first run).
    #[arg(
        long,
        global = true,
        env = "LINKLEASE_DATA_DIR",
        default_value = "linklease-data"
    )]
    pub data_dir: PathBuf,

    /// Largest number of database connections.
    #[arg(
        long,
        global = true,
        env = "LINKLEASE_DB_POOL_SIZE",
        default_value_t = 10
    )]
    pub db_pool_size: u32,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (migrates first).
    ///
    /// Logging goes to stderr. Its filter is LINKLEASE_LOG, or else RUST_LOG, or else info
    /// (env_logger syntax: `debug`, `warn,linklease::access=info`, …); LINKLEASE_LOG wins
    /// when both are set.
    Serve(ServeArgs),
    /// Run the broker with a demo tenant, API key and grant, printing the link to open.
    Demo(ServeArgs),
    /// Apply pending database migrations.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage originator API keys.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Manage partner web-app clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the lease-signing and audit keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Review, verify, export and checkpoint the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Remove the payloads and submission bodies of grants that ended before a date; their
    /// hashes and the audit chain stay (retention without losing evidence).
    Purge(PurgeArgs),
}

/// `keys` verbs.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new lease-signing key and a new audit key. The old lease key verifies the leases
    /// it signed until they have expired (one hour at most); running servers pick the new key
    /// up within 30 s. Old audit public keys are kept for ever, so old bundles still verify.
    Rotate {
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `audit` verbs.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log: the live database (exit 0 when intact, 2 on tampering, naming the
    /// first bad event), or with --bundle an exported bundle offline, touching no database.
    Verify {
        /// Verify this exported bundle offline instead of the database (needs --public-key).
        #[arg(long, env = "LINKLEASE_BUNDLE", requires = "public_key")]
        bundle: Option<PathBuf>,
        /// Audit public keys to trust: one key object, or {"keys": [...]} as served by
        /// GET /v1/audit/public-key or printed by `audit public-key`. On the live database it
        /// replaces the keys stored there: checkpoints signed by any other key are rejected.
        #[arg(long, env = "LINKLEASE_PUBLIC_KEY")]
        public_key: Option<PathBuf>,
        /// A bundle kept earlier (repeatable): the live log must still hold every chain's last
        /// event of that bundle, unchanged. Catches a rewritten tail even when the stored
        /// checkpoints were deleted too.
        #[arg(
            long,
            env = "LINKLEASE_AGAINST",
            value_delimiter = ',',
            conflicts_with = "bundle"
        )]
        against: Vec<PathBuf>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Write a signed bundle (NDJSON, Ed25519) of the audit log; this also signs a checkpoint
    /// of every chain's head.
    Export {
        /// Only this tenant's chain (name or id); default: every chain.
        #[arg(long, env = "LINKLEASE_TENANT")]
        tenant: Option<String>,
        /// Events at or after this instant (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long, env = "LINKLEASE_FROM")]
        from: Option<String>,
        /// Events before this instant (RFC 3339, or YYYY-MM-DD for midnight UTC).
        #[arg(long, env = "LINKLEASE_TO")]
        to: Option<String>,
        /// The file to write (created with mode 0600).
        #[arg(long, env = "LINKLEASE_OUT")]
        out: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print (or write) every audit public key, as {"keys": [...]}; makes the first key if
    /// there is none.
    PublicKey {
        /// Write the keys to this file instead of printing them.
        #[arg(long, env = "LINKLEASE_OUT")]
        out: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Sign a checkpoint of every chain's head now (run it from cron).
    Checkpoint {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// A grant's history and its leases', one line per event, oldest first.
    Show {
        /// The grant id.
        grant_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `purge` flags.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge grants that ended (expired, revoked, locked or used up) before this instant:
    /// RFC 3339, or YYYY-MM-DD for midnight UTC. Grants still active are never touched.
    #[arg(long, env = "LINKLEASE_ENDED_BEFORE")]
    pub ended_before: String,
    #[command(flatten)]
    pub out: JsonFlag,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LINKLEASE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Base URL of links (default: http://BIND).
    #[arg(long, env = "LINKLEASE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Proxies (CIDR) whose X-Forwarded-For is believed; repeatable or comma-separated.
    #[arg(long, env = "LINKLEASE_TRUST_PROXY", value_delimiter = ',')]
    pub trust_proxy: Vec<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "LINKLEASE_WORKERS")]
    pub workers: Option<usize>,
    /// Where one-time codes go: console | outbox:PATH | smtp:URL | webhook:URL.
    #[arg(long, env = "LINKLEASE_COURIER", default_value = "console")]
    pub courier: String,
    /// HMAC-SHA256 key signing webhook courier requests (X-Linklease-Signature).
    #[arg(long, env = "LINKLEASE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Accept a courier that sends codes in clear (webhook:http://…, smtp:smtp://… without
    /// ?tls=required), loopback included; a warning is logged at start-up.
    #[arg(long, env = "LINKLEASE_COURIER_ALLOW_INSECURE")]
    pub courier_allow_insecure: bool,
    /// Start even if group or others may read the SQLite database file or its -wal/-shm
    /// (they hold payloads; by default serve refuses and says to chmod 600 them).
    #[arg(long, env = "LINKLEASE_ALLOW_SHARED_FILES")]
    pub allow_shared_files: bool,
    /// Sender of e-mailed codes.
    #[arg(
        long,
        env = "LINKLEASE_SMTP_FROM",
        default_value = "linklease <linklease@localhost>"
    )]
    pub smtp_from: String,
    /// Requests per minute per client address on /l/ and /flow, and failed partner
    /// authentications per minute per address on /v1/exchange.
    #[arg(long, env = "LINKLEASE_RATE_LIMIT", default_value_t = 60)]
    pub rate_limit: u32,
    /// Requests per minute per partner client on /v1/exchange (all of a partner's users share
    /// its server's address, so partners have a budget of their own).
    #[arg(long, env = "LINKLEASE_PARTNER_RATE_LIMIT", default_value_t = 600)]
    pub partner_rate_limit: u32,
    /// Limits of spec §6: each may be made stricter, never looser.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Spec §6 limits. The defaults are the spec's values and also the loosest allowed.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Minutes a flow (link visit to lease) lives: 1-15.
    #[arg(long, env = "LINKLEASE_FLOW_TTL_MINUTES", default_value_t = 15)]
    pub flow_ttl_minutes: i64,
    /// Minutes a one-time code is valid: 1-10.
    #[arg(long, env = "LINKLEASE_OTP_TTL_MINUTES", default_value_t = 10)]
    pub otp_ttl_minutes: i64,
    /// Wrong tries per code before the flow dies: 1-5.
    #[arg(long, env = "LINKLEASE_OTP_TRIES", default_value_t = 5)]
    pub otp_tries: u32,
    /// Codes sent per flow: 1-3.
    #[arg(long, env = "LINKLEASE_OTP_SENDS", default_value_t = 3)]
    pub otp_sends: u32,
    /// Seconds between two sends of one flow: 30-300.
    #[arg(long, env = "LINKLEASE_OTP_RESEND_SECONDS", default_value_t = 30)]
    pub otp_resend_seconds: i64,
    /// Wrong factors per grant (all flows) that lock it: 1-5.
    #[arg(long, env = "LINKLEASE_FACTOR_FAILURES_TO_LOCK", default_value_t = 5)]
    pub factor_failures_to_lock: u32,
    /// Wrong factors and codes together per grant that lock it: up to 10.
    #[arg(long, env = "LINKLEASE_FAILURES_TO_LOCK", default_value_t = 10)]
    pub failures_to_lock: u32,
    /// Minutes a lease lives at most after issue, refreshes included: 1-60.
    #[arg(long, env = "LINKLEASE_LEASE_MAX_MINUTES", default_value_t = 60)]
    pub lease_max_minutes: i64,
    /// Flows of one grant open at once, on all instances together: 1-20.
    #[arg(long, env = "LINKLEASE_OPEN_FLOWS_PER_GRANT", default_value_t = 20)]
    pub open_flows_per_grant: u32,
    /// Codes sent for one grant in any hour, all its flows together: otp-sends to 10.
    #[arg(long, env = "LINKLEASE_SENDS_PER_GRANT_PER_HOUR", default_value_t = 10)]
    pub sends_per_grant_per_hour: u32,
}

impl LimitArgs {
    /// The limits, checked against the hard caps.
    pub fn limits(&self) -> Result<linklease_lease::FlowLimits, &'static str> {
        use time::Duration;
        let limits = linklease_lease::FlowLimits {
            flow_ttl: Duration::minutes(self.flow_ttl_minutes),
            otp_ttl: Duration::minutes(self.otp_ttl_minutes),
            otp_tries: self.otp_tries,
            otp_sends: self.otp_sends,
            otp_resend_interval: Duration::seconds(self.otp_resend_seconds),
            factor_failures_to_lock: self.factor_failures_to_lock,
            all_failures_to_lock: self.failures_to_lock,
            lease_absolute: Duration::minutes(self.lease_max_minutes),
            open_flows_per_grant: self.open_flows_per_grant,
            sends_per_grant_per_hour: self.sends_per_grant_per_hour,
        };
        limits.check().map(|()| limits)
    }
}

/// Output as one JSON object.
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print one JSON object instead of text.
    #[arg(long, env = "LINKLEASE_JSON")]
    pub json: bool,
}

/// `tenant` verbs.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Unique name: 1-64 of a-z 0-9 - _ .
        name: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `apikey` verbs.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key (printed once).
    Create {
        /// Tenant name or id.
        #[arg(long, env = "LINKLEASE_TENANT")]
        tenant: String,
        /// Comma-separated: grants:write, grants:read, submissions:read, audit:read.
        #[arg(long, env = "LINKLEASE_SCOPES")]
        scopes: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke an API key.
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List a tenant's API keys (never the keys themselves).
    List {
        /// Tenant name or id.
        #[arg(long, env = "LINKLEASE_TENANT")]
        tenant: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `client` verbs.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a partner client (its secret is printed once).
    Create {
        /// Tenant name or id.
        #[arg(long, env = "LINKLEASE_TENANT")]
        tenant: String,
        /// A name for people.
        #[arg(long, env = "LINKLEASE_NAME", default_value = "partner")]
        name: String,
        /// CIDR blocks it may call from; repeatable or comma-separated. None: any address.
        #[arg(long, env = "LINKLEASE_ALLOW_IP", value_delimiter = ',')]
        allow_ip: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a partner client.
    Revoke {
        /// The client id.
        id: String,
        /// Why (recorded with the time).
        #[arg(long, env = "LINKLEASE_REASON")]
        reason: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List a tenant's clients (never their secrets).
    List {
        /// Tenant name or id.
        #[arg(long, env = "LINKLEASE_TENANT")]
        tenant: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}
