//! The hash chain: one per tenant, each event hashing its fields and its predecessor's hash.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The chain of events that belong to no tenant (`keys.rotated`, …).
pub const SYSTEM_CHAIN: &str = "system";

/// What the first event of every chain links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Version of the canonical encoding, hashed first so a future encoding cannot collide.
const ENCODING: &[u8] = b"linklease-audit-v1";

/// One event with every field that its hash covers. This is also its export form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// Position in the whole log (both backends assign it in commit order per chain).
    pub seq: i64,
    /// The chain: a tenant id, or [`SYSTEM_CHAIN`].
    pub chain: String,
    /// Position in its chain, from 1.
    pub chain_seq: i64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    /// Tenant id.
    pub tenant: Option<String>,
    /// Grant id.
    pub grant: Option<String>,
    /// Lease id.
    pub lease: Option<String>,
    /// The stable kind (`grant.created`, …).
    pub kind: String,
    /// `operator`, `apikey`, `client`, `visitor`, `lease`, `system`.
    pub actor_kind: String,
    /// The actor's id.
    pub actor_id: Option<String>,
    /// The actor's address.
    pub actor_ip: Option<String>,
    /// The actor's user agent.
    pub actor_user_agent: Option<String>,
    /// The detail, as stored (JSON text).
    pub detail: String,
    /// The previous event's hash in this chain, hex.
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// This event's hash, hex.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl EventRecord {
    /// The hash its fields and `prev_hash` call for.
    pub fn expected_hash(&self) -> [u8; 32] {
        event_hash(
            &self.chain,
            self.chain_seq,
            self.at,
            [
                self.tenant.as_deref(),
                self.grant.as_deref(),
                self.lease.as_deref(),
            ],
            &self.kind,
            [
                Some(self.actor_kind.as_str()),
                self.actor_id.as_deref(),
                self.actor_ip.as_deref(),
                self.actor_user_agent.as_deref(),
            ],
            &self.detail,
            &self.prev_hash,
        )
    }
}

/// SHA-256 over the canonical encoding: every field length-prefixed (absent fields marked
/// apart from empty ones), so no two different events encode alike.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    chain: &str,
    chain_seq: i64,
    at: i64,
    about: [Option<&str>; 3],
    kind: &str,
    actor: [Option<&str>; 4],
    detail: &str,
    prev_hash: &[u8; 32],
) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    let mut field = |bytes: Option<&[u8]>| match bytes {
        None => ctx.update(&[0]),
        Some(b) => {
            ctx.update(&[1]);
            ctx.update(&(b.len() as u64).to_be_bytes());
            ctx.update(b);
        }
    };
    field(Some(ENCODING));
    field(Some(chain.as_bytes()));
    field(Some(&chain_seq.to_be_bytes()));
    field(Some(&at.to_be_bytes()));
    for part in about {
        field(part.map(str::as_bytes));
    }
    field(Some(kind.as_bytes()));
    for part in actor {
        field(part.map(str::as_bytes));
    }
    field(Some(detail.as_bytes()));
    field(Some(prev_hash));
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The last event of a chain, as the database records it (or as a checkpoint pins it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The chain.
    pub chain: String,
    /// Its last position.
    pub chain_seq: i64,
    /// Its last hash.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

/// What verification found, naming the first event (by `seq`) that does not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    /// The event's fields do not hash to its `hash`: it was edited.
    #[error("event {seq}: its contents do not match its hash (edited)")]
    Edited {
        /// The event.
        seq: i64,
    },
    /// The event does not follow its predecessor in its chain: an event before it was deleted,
    /// or it was inserted or moved.
    #[error(
        "event {seq}: chain {chain} expected position {expected} linked to the previous hash, found {found} (deleted, inserted or reordered)"
    )]
    Broken {
        /// The event.
        seq: i64,
        /// Its chain.
        chain: String,
        /// The position that should come next.
        expected: i64,
        /// The position it claims.
        found: i64,
    },
    /// The log is not in `seq` order.
    #[error("event {seq}: out of order after event {after}")]
    OutOfOrder {
        /// The event.
        seq: i64,
        /// The event before it.
        after: i64,
    },
    /// A chain ends before the head the database (or a signed checkpoint) records: its tail
    /// was removed.
    #[error("chain {chain}: ends at position {found}, its head says {expected} (tail removed)")]
    Truncated {
        /// The chain.
        chain: String,
        /// Where the head says it ends.
        expected: i64,
        /// Where the events end.
        found: i64,
    },
    /// A chain has events past its recorded head (or has no head at all): they were added
    /// without going through the append that moves the head.
    #[error(
        "chain {chain}: events run to position {found}, past its recorded head {head} (inserted)"
    )]
    BeyondHead {
        /// The chain.
        chain: String,
        /// The recorded head's position (0: no head).
        head: i64,
        /// The last position found.
        found: i64,
    },
    /// A chain's last event differs from the head (or checkpoint) that pins it.
    #[error("chain {chain}: position {chain_seq} does not match its recorded head")]
    HeadMismatch {
        /// The chain.
        chain: String,
        /// The position.
        chain_seq: i64,
    },
}

/// Checks events in log order, one at a time, keeping only each chain's last position and hash
/// (a million events need a few megabytes at most).
#[derive(Debug, Default)]
pub struct ChainVerifier {
    last: HashMap<String, (i64, [u8; 32])>,
    /// Hashes at pinned positions, checked as they pass (signed checkpoints).
    pins: HashMap<(String, i64), [u8; 32]>,
    last_seq: Option<i64>,
    count: u64,
}

impl ChainVerifier {
    /// A verifier for a log that starts at the beginning of every chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier for a window of the log: each chain continues from `starts` (its position
    /// and hash just before the window).
    pub fn continuing(starts: impl IntoIterator<Item = Head>) -> Self {
        let mut v = Self::default();
        for head in starts {
            v.last.insert(head.chain, (head.chain_seq, head.hash));
        }
        v
    }

    /// Also checks that the event at each pinned position has the pinned hash.
    pub fn pin(&mut self, head: Head) {
        self.pins.insert((head.chain, head.chain_seq), head.hash);
    }

    /// Events checked so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Checks the next event of the log.
    pub fn push(&mut self, event: &EventRecord) -> Result<(), Tamper> {
        if let Some(after) = self.last_seq
            && event.seq <= after
        {
            return Err(Tamper::OutOfOrder {
                seq: event.seq,
                after,
            });
        }
        self.last_seq = Some(event.seq);
        if event.expected_hash() != event.hash {
            return Err(Tamper::Edited { seq: event.seq });
        }
        let (last_pos, last_hash) = self.last.get(&event.chain).copied().unwrap_or((0, GENESIS));
        if event.chain_seq != last_pos + 1 || event.prev_hash != last_hash {
            return Err(Tamper::Broken {
                seq: event.seq,
                chain: event.chain.clone(),
                expected: last_pos + 1,
                found: event.chain_seq,
            });
        }
        if let Some(pinned) = self.pins.get(&(event.chain.clone(), event.chain_seq))
            && *pinned != event.hash
        {
            return Err(Tamper::HeadMismatch {
                chain: event.chain.clone(),
                chain_seq: event.chain_seq,
            });
        }
        self.last
            .insert(event.chain.clone(), (event.chain_seq, event.hash));
        self.count += 1;
        Ok(())
    }

    /// After the last event: every chain must reach its recorded head exactly, and every pin
    /// must have been passed.
    pub fn finish(&self, heads: &[Head]) -> Result<(), Tamper> {
        for head in heads {
            let (pos, hash) = self.last.get(&head.chain).copied().unwrap_or((0, GENESIS));
            if pos < head.chain_seq {
                return Err(Tamper::Truncated {
                    chain: head.chain.clone(),
                    expected: head.chain_seq,
                    found: pos,
                });
            }
            if pos > head.chain_seq {
                // In a consistent snapshot nothing lies beyond a head: an appended forgery.
                return Err(Tamper::BeyondHead {
                    chain: head.chain.clone(),
                    head: head.chain_seq,
                    found: pos,
                });
            }
            if pos == head.chain_seq && hash != head.hash {
                return Err(Tamper::HeadMismatch {
                    chain: head.chain.clone(),
                    chain_seq: pos,
                });
            }
        }
        for (chain, (pos, _)) in &self.last {
            if !heads.iter().any(|h| &h.chain == chain) {
                return Err(Tamper::BeyondHead {
                    chain: chain.clone(),
                    head: 0,
                    found: *pos,
                });
            }
        }
        for (chain, chain_seq) in self.pins.keys() {
            let reached = self.last.get(chain).map_or(0, |(pos, _)| *pos);
            if reached < *chain_seq {
                return Err(Tamper::Truncated {
                    chain: chain.clone(),
                    expected: *chain_seq,
                    found: reached,
                });
            }
        }
        Ok(())
    }
}

/// Lower-case hex of 32 bytes, for serde.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Encodes.
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    /// Decodes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }

    /// Lower-case hex.
    pub fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 64 hex digits to 32 bytes.
    pub fn decode(s: &str) -> Option<[u8; 32]> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(out)
    }
}
