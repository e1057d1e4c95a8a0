//! `linklease audit …` and `linklease purge`: verify the tamper-evident log (live or an exported
//! bundle offline), export signed bundles, publish the audit public keys, sign checkpoints, show
//! one grant's timeline, and purge ended grants' payloads. See `docs/AUDIT.md`.

use diesel::connection::SimpleConnection;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use linklease_audit::bundle::{self, Header};
use linklease_audit::{EventRecord, Head, PublicKey, SYSTEM_CHAIN};
use linklease_grant::{GrantId, TenantId, micros, micros::rfc3339};
use linklease_server::DataDir;
use linklease_store::audit::{self, Actor};
use linklease_store::{
    DbConn, PoolOptions, Store, StoreError, audit_keys, grants, purge as purging,
};

use crate::cli::{AuditCommand, JsonFlag, PurgeArgs};
use crate::commands::{Failure, fail, now, print, tampered, tenant};

/// Runs one `audit` verb. Offline verification opens neither the database nor the data dir;
/// the live verification and `show` need no data dir.
pub fn run(
    command: AuditCommand,
    database_url: &str,
    data_dir: &Path,
    pool: &PoolOptions,
) -> Result<(), Failure> {
    if let AuditCommand::Verify {
        bundle: Some(file),
        public_key,
        out,
        ..
    } = &command
    {
        let keys = public_key
            .as_deref()
            .ok_or_else(|| fail("--bundle needs --public-key FILE"))?;
        return verify_bundle(file, keys, *out);
    }
    let store = Store::open_migrated(database_url, pool)?;
    let secrets = || -> Result<_, Failure> {
        Ok(DataDir::open(data_dir)?.secret_keys(&SystemRandom::new())?)
    };
    let rng = SystemRandom::new();
    match command {
        AuditCommand::Verify {
            public_key,
            against,
            out,
            ..
        } => verify_live(&store, &secrets()?, public_key.as_deref(), &against, out),
        AuditCommand::Export {
            tenant: t,
            from,
            to,
            out,
            json: json_out,
        } => {
            let tenant = t.map(|t| tenant(&store, &t)).transpose()?;
            let from = from.map(|s| instant("--from", &s)).transpose()?;
            let to = to.map(|s| instant("--to", &s)).transpose()?;
            if let (Some(from), Some(to)) = (from, to)
                && from >= to
            {
                return Err(fail("--from must be before --to"));
            }
            let window = |t: OffsetDateTime| (micros::to_micros(t), rfc3339(t));
            let secrets = secrets()?;
            let bytes = store.write(|c| {
                audit_keys::export_bundle(
                    c,
                    &secrets,
                    tenant.as_ref().map(|t| t.id),
                    from.map(window),
                    to.map(window),
                    micros::truncate(now()),
                    &rng,
                )
            })?;
            let header = header_of(&bytes).map_err(fail)?;
            let kid = kid_of(&bytes).unwrap_or_default();
            write_private(&out, &bytes)?;
            let scope = match &tenant {
                Some(t) => format!("tenant {}", t.name),
                None => "every chain".into(),
            };
            print(
                json_out,
                json!({"file": out, "events": header.count, "tenant": header.tenant,
                       "from": header.from, "to": header.to, "kid": kid}),
                || {
                    format!(
                        "wrote {} ({scope}) to {}, signed by audit key {kid}",
                        count(header.count, "event", "events"),
                        out.display()
                    )
                },
            );
            Ok(())
        }
        AuditCommand::PublicKey {
            out,
            json: json_out,
        } => {
            let secrets = secrets()?;
            let keys = store.write(|c| {
                audit_keys::ensure(c, &secrets, now(), &rng)?;
                audit_keys::public_keys(c)
            })?;
            let document = json!({ "keys": keys });
            match out {
                None => println!("{document}"),
                Some(file) => {
                    std::fs::write(&file, format!("{document}\n"))?;
                    let active = keys.first().map(|k| k.kid.clone()).unwrap_or_default();
                    print(
                        json_out,
                        json!({"file": file, "keys": keys.len(), "active": active}),
                        || {
                            format!(
                                "wrote {} to {} (active: {active})",
                                count(keys.len() as u64, "audit public key", "audit public keys"),
                                file.display()
                            )
                        },
                    );
                }
            }
            Ok(())
        }
        AuditCommand::Checkpoint { out } => {
            let secrets = secrets()?;
            let (kid, made) = store.write(|c| {
                let now = now();
                let key = audit_keys::ensure(c, &secrets, now, &rng)?;
                Ok((key.kid.clone(), audit_keys::checkpoint(c, &key, now)?))
            })?;
            let heads: Vec<Value> = made
                .iter()
                .map(|c| {
                    json!({"chain": c.head.chain, "chain_seq": c.head.chain_seq,
                           "hash": linklease_audit::chain::hex32::encode(&c.head.hash)})
                })
                .collect();
            print(out, json!({"kid": kid, "checkpoints": heads}), || {
                let mut text = format!(
                    "signed {} with audit key {kid}",
                    count(made.len() as u64, "checkpoint", "checkpoints")
                );
                for c in &made {
                    text.push_str(&format!(
                        "\n  {} at position {}",
                        chain_name(&c.head.chain),
                        c.head.chain_seq
                    ));
                }
                text
            });
            Ok(())
        }
        AuditCommand::Show { grant_id, out } => show(&store, &grant_id, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Reads trusted public keys: one key object, `{"keys": [...]}`, or a list of keys.
fn read_keys(file: &Path) -> Result<Vec<PublicKey>, Failure> {
    let text = std::fs::read(file).map_err(|e| {
        fail(format!(
            "cannot read public key file {}: {e}",
            file.display()
        ))
    })?;
    #[derive(serde::Deserialize)]
    struct Keys {
        keys: Vec<PublicKey>,
    }
    let keys = serde_json::from_slice::<Keys>(&text)
        .map(|k| k.keys)
        .or_else(|_| serde_json::from_slice::<PublicKey>(&text).map(|k| vec![k]))
        .or_else(|_| serde_json::from_slice::<Vec<PublicKey>>(&text))
        .map_err(|_| {
            fail(format!(
                "{} is not an audit public key: expected {{\"kid\", \"algorithm\", \"public_key\"}} \
                 or {{\"keys\": [...]}} as GET /v1/audit/public-key serves",
                file.display()
            ))
        })?;
    if keys.is_empty() {
        return Err(fail(format!("{} holds no key", file.display())));
    }
    if let Some(bad) = keys.iter().find(|k| k.bytes().is_none()) {
        return Err(fail(format!(
            "{}: key {} is malformed (not a 32-byte Ed25519 key matching its kid)",
            file.display(),
            bad.kid
        )));
    }
    Ok(keys)
}

/// `audit verify --bundle FILE --public-key FILE`: signature, every event's hash and link, the
/// count and each chain's end. No database.
fn verify_bundle(file: &Path, key_file: &Path, out: JsonFlag) -> Result<(), Failure> {
    let keys = read_keys(key_file)?;
    let bytes = std::fs::read(file)
        .map_err(|e| fail(format!("cannot read bundle {}: {e}", file.display())))?;
    let verified = bundle::verify(&bytes, &keys).map_err(|e| {
        let mut problem = e.to_string();
        if e == bundle::BundleError::BadSignature
            && let Some(hint) = unsigned_chain_problem(&bytes)
        {
            problem.push_str(&format!("; read without the signature, {hint}"));
        }
        if out.json {
            println!("{}", json!({"intact": false, "problem": problem}));
        }
        tampered(format!(
            "bundle {} does not verify: {problem}",
            file.display()
        ))
    })?;
    let h = &verified.header;
    let chains: Vec<Value> = h
        .ends
        .iter()
        .map(|end| {
            let start = h
                .starts
                .iter()
                .find(|s| s.chain == end.chain)
                .map_or(0, |s| s.chain_seq);
            json!({"chain": end.chain, "first": start + 1, "last": end.chain_seq,
                   "last_hash": linklease_audit::chain::hex32::encode(&end.hash)})
        })
        .collect();
    print(
        out,
        json!({"intact": true, "events": h.count, "tenant": h.tenant, "from": h.from, "to": h.to,
               "created_at": h.created_at, "kid": verified.kid, "chains": chains}),
        || {
            let scope = match &h.tenant {
                Some(t) => format!("tenant {t}"),
                None => "every chain".into(),
            };
            let mut text = format!(
                "bundle intact: {} ({scope}), from {} to {}, made {}, signed by audit key {}",
                count(h.count, "event", "events"),
                h.from.as_deref().unwrap_or("the start"),
                h.to.as_deref().unwrap_or("the end"),
                h.created_at,
                verified.kid
            );
            for end in &h.ends {
                let start = h
                    .starts
                    .iter()
                    .find(|s| s.chain == end.chain)
                    .map_or(0, |s| s.chain_seq);
                text.push_str(&format!(
                    "\n  {}: positions {}..{}, last hash {}",
                    chain_name(&end.chain),
                    start + 1,
                    end.chain_seq,
                    short_hash(&end.hash)
                ));
            }
            text
        },
    );
    Ok(())
}

/// Where the chain of a bundle whose signature failed breaks, if it does: a hint at what was
/// changed (the verdict is the signature's).
fn unsigned_chain_problem(bytes: &[u8]) -> Option<String> {
    let mut lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header: Header = serde_json::from_slice(lines.next()?).ok()?;
    let mut verifier = linklease_audit::ChainVerifier::continuing(header.starts.clone());
    let mut events = lines.collect::<Vec<_>>();
    events.pop(); // the signature line
    for (i, line) in events.iter().enumerate() {
        match serde_json::from_slice::<EventRecord>(line) {
            Ok(event) => {
                if let Err(tamper) = verifier.push(&event) {
                    return Some(tamper.to_string());
                }
            }
            Err(_) => return Some(format!("line {} is not an event", i + 2)),
        }
    }
    verifier
        .finish(&header.ends)
        .err()
        .map(|tamper| tamper.to_string())
}

/// A kept bundle's chain ends, each with the instant of its event (to find it again).
struct KeptEnds {
    file: PathBuf,
    ends: Vec<(Head, i64)>,
}

fn kept_ends(file: &Path, keys: &[PublicKey]) -> Result<KeptEnds, Failure> {
    let bytes = std::fs::read(file)
        .map_err(|e| fail(format!("cannot read bundle {}: {e}", file.display())))?;
    let verified = bundle::verify(&bytes, keys).map_err(|e| {
        tampered(format!(
            "kept bundle {} does not verify: {e}",
            file.display()
        ))
    })?;
    let mut ends = Vec::new();
    for line in bytes.split(|&b| b == b'\n').skip(1) {
        let Ok(event) = serde_json::from_slice::<EventRecord>(line) else {
            continue;
        };
        if verified
            .header
            .ends
            .iter()
            .any(|h| h.chain == event.chain && h.chain_seq == event.chain_seq)
        {
            ends.push((
                Head {
                    chain: event.chain,
                    chain_seq: event.chain_seq,
                    hash: event.hash,
                },
                event.at,
            ));
        }
    }
    Ok(KeptEnds {
        file: file.to_owned(),
        ends,
    })
}

/// Runs `f` in one read-only snapshot of the database: on PostgreSQL a `REPEATABLE READ`
/// transaction, on SQLite a read transaction (WAL snapshot). Verification pages through the log
/// in several queries; without one snapshot an append committing meanwhile (with a lower `seq`
/// than one already read, or moving a head) would look like tampering.
fn in_snapshot<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let begin = match conn {
        DbConn::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        DbConn::Sqlite(_) => "BEGIN DEFERRED",
    };
    conn.batch_execute(begin)?;
    let result = f(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    match (result, conn.batch_execute(end)) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), _) => Err(e),
    }
}

enum Outcome {
    Intact(audit::Report, usize),
    Tampered(String),
}

/// `audit verify` on the live database.
fn verify_live(
    store: &Store,
    secrets: &linklease_grant::SecretKeys,
    key_file: Option<&Path>,
    against: &[PathBuf],
    out: JsonFlag,
) -> Result<(), Failure> {
    let trusted = key_file.map(read_keys).transpose()?;
    let started = Instant::now();
    let kept = if against.is_empty() {
        Vec::new()
    } else {
        let keys = match &trusted {
            Some(keys) => keys.clone(),
            None => store.read(|c| audit_keys::trusted_public_keys(c, secrets))?,
        };
        against
            .iter()
            .map(|file| kept_ends(file, &keys))
            .collect::<Result<Vec<_>, Failure>>()?
    };
    // The snapshot reads only: chain what is queued (PostgreSQL) before it begins.
    store.chain_audit()?;
    let outcome = store.read(|c| {
        in_snapshot(c, |c| {
            let keys = match &trusted {
                Some(keys) => keys.clone(),
                None => audit_keys::trusted_public_keys(c, secrets)?,
            };
            // Name a checkpoint whose signature fails before the chain is read.
            for cp in audit_keys::checkpoints(c)? {
                if !cp.verify(&keys) {
                    let why = if keys.iter().any(|k| k.kid == cp.kid) {
                        "its signature does not match (forged or altered)"
                    } else if trusted.is_some() {
                        "its key is not among the trusted public keys"
                    } else {
                        "its key is not in the database (removed, or the checkpoint is forged)"
                    };
                    return Ok(Outcome::Tampered(format!(
                        "checkpoint of {} at position {} signed by audit key {}: {why}",
                        chain_name(&cp.head.chain),
                        cp.head.chain_seq,
                        cp.kid
                    )));
                }
            }
            let report = match audit::verify(c, &keys)? {
                Ok(report) => report,
                Err(tamper) => return Ok(Outcome::Tampered(tamper.to_string())),
            };
            for bundle in &kept {
                for (end, at) in &bundle.ends {
                    if let Some(problem) = missing_end(c, end, *at)? {
                        return Ok(Outcome::Tampered(format!(
                            "{problem}, as kept in bundle {}: the chain was rewritten after it",
                            bundle.file.display()
                        )));
                    }
                }
            }
            Ok(Outcome::Intact(report, kept.len()))
        })
    })?;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Outcome::Intact(report, bundles) => {
            print(
                out,
                json!({"intact": true, "events": report.events, "unchained": report.unchained,
                       "chains": report.chains, "checkpoints": report.checkpoints,
                       "bundles_matched": bundles, "seconds": seconds}),
                || {
                    let mut text = format!(
                        "audit log intact: {} in {}, {} verified",
                        count(report.events, "event", "events"),
                        count(report.chains as u64, "chain", "chains"),
                        count(
                            report.checkpoints as u64,
                            "signed checkpoint",
                            "signed checkpoints"
                        )
                    );
                    if report.unchained > 0 {
                        text.push_str(&format!(
                            ", {} older than the chain (not covered)",
                            count(report.unchained, "event", "events")
                        ));
                    }
                    if bundles > 0 {
                        text.push_str(&format!(
                            ", matches {}",
                            count(bundles as u64, "kept bundle", "kept bundles")
                        ));
                    }
                    text.push_str(&format!(" ({seconds:.2} s)"));
                    text
                },
            );
            Ok(())
        }
        Outcome::Tampered(problem) => {
            if out.json {
                println!("{}", json!({"intact": false, "problem": problem}));
            }
            Err(tampered(format!("audit log tampered: {problem}")))
        }
    }
}

/// Whether the live log still holds `end` (a kept bundle's last event of a chain) unchanged.
fn missing_end(conn: &mut DbConn, end: &Head, at: i64) -> Result<Option<String>, StoreError> {
    let tenant: Option<TenantId> = if end.chain == SYSTEM_CHAIN {
        None
    } else {
        match end.chain.parse() {
            Ok(t) => Some(t),
            Err(_) => return Ok(Some(format!("chain {} is not a tenant's", end.chain))),
        }
    };
    let (_, events) = audit::window(conn, tenant, Some(at), Some(at.saturating_add(1)))?;
    let found = events
        .iter()
        .find(|e| e.chain == end.chain && e.chain_seq == end.chain_seq);
    Ok(match found {
        Some(e) if e.hash == end.hash => None,
        Some(e) => Some(format!(
            "event {}: {} position {} differs from hash {}",
            e.seq,
            chain_name(&end.chain),
            end.chain_seq,
            short_hash(&end.hash)
        )),
        None => Some(format!(
            "{} position {} (hash {}) is missing",
            chain_name(&end.chain),
            end.chain_seq,
            short_hash(&end.hash)
        )),
    })
}

// ---------------------------------------------------------------------------------------------
// Show

fn show(store: &Store, raw: &str, out: JsonFlag) -> Result<(), Failure> {
    let id: GrantId = raw
        .trim()
        .parse()
        .map_err(|_| fail(format!("{raw:?} is not a grant id")))?;
    let (record, events) = store
        .read(|c| Ok((grants::by_id(c, id)?, audit::for_grant(c, id)?)))
        .map_err(|e| match e {
            StoreError::NotFound => fail(format!("no grant {id}")),
            other => other.into(),
        })?;
    let now = now();
    let status = record.status(now).as_str();
    if out.json {
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({"seq": e.seq, "at": rfc3339(micros::from_micros(e.at)), "kind": e.kind,
                       "lease_id": e.lease_id, "actor_kind": e.actor_kind, "actor_id": e.actor_id,
                       "actor_ip": e.actor_ip, "actor_user_agent": e.actor_user_agent,
                       "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null)})
            })
            .collect();
        println!(
            "{}",
            json!({"grant_id": id, "tenant_id": record.grant.tenant, "status": status,
                   "events": events})
        );
        return Ok(());
    }
    let mut lines = vec![
        format!(
            "grant {id}  tenant {}  status {status}",
            record.grant.tenant
        ),
        format!(
            "created {}  expires {}  uses {}/{}",
            when(micros::to_micros(record.grant.created_at)),
            when(micros::to_micros(record.grant.expires_at)),
            record.state.uses,
            record.grant.max_uses
        ),
        String::new(),
        format!(
            "{:<23}  {:<19}  {:<10}  {:<45}  {:<15}  detail",
            "when (UTC)", "what", "lease", "who", "from"
        ),
    ];
    for e in &events {
        let who = match &e.actor_id {
            Some(id) => format!("{} {id}", e.actor_kind),
            None => e.actor_kind.clone(),
        };
        let lease = e.lease_id.as_deref().map_or_else(|| "-".into(), short_id);
        lines.push(
            format!(
                "{:<23}  {:<19}  {:<10}  {:<45}  {:<15}  {}",
                when(e.at),
                e.kind,
                lease,
                who,
                e.actor_ip.as_deref().unwrap_or("-"),
                short_detail(&e.detail)
            )
            .trim_end()
            .to_owned(),
        );
    }
    lines.push(count(events.len() as u64, "event", "events"));
    println!("{}", lines.join("\n"));
    Ok(())
}

/// `2026-11-25 09:30:00.123`: UTC, never the operator's local zone.
fn when(at: i64) -> String {
    micros::from_micros(at)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
        ))
        .unwrap_or_default()
}

/// The last 8 characters of an id (UUIDv7s of one moment share their first ones).
fn short_id(id: &str) -> String {
    let tail: String = id
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// `key=value` pairs of the detail, long values cut.
fn short_detail(detail: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(detail) else {
        return cut(detail, 80);
    };
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    format!("{}…", &s[..12])
                }
                Value::String(s) => cut(s, 40),
                other => cut(&other.to_string(), 40),
            };
            format!("{k}={v}")
        })
        .collect();
    cut(&parts.join(" "), 100)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Purge

/// How many grants one purge transaction handles.
const PURGE_BATCH: u32 = 200;

/// `purge --ended-before DATE`.
pub fn purge(store: &Store, args: &PurgeArgs) -> Result<(), Failure> {
    let cutoff = instant("--ended-before", &args.ended_before)?;
    let now = now();
    let mut total = purging::Purged::default();
    let mut after = None;
    loop {
        let batch = store.write(|c| {
            purging::ended_before(c, cutoff, now, &Actor::operator(), after, PURGE_BATCH)
        })?;
        total.grants += batch.grants;
        total.payloads += batch.payloads;
        total.submissions += batch.submissions;
        match batch.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    print(
        args.out,
        json!({"ended_before": rfc3339(cutoff), "grants": total.grants,
               "payloads": total.payloads, "submissions": total.submissions}),
        || {
            format!(
                "purged {} that ended before {}: {} removed, {} emptied; hashes and the audit \
                 chain are kept",
                count(total.grants, "grant", "grants"),
                rfc3339(cutoff),
                count(total.payloads, "payload", "payloads"),
                count(total.submissions, "submission body", "submission bodies")
            )
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// RFC 3339, or `YYYY-MM-DD` for midnight UTC.
fn instant(flag: &str, raw: &str) -> Result<OffsetDateTime, Failure> {
    let raw = raw.trim();
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(micros::truncate(t.to_offset(time::UtcOffset::UTC)));
    }
    if let Ok(d) = time::Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        return Ok(d.midnight().assume_utc());
    }
    Err(fail(format!(
        "{flag} must be RFC 3339 (2026-11-25T00:00:00Z) or a date (2026-11-25), not {raw:?}"
    )))
}

/// `1 event`, `2 events`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn chain_name(chain: &str) -> String {
    if chain == SYSTEM_CHAIN {
        "the system chain".into()
    } else {
        format!("chain {chain}")
    }
}

fn short_hash(hash: &[u8; 32]) -> String {
    format!("{}…", &linklease_audit::chain::hex32::encode(hash)[..16])
}

fn header_of(bytes: &[u8]) -> Result<Header, String> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).map_err(|e| format!("the bundle made has no header: {e}"))
}

fn kid_of(bytes: &[u8]) -> Option<String> {
    let last = bytes
        .strip_suffix(b"\n")
        .unwrap_or(bytes)
        .rsplit(|&b| b == b'\n')
        .next()?;
    let line: Value = serde_json::from_slice(last).ok()?;
    line["kid"].as_str().map(str::to_owned)
}

/// Writes `bytes` to `path`, readable by the owner only (0600): a bundle names every grant.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options
            .open(path)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        // An existing file keeps its mode on open: set it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let mut file = options
            .open(path)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    Ok(())
}
