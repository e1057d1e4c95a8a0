//! Lease-signing keys, shared by every instance through the database. Private keys are stored
//! sealed (AES-256-GCM) under a key derived from the data dir's master secret, bound to their
//! kid: a database dump alone cannot sign a lease.

use diesel::prelude::*;
use ring::rand::SecureRandom;
use time::OffsetDateTime;

use linklease_grant::{SecretKeys, micros};
use linklease_lease::{FlowLimits, KeySet, SigningKey};

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::schema::signing_keys;
use crate::{DbConn, StoreError};

/// Every stored key, opened with `secrets`.
pub fn load(conn: &mut DbConn, secrets: &SecretKeys) -> Result<Vec<SigningKey>, StoreError> {
    let rows: Vec<(String, i64, Option<i64>, Vec<u8>)> = signing_keys::table
        .select((
            signing_keys::kid,
            signing_keys::created_at,
            signing_keys::retired_at,
            signing_keys::sealed_private,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(kid, created_at, retired_at, sealed)| {
            let corrupt = || {
                StoreError::Corrupt(format!(
                    "signing key {kid} does not open with this data dir's master secret"
                ))
            };
            let pkcs8 = secrets.open(&sealed, kid.as_bytes()).ok_or_else(corrupt)?;
            let key = SigningKey::from_pkcs8(
                pkcs8,
                micros::from_micros(created_at),
                retired_at.map(micros::from_micros),
            )
            .map_err(|_| corrupt())?;
            if key.kid == kid {
                Ok(key)
            } else {
                Err(corrupt())
            }
        })
        .collect()
}

fn insert(
    conn: &mut DbConn,
    key: &SigningKey,
    secrets: &SecretKeys,
    rng: &dyn SecureRandom,
) -> Result<(), StoreError> {
    let sealed = secrets
        .seal(key.pkcs8(), key.kid.as_bytes(), rng)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(&key.kid),
            signing_keys::created_at.eq(micros::to_micros(key.created_at)),
            signing_keys::public_key.eq(&key.public[..]),
            signing_keys::sealed_private.eq(sealed),
        ))
        .execute(conn)?;
    Ok(())
}

/// The key set if it has a current (unretired) key; `None` means [`ensure`] must make one.
/// Reads only.
pub fn current(conn: &mut DbConn, secrets: &SecretKeys) -> Result<Option<KeySet>, StoreError> {
    let keys = load(conn, secrets)?;
    if keys.iter().any(|k| k.retired_at.is_none()) {
        KeySet::new(keys)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    } else {
        Ok(None)
    }
}

/// The key set, making the first key if there is none. Call inside a write transaction.
pub fn ensure(
    conn: &mut DbConn,
    secrets: &SecretKeys,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<KeySet, StoreError> {
    if let Some(set) = current(conn, secrets)? {
        return Ok(set);
    }
    let keys = load(conn, secrets)?;
    let key = SigningKey::generate(micros::truncate(now), rng)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    insert(conn, &key, secrets, rng)?;
    let mut all = keys;
    all.push(key);
    KeySet::new(all).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Makes a new signing key, retires the current ones, deletes keys that can no longer verify
/// anything, and records `keys.rotated`. Call inside a write transaction. Returns the new kid.
pub fn rotate(
    conn: &mut DbConn,
    secrets: &SecretKeys,
    limits: &FlowLimits,
    actor: &Actor,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<String, StoreError> {
    let now = micros::truncate(now);
    let key = SigningKey::generate(now, rng).map_err(|e| StoreError::Internal(e.to_string()))?;
    let retired: Vec<String> = signing_keys::table
        .filter(signing_keys::retired_at.is_null())
        .select(signing_keys::kid)
        .load(conn)?;
    diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
        .set(signing_keys::retired_at.eq(micros::to_micros(now)))
        .execute(conn)?;
    let forget_before = micros::to_micros(now - limits.lease_absolute);
    diesel::delete(signing_keys::table.filter(signing_keys::retired_at.le(forget_before)))
        .execute(conn)?;
    insert(conn, &key, secrets, rng)?;
    audit::append(
        conn,
        &NewEvent {
            at: now,
            tenant: None,
            grant: None,
            lease: None,
            kind: AuditKind::KeysRotated,
            actor: actor.clone(),
            detail: serde_json::json!({ "kid": key.kid, "retired": retired }),
        },
    )?;
    Ok(key.kid)
}
