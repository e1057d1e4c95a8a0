//! Secret values and the keyed hashes that stand for them at rest.
//!
//! A secret lives in a type whose `Debug` prints `<redacted>` and which does not implement
//! `Serialize`, so it cannot leak through a log line or a JSON response by accident. What is
//! stored is an HMAC-SHA256 under a purpose-specific key ([`SecretKeys`]); comparisons of
//! presented secrets against stored verifiers run in constant time (`ring::hmac::verify`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::{hkdf, hmac};
use serde::Deserialize;
use std::fmt;

use crate::RandomError;

/// A string that must never be logged or echoed: factor values, API keys, client secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is hashed, compared or shown once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A 32-byte keyed hash (HMAC-SHA256) of a secret; safe to store and to index.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Rebuilds a hash read from storage; `None` if it is not 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// Makes `prefix` + base64url(32 random bytes): 256 bits of entropy.
pub fn random_token(prefix: &str, rng: &dyn SecureRandom) -> Result<SecretString, RandomError> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(SecretString(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// What a keyed hash is for. Each purpose has its own key, so a hash made for one purpose
/// can never be replayed as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Link tokens (`/l/{token}`).
    LinkToken,
    /// Originator API keys (`llk_…`).
    ApiKey,
    /// Partner client secrets (`lls_…`).
    ClientSecret,
    /// Second-factor verifiers (date of birth, PIN).
    Factor,
    /// One-time codes.
    Otp,
}

impl Purpose {
    const ALL: [Purpose; 5] = [
        Purpose::LinkToken,
        Purpose::ApiKey,
        Purpose::ClientSecret,
        Purpose::Factor,
        Purpose::Otp,
    ];

    fn info(self) -> &'static [u8] {
        match self {
            Purpose::LinkToken => b"linklease v1 link-token",
            Purpose::ApiKey => b"linklease v1 api-key",
            Purpose::ClientSecret => b"linklease v1 client-secret",
            Purpose::Factor => b"linklease v1 factor",
            Purpose::Otp => b"linklease v1 otp",
        }
    }
}

/// The server's hashing keys, derived with HKDF-SHA256 from one 32-byte master secret.
///
/// Every instance that shares a database must share the master secret (the data dir).
pub struct SecretKeys {
    keys: [hmac::Key; 5],
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeys(<redacted>)")
    }
}

impl SecretKeys {
    /// Derives the per-purpose keys from the master secret.
    pub fn from_master(master: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"linklease master v1").extract(master);
        let derive = |purpose: Purpose| -> hmac::Key {
            let info = [purpose.info()];
            match prk.expand(&info, hmac::HMAC_SHA256) {
                Ok(okm) => hmac::Key::from(okm),
                // HKDF only fails when asked for more than 255 blocks; one block is asked for.
                Err(_) => hmac::Key::new(hmac::HMAC_SHA256, &[]),
            }
        };
        Self {
            keys: Purpose::ALL.map(derive),
        }
    }

    fn key(&self, purpose: Purpose) -> &hmac::Key {
        &self.keys[purpose as usize]
    }

    /// HMAC-SHA256 over `parts`, each length-prefixed so that no two inputs collide.
    pub fn hash(&self, purpose: Purpose, parts: &[&[u8]]) -> SecretHash {
        let tag = hmac::sign(self.key(purpose), &encode(parts));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        SecretHash(out)
    }

    /// Whether `stored` is the hash of `parts`, compared in constant time (`ring::hmac::verify`).
    pub fn verify(&self, purpose: Purpose, parts: &[&[u8]], stored: &SecretHash) -> bool {
        hmac::verify(self.key(purpose), &encode(parts), &stored.0).is_ok()
    }
}

fn encode(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn debug_never_shows_secrets() {
        let s = SecretString::new("1984-03-02");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let keys = SecretKeys::from_master(&[7; 32]);
        assert!(!format!("{keys:?}").contains('7'));
    }

    #[test]
    fn purposes_are_separated_and_verify_is_exact() {
        let keys = SecretKeys::from_master(&[1; 32]);
        let a = keys.hash(Purpose::ApiKey, &[b"x"]);
        assert_ne!(a, keys.hash(Purpose::LinkToken, &[b"x"]));
        assert_ne!(a, keys.hash(Purpose::ApiKey, &[b"y"]));
        // Length prefixes: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            keys.hash(Purpose::Factor, &[b"ab", b"c"]),
            keys.hash(Purpose::Factor, &[b"a", b"bc"])
        );
        assert!(keys.verify(Purpose::ApiKey, &[b"x"], &a));
        assert!(!keys.verify(Purpose::ApiKey, &[b"x "], &a));
        let other = SecretKeys::from_master(&[2; 32]);
        assert!(!other.verify(Purpose::ApiKey, &[b"x"], &a));
    }

    #[test]
    fn random_tokens_have_256_bits_and_differ() {
        let rng = SystemRandom::new();
        let a = random_token("llk_", &rng).unwrap();
        let b = random_token("llk_", &rng).unwrap();
        assert_eq!(a.expose().len(), 4 + 43);
        assert!(a.expose().starts_with("llk_"));
        assert_ne!(a, b);
    }
}
