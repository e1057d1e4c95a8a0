//! Salted commitments to a grant's payload and to its submissions' bodies.
//!
//! A grant made since 2026-12-07 has a random 32-byte salt. Its payload's commitment is
//! `HMAC-SHA256(key = salt, message = the stored payload bytes)` and each submission's is
//! `HMAC-SHA256(key = salt, message = the canonical body bytes)`. The audit log records these
//! (`payload_commitment`, `body_commitment`) instead of plain SHA-256, so that someone who reads
//! the log cannot confirm a guess of a small payload (a test result, say) by hashing it. The
//! originator gets the salt with the grant and can give it to an auditor, who then checks a
//! commitment against a payload or body shown to them. Grants made before have no salt; their
//! events keep the plain `payload_sha256` and `body_sha256` they always had.

use ring::hmac;
use ring::rand::SecureRandom;
use std::fmt;

use crate::RandomError;

/// A grant's salt and its payload's commitment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Commitments {
    /// 32 random bytes, the HMAC key of every commitment of the grant.
    pub salt: [u8; 32],
    /// `HMAC-SHA256(salt, payload bytes)`.
    pub payload: [u8; 32],
}

impl fmt::Debug for Commitments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commitments")
            .field("salt", &"<redacted>")
            .field("payload", &crate::hex::encode(&self.payload))
            .finish()
    }
}

impl Commitments {
    /// A fresh salt from `rng`, and the commitment to `payload` under it.
    pub fn new(rng: &dyn SecureRandom, payload: &[u8]) -> Result<Self, RandomError> {
        let mut salt = [0u8; 32];
        rng.fill(&mut salt).map_err(|_| RandomError)?;
        Ok(Self {
            salt,
            payload: commit(&salt, payload),
        })
    }

    /// The commitment to a submission body under this grant's salt.
    pub fn body(&self, body: &[u8]) -> [u8; 32] {
        commit(&self.salt, body)
    }
}

/// `HMAC-SHA256(key = salt, message = bytes)`.
pub fn commit(salt: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// How an audit detail shows a payload: `("payload_commitment", hex)` for a salted grant,
/// `("payload_sha256", hex)` for a grant made before salts.
pub fn payload_evidence(
    commitments: Option<&Commitments>,
    sha256: &[u8; 32],
) -> (&'static str, String) {
    match commitments {
        Some(c) => ("payload_commitment", crate::hex::encode(&c.payload)),
        None => ("payload_sha256", crate::hex::encode(sha256)),
    }
}

/// How an audit detail shows a submission body: `("body_commitment", hex)` when it has one,
/// `("body_sha256", hex)` for a body of a grant made before salts.
pub fn body_evidence(commitment: Option<&[u8; 32]>, sha256: &[u8; 32]) -> (&'static str, String) {
    match commitment {
        Some(c) => ("body_commitment", crate::hex::encode(c)),
        None => ("body_sha256", crate::hex::encode(sha256)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commitment_is_hmac_sha256_keyed_with_the_salt() {
        // Checked with ring's own HMAC verify; equal payloads of two grants commit apart.
        let a = Commitments::new(&ring::rand::SystemRandom::new(), b"negative").unwrap();
        let b = Commitments::new(&ring::rand::SystemRandom::new(), b"negative").unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.payload, b.payload);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &a.salt);
        assert!(hmac::verify(&key, b"negative", &a.payload).is_ok());
        assert_eq!(a.body(b"{}"), commit(&a.salt, b"{}"));
        assert!(!format!("{a:?}").contains(&crate::hex::encode(&a.salt)));
    }

    #[test]
    fn evidence_names_the_construction() {
        let c = Commitments {
            salt: [1; 32],
            payload: [2; 32],
        };
        assert_eq!(payload_evidence(Some(&c), &[3; 32]).0, "payload_commitment");
        assert_eq!(
            payload_evidence(None, &[3; 32]),
            ("payload_sha256", crate::hex::encode(&[3; 32]))
        );
        assert_eq!(body_evidence(None, &[3; 32]).0, "body_sha256");
        assert_eq!(body_evidence(Some(&[4; 32]), &[3; 32]).0, "body_commitment");
    }
}
