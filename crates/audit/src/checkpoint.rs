//! Signed checkpoints: "chain C was at position N with hash H at time T", signed with the
//! audit key. Someone who can write the database can recompute an unkeyed chain; they cannot
//! make a checkpoint, so a rewritten tail fails at the first pinned position it covers.

use serde::{Deserialize, Serialize};

use crate::chain::Head;
use crate::keys::{AuditKey, PublicKey, verify_signature};

/// A signed head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The pinned head.
    pub head: Head,
    /// When it was signed (microseconds since the epoch).
    pub at: i64,
    /// The signing key.
    pub kid: String,
    /// The Ed25519 signature over [`message`].
    pub signature: Vec<u8>,
}

/// The bytes a checkpoint signs.
pub fn message(head: &Head, at: i64) -> Vec<u8> {
    let mut out = b"linklease-audit-checkpoint-v1".to_vec();
    out.extend_from_slice(&(head.chain.len() as u64).to_be_bytes());
    out.extend_from_slice(head.chain.as_bytes());
    out.extend_from_slice(&head.chain_seq.to_be_bytes());
    out.extend_from_slice(&head.hash);
    out.extend_from_slice(&at.to_be_bytes());
    out
}

impl Checkpoint {
    /// Signs `head` at `at` with `key`.
    pub fn sign(head: Head, at: i64, key: &AuditKey) -> Self {
        let signature = key.sign(&message(&head, at));
        Self {
            head,
            at,
            kid: key.kid.clone(),
            signature,
        }
    }

    /// Whether one of `keys` made this signature.
    pub fn verify(&self, keys: &[PublicKey]) -> bool {
        keys.iter()
            .find(|k| k.kid == self.kid)
            .is_some_and(|k| verify_signature(k, &message(&self.head, self.at), &self.signature))
    }
}
