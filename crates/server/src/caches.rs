//! Caches of immutable things only: a verified lease token's claims (until its `exp`), a grant's
//! payload, and rows that never change. None can hide a revocation, a last use or a lock: those
//! are lease facts, which every lease request checks (see `lease_auth`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use linklease_grant::GrantId;
use linklease_lease::LeaseClaims;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// Entries kept before a cache starts over (entries are cheap to rebuild). Sized for the hot
/// set, not for history: a full run's P2 filled 50,000-entry caches with grants used once.
const MAX_ENTRIES: usize = 10_000;
/// Payload bytes kept before the cache starts over: memory stays bounded whatever the payloads.
const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// Claims of tokens whose signature was verified, by SHA-256 of the token.
#[derive(Debug, Default)]
pub struct TokenCache {
    verified: RwLock<HashMap<[u8; 32], LeaseClaims>>,
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl TokenCache {
    /// The claims of `token` if it was verified before and has not expired at `now`.
    pub fn get(&self, token: &str, now: OffsetDateTime) -> Option<LeaseClaims> {
        let key = digest(token);
        let guard = self.verified.read().ok()?;
        guard
            .get(&key)
            .filter(|claims| now.unix_timestamp() < claims.exp)
            .cloned()
    }

    /// Remembers a verified token.
    pub fn put(&self, token: &str, claims: &LeaseClaims) {
        if let Ok(mut guard) = self.verified.write() {
            if guard.len() >= MAX_ENTRIES {
                guard.clear();
            }
            guard.insert(digest(token), claims.clone());
        }
    }
}

/// Payloads by grant, as their stored JSON text (checked to be JSON once): a read copies the
/// text into the answer without parsing or re-serialising it. Payloads never change; retention
/// removes them only from grants that have ended, whose payloads no lease can read any more.
#[derive(Debug, Default)]
pub struct PayloadCache {
    payloads: RwLock<(HashMap<GrantId, Arc<RawValue>>, usize)>,
}

impl PayloadCache {
    /// The cached payload of `grant`.
    pub fn get(&self, grant: GrantId) -> Option<Arc<RawValue>> {
        self.payloads.read().ok()?.0.get(&grant).cloned()
    }

    /// Remembers a payload.
    pub fn put(&self, grant: GrantId, payload: Arc<RawValue>) {
        let bytes = payload.get().len();
        if let Ok(mut guard) = self.payloads.write() {
            let (map, size) = &mut *guard;
            if *size + bytes > MAX_PAYLOAD_BYTES {
                map.clear();
                *size = 0;
            }
            if map.insert(grant, payload).is_none() {
                *size += bytes;
            }
        }
    }
}

/// Values that never change once stored (a grant row, a lease's issue facts, a client's address
/// blocks), by id. Bounded by entries; rebuilt from the database on a miss.
#[derive(Debug)]
pub struct Immutable<K, V> {
    entries: RwLock<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Immutable<K, V> {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V> Immutable<K, V> {
    /// The value for `key` if it is cached.
    pub fn peek(&self, key: K) -> Option<Arc<V>> {
        self.entries.read().ok()?.get(&key).cloned()
    }

    /// The value for `key`, loading it with `load` on a miss.
    pub fn get_or<E>(&self, key: K, load: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        if let Some(found) = self.peek(key) {
            return Ok(found);
        }
        let value = Arc::new(load()?);
        self.insert(key, value.clone());
        Ok(value)
    }

    /// Caches `value`, which the caller has just stored or read, under `key`.
    pub fn insert(&self, key: K, value: Arc<V>) {
        if let Ok(mut guard) = self.entries.write() {
            if guard.len() >= MAX_ENTRIES {
                guard.clear();
            }
            guard.insert(key, value);
        }
    }
}
