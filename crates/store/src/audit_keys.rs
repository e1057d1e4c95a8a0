//! The audit signing keys and the signed checkpoints. Keys are sealed under the data dir's
//! master secret like the lease keys; public keys are never deleted, so every bundle and
//! checkpoint ever signed stays verifiable after a rotation.

use diesel::prelude::*;
use ring::rand::SecureRandom;
use time::OffsetDateTime;

use linklease_audit::{AuditKey, Checkpoint, Head, PublicKey};
use linklease_grant::{SecretKeys, micros};

use crate::audit;
use crate::schema::{audit_checkpoints, audit_keys};
use crate::{DbConn, StoreError};

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// The active audit key, making the first one if there is none. Call inside a write transaction.
pub fn ensure(
    conn: &mut DbConn,
    secrets: &SecretKeys,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<AuditKey, StoreError> {
    let active: Option<(String, Vec<u8>)> = audit_keys::table
        .filter(audit_keys::retired_at.is_null())
        .order(audit_keys::created_at.desc())
        .select((audit_keys::kid, audit_keys::sealed_private))
        .get_result(conn)
        .optional()?;
    match active {
        Some((kid, sealed)) => {
            let corrupt = || {
                StoreError::Corrupt(format!(
                    "audit key {kid} does not open with this data dir's master secret"
                ))
            };
            let pkcs8 = secrets.open(&sealed, kid.as_bytes()).ok_or_else(corrupt)?;
            let key = AuditKey::from_pkcs8(pkcs8).map_err(|_| corrupt())?;
            if key.kid == kid {
                Ok(key)
            } else {
                Err(corrupt())
            }
        }
        None => {
            let key = AuditKey::generate(rng).map_err(internal)?;
            insert(conn, &key, secrets, now, rng)?;
            Ok(key)
        }
    }
}

fn insert(
    conn: &mut DbConn,
    key: &AuditKey,
    secrets: &SecretKeys,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<(), StoreError> {
    let sealed = secrets
        .seal(key.pkcs8(), key.kid.as_bytes(), rng)
        .map_err(internal)?;
    let public = key
        .public()
        .bytes()
        .ok_or_else(|| internal("audit public key"))?;
    diesel::insert_into(audit_keys::table)
        .values((
            audit_keys::kid.eq(&key.kid),
            audit_keys::created_at.eq(micros::to_micros(now)),
            audit_keys::public_key.eq(public),
            audit_keys::sealed_private.eq(sealed),
        ))
        .execute(conn)?;
    Ok(())
}

/// Every audit public key ever used: the active one first, then newest first.
///
/// These are whatever the table holds. To *trust* a key, use [`trusted_public_keys`]: someone
/// who can write the database could add a key of their own and sign checkpoints with it.
pub fn public_keys(conn: &mut DbConn) -> Result<Vec<PublicKey>, StoreError> {
    use base64::Engine as _;
    let rows: Vec<(String, Vec<u8>)> = audit_keys::table
        .order((
            audit_keys::retired_at.is_null().desc(),
            audit_keys::created_at.desc(),
            audit_keys::kid.asc(),
        ))
        .select((audit_keys::kid, audit_keys::public_key))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(kid, public)| PublicKey {
            kid,
            algorithm: "Ed25519".into(),
            public_key: base64::engine::general_purpose::STANDARD.encode(public),
        })
        .collect())
}

/// The audit public keys whose sealed private half opens with this data dir's master secret
/// and matches: keys this broker made. A key inserted by someone with only database access is
/// left out, so checkpoints it signed do not verify.
pub fn trusted_public_keys(
    conn: &mut DbConn,
    secrets: &SecretKeys,
) -> Result<Vec<PublicKey>, StoreError> {
    let sealed: Vec<(String, Vec<u8>)> = audit_keys::table
        .select((audit_keys::kid, audit_keys::sealed_private))
        .load(conn)?;
    let genuine: std::collections::HashSet<String> = sealed
        .into_iter()
        .filter_map(|(kid, sealed)| {
            let key = AuditKey::from_pkcs8(secrets.open(&sealed, kid.as_bytes())?).ok()?;
            (key.kid == kid).then_some(kid)
        })
        .collect();
    Ok(public_keys(conn)?
        .into_iter()
        .filter(|k| genuine.contains(&k.kid) && k.bytes().is_some())
        .collect())
}

/// Retires the active audit key and makes a new one. Returns the new kid.
pub fn rotate(
    conn: &mut DbConn,
    secrets: &SecretKeys,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<String, StoreError> {
    diesel::update(audit_keys::table.filter(audit_keys::retired_at.is_null()))
        .set(audit_keys::retired_at.eq(micros::to_micros(now)))
        .execute(conn)?;
    let key = AuditKey::generate(rng).map_err(internal)?;
    insert(conn, &key, secrets, now, rng)?;
    Ok(key.kid)
}

/// Signs the current head of every non-empty chain with `key` and stores the checkpoints.
/// Returns them.
pub fn checkpoint(
    conn: &mut DbConn,
    key: &AuditKey,
    now: OffsetDateTime,
) -> Result<Vec<Checkpoint>, StoreError> {
    let at = micros::to_micros(now);
    let mut made = Vec::new();
    for head in audit::heads(conn)?.into_iter().filter(|h| h.chain_seq > 0) {
        let checkpoint = Checkpoint::sign(head, at, key);
        diesel::insert_into(audit_checkpoints::table)
            .values((
                audit_checkpoints::at.eq(at),
                audit_checkpoints::chain.eq(&checkpoint.head.chain),
                audit_checkpoints::chain_seq.eq(checkpoint.head.chain_seq),
                audit_checkpoints::hash.eq(&checkpoint.head.hash[..]),
                audit_checkpoints::kid.eq(&checkpoint.kid),
                audit_checkpoints::signature.eq(&checkpoint.signature),
            ))
            .execute(conn)?;
        made.push(checkpoint);
    }
    Ok(made)
}

/// at, chain, chain_seq, hash, kid, signature.
type CheckpointRow = (i64, String, i64, Vec<u8>, String, Vec<u8>);

/// Every stored checkpoint.
pub fn checkpoints(conn: &mut DbConn) -> Result<Vec<Checkpoint>, StoreError> {
    let rows: Vec<CheckpointRow> = audit_checkpoints::table
        .order(audit_checkpoints::id.asc())
        .select((
            audit_checkpoints::at,
            audit_checkpoints::chain,
            audit_checkpoints::chain_seq,
            audit_checkpoints::hash,
            audit_checkpoints::kid,
            audit_checkpoints::signature,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(at, chain, chain_seq, hash, kid, signature)| {
            let hash = hash
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("audit checkpoint of {chain}")))?;
            Ok(Checkpoint {
                head: Head {
                    chain,
                    chain_seq,
                    hash,
                },
                at,
                kid,
                signature,
            })
        })
        .collect()
}

/// Makes a signed export bundle of `tenant`'s events (or every chain's) with `from <= at < to`
/// (microseconds; RFC 3339 forms for the header), after signing checkpoints of every chain's
/// current head: the export both carries and pins the log. Call inside a write transaction.
#[allow(clippy::too_many_arguments)]
pub fn export_bundle(
    conn: &mut DbConn,
    secrets: &SecretKeys,
    tenant: Option<linklease_grant::TenantId>,
    from: Option<(i64, String)>,
    to: Option<(i64, String)>,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, StoreError> {
    let key = ensure(conn, secrets, now, rng)?;
    checkpoint(conn, &key, now)?;
    let (starts, events) = audit::window(
        conn,
        tenant,
        from.as_ref().map(|(m, _)| *m),
        to.as_ref().map(|(m, _)| *m),
    )?;
    let header = linklease_audit::bundle::Header {
        format: String::new(),
        tenant: tenant.map(|t| t.to_string()),
        from: from.map(|(_, s)| s),
        to: to.map(|(_, s)| s),
        created_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        count: 0,
        starts,
        ends: Vec::new(),
    };
    linklease_audit::bundle::write(header, &events, &key).map_err(internal)
}
