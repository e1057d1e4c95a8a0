//! The broker's audit key: Ed25519 with `ring`. It signs checkpoints and export bundles; its
//! public half (with the key id) is all an auditor needs to verify them offline.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A key could not be made or loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The random number generator failed.
    #[error("could not generate an audit key")]
    Generate,
    /// The bytes are not an Ed25519 PKCS#8 document.
    #[error("not a valid Ed25519 audit key")]
    Invalid,
}

/// The private audit key. `Debug` never shows it.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    /// The key id: base64url of the first 16 bytes of SHA-256 over the public key.
    pub kid: String,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.kid)
    }
}

fn kid_of(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

impl AuditKey {
    /// A new key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    /// Loads a stored key (its PKCS#8 document).
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Invalid)?;
        let kid = kid_of(pair.public_key().as_ref());
        Ok(Self { pair, pkcs8, kid })
    }

    /// The private key as PKCS#8, for sealed storage only.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            algorithm: "Ed25519".into(),
            public_key: STANDARD.encode(self.pair.public_key().as_ref()),
        }
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// A public audit key as published (`GET /v1/audit/public-key`) and kept by auditors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// The key id.
    pub kid: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The raw 32-byte key, base64.
    pub public_key: String,
}

impl PublicKey {
    /// The raw key bytes, if well-formed and matching the kid.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        let bytes = STANDARD.decode(&self.public_key).ok()?;
        (bytes.len() == 32 && kid_of(&bytes) == self.kid && self.algorithm == "Ed25519")
            .then_some(bytes)
    }
}

/// Whether `signature` is `key`'s signature of `message`.
pub fn verify_signature(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    key.bytes().is_some_and(|bytes| {
        UnparsedPublicKey::new(&ED25519, bytes)
            .verify(message, signature)
            .is_ok()
    })
}
