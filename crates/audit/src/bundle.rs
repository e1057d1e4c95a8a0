//! Signed export bundles: NDJSON. Line 1 is the [`Header`]; then one [`EventRecord`] per line in
//! log order; the last line is `{"kid": …, "signature": …}`, an Ed25519 signature over every
//! byte before it. An auditor keeps the bundle and the public key, and checks both offline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainVerifier, EventRecord, Head, Tamper};
use crate::keys::{AuditKey, PublicKey, verify_signature};

/// The format name in every header.
pub const FORMAT: &str = "linklease-audit-bundle/1";

/// What a bundle covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The tenant whose events these are (`None`: every chain, an operator's export).
    pub tenant: Option<String>,
    /// The window's start (RFC 3339, inclusive), if any.
    pub from: Option<String>,
    /// The window's end (RFC 3339, exclusive), if any.
    pub to: Option<String>,
    /// When the bundle was made (RFC 3339).
    pub created_at: String,
    /// Events in the bundle.
    pub count: u64,
    /// Each chain's position and hash just before its first event in the bundle.
    pub starts: Vec<Head>,
    /// Each chain's last position and hash in the bundle.
    pub ends: Vec<Head>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureLine {
    kid: String,
    signature: String,
}

/// Writes a bundle of `events` (in log order) signed with `key`. `starts` gives, per chain, the
/// position and hash before the window; `ends` is computed.
pub fn write(
    mut header: Header,
    events: &[EventRecord],
    key: &AuditKey,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut ends: Vec<Head> = Vec::new();
    for e in events {
        match ends.iter_mut().find(|h| h.chain == e.chain) {
            Some(head) => {
                head.chain_seq = e.chain_seq;
                head.hash = e.hash;
            }
            None => ends.push(Head {
                chain: e.chain.clone(),
                chain_seq: e.chain_seq,
                hash: e.hash,
            }),
        }
    }
    header.format = FORMAT.into();
    header.count = events.len() as u64;
    header.ends = ends;
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.push(b'\n');
    }
    let line = SignatureLine {
        kid: key.kid.clone(),
        signature: STANDARD.encode(key.sign(&out)),
    };
    serde_json::to_writer(&mut out, &line)?;
    out.push(b'\n');
    Ok(out)
}

/// Why a bundle does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle: no header, no signature line, a line that does not parse.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// Signed by a key not among those given.
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not match the contents.
    #[error("the signature does not match the bundle's contents")]
    BadSignature,
    /// The events do not form an unbroken chain.
    #[error("{0}")]
    Chain(Tamper),
}

/// A bundle that verified.
#[derive(Debug)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// The key that signed it.
    pub kid: String,
}

/// Checks the signature with one of `keys` (by kid), then every event's hash and link, the
/// count and the end of every chain.
pub fn verify(bundle: &[u8], keys: &[PublicKey]) -> Result<Verified, BundleError> {
    let malformed = |what: &str| BundleError::Malformed(what.to_owned());
    let body_end = bundle
        .strip_suffix(b"\n")
        .unwrap_or(bundle)
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .ok_or_else(|| malformed("no signature line"))?;
    let (signed, last) = bundle.split_at(body_end);
    let line: SignatureLine =
        serde_json::from_slice(last).map_err(|_| malformed("the last line is not a signature"))?;
    let key = keys
        .iter()
        .find(|k| k.kid == line.kid)
        .ok_or_else(|| BundleError::UnknownKey(line.kid.clone()))?;
    let signature = STANDARD
        .decode(&line.signature)
        .map_err(|_| malformed("the signature is not base64"))?;
    if !verify_signature(key, signed, &signature) {
        return Err(BundleError::BadSignature);
    }
    let mut lines = signed.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header: Header = lines
        .next()
        .ok_or_else(|| malformed("no header"))
        .and_then(|l| serde_json::from_slice(l).map_err(|e| malformed(&format!("header: {e}"))))?;
    if header.format != FORMAT {
        return Err(malformed("unknown format"));
    }
    let mut verifier = ChainVerifier::continuing(header.starts.clone());
    for (i, l) in lines.enumerate() {
        let event: EventRecord = serde_json::from_slice(l)
            .map_err(|e| malformed(&format!("event line {}: {e}", i + 2)))?;
        verifier.push(&event).map_err(BundleError::Chain)?;
    }
    if verifier.count() != header.count {
        return Err(malformed("the event count does not match the header"));
    }
    verifier.finish(&header.ends).map_err(BundleError::Chain)?;
    Ok(Verified {
        header,
        kid: line.kid,
    })
}
