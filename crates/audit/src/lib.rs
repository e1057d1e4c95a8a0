#![doc = include_str!("../README.md")]

pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod keys;

pub use chain::{ChainVerifier, EventRecord, GENESIS, Head, SYSTEM_CHAIN, Tamper, event_hash};
pub use checkpoint::Checkpoint;
pub use keys::{AuditKey, KeyError, PublicKey, verify_signature};
