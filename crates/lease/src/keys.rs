//! The broker's lease-signing keys: Ed25519, generated with `ring`. The newest key signs;
//! a retired key still verifies until the last lease it could have signed has expired
//! (`retired_at` + the absolute lease lifetime), then it is dropped.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use std::fmt;
use time::OffsetDateTime;

use crate::limits::FlowLimits;

/// A key could not be made or loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The random number generator failed.
    #[error("could not generate a signing key")]
    Generate,
    /// Stored key bytes are not an Ed25519 PKCS#8 document.
    #[error("a stored signing key is not a valid Ed25519 key")]
    Invalid,
    /// No key may sign: every key is retired.
    #[error("no active signing key")]
    NoActiveKey,
}

/// One Ed25519 signing key. Its `Debug` never shows private bytes.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id: base64url of the first 16 bytes of SHA-256 over the public key.
    pub kid: String,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When a newer key replaced it; it verifies for one absolute lease lifetime more.
    pub retired_at: Option<OffsetDateTime>,
    /// The raw 32-byte public key.
    pub public: [u8; 32],
    pkcs8: Vec<u8>,
    /// Parsed once: parsing derives the public key, which costs about as much as a signature.
    pair: std::sync::Arc<Ed25519KeyPair>,
    decoding: DecodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key made at `now`.
    pub fn generate(now: OffsetDateTime, rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec(), now, None)
    }

    /// Loads a stored key (its PKCS#8 document, as [`SigningKey::pkcs8`] gave it).
    pub fn from_pkcs8(
        pkcs8: Vec<u8>,
        created_at: OffsetDateTime,
        retired_at: Option<OffsetDateTime>,
    ) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid)?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Invalid)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Self {
            kid,
            created_at,
            retired_at,
            public,
            pair: std::sync::Arc::new(pair),
            decoding: DecodingKey::from_ed_der(&public),
            pkcs8,
        })
    }

    /// The private key as PKCS#8, for sealed storage only. Never log or send it.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Until when it verifies: forever while active, else one absolute lease lifetime after
    /// it was retired.
    pub fn verifies_until(&self, limits: &FlowLimits) -> Option<OffsetDateTime> {
        self.retired_at.map(|at| at + limits.lease_absolute)
    }

    /// The Ed25519 signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> ring::signature::Signature {
        self.pair.sign(message)
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys in use: exactly one active (signing) key and the retired ones still verifying.
#[derive(Clone, Debug)]
pub struct KeySet {
    active: SigningKey,
    retired: Vec<SigningKey>,
}

impl KeySet {
    /// Builds the set from stored keys: the newest unretired key signs; other unretired keys
    /// (left by a crash mid-rotation) count as retired when the newest was made.
    pub fn new(mut keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        let position = keys
            .iter()
            .position(|k| k.retired_at.is_none())
            .ok_or(KeyError::NoActiveKey)?;
        let active = keys.remove(position);
        for key in &mut keys {
            key.retired_at.get_or_insert(active.created_at);
        }
        Ok(Self {
            active,
            retired: keys,
        })
    }

    /// The key that signs new leases.
    pub fn signer(&self) -> &SigningKey {
        &self.active
    }

    /// The key named `kid`, if it may still verify at `now`.
    pub fn verifier(
        &self,
        kid: &str,
        now: OffsetDateTime,
        limits: &FlowLimits,
    ) -> Option<&SigningKey> {
        if self.active.kid == kid {
            return Some(&self.active);
        }
        self.retired
            .iter()
            .find(|k| k.kid == kid)
            .filter(|k| k.verifies_until(limits).is_some_and(|until| now < until))
    }

    /// Every key, the active one first: for publishing and storage.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.active).chain(&self.retired)
    }

    /// Makes `new` the signer at `now`, retires the current one and forgets retired keys that
    /// can no longer verify anything.
    pub fn rotate(&mut self, new: SigningKey, now: OffsetDateTime, limits: &FlowLimits) {
        let mut old = std::mem::replace(&mut self.active, new);
        old.retired_at = Some(now);
        self.retired.insert(0, old);
        self.retired
            .retain(|k| k.verifies_until(limits).is_some_and(|until| now < until));
    }
}
