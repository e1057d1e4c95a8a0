//! Secret values and the keyed hashes that stand for them at rest.
//!
//! A secret lives in a type whose `Debug` prints `<redacted>` and which does not implement
//! `Serialize`, so it cannot leak through a log line or a JSON response by accident. What is
//! stored is an HMAC-SHA256 under a purpose-specific key ([`SecretKeys`]); comparisons of
//! presented secrets against stored verifiers run in constant time (`ring::hmac::verify`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::{aead, hkdf, hmac};
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
    /// The browser's flow cookie (`__Host-ll_flow`).
    FlowCookie,
    /// CSRF tokens, bound to one flow or one lease.
    Csrf,
}

impl Purpose {
    const ALL: [Purpose; 7] = [
        Purpose::LinkToken,
        Purpose::ApiKey,
        Purpose::ClientSecret,
        Purpose::Factor,
        Purpose::Otp,
        Purpose::FlowCookie,
        Purpose::Csrf,
    ];

    fn info(self) -> &'static [u8] {
        match self {
            Purpose::LinkToken => b"linklease v1 link-token",
            Purpose::ApiKey => b"linklease v1 api-key",
            Purpose::ClientSecret => b"linklease v1 client-secret",
            Purpose::Factor => b"linklease v1 factor",
            Purpose::Otp => b"linklease v1 otp",
            Purpose::FlowCookie => b"linklease v1 flow-cookie",
            Purpose::Csrf => b"linklease v1 csrf",
        }
    }
}

/// The server's hashing keys, derived with HKDF-SHA256 from one 32-byte master secret.
///
/// Every instance that shares a database must share the master secret (the data dir).
pub struct SecretKeys {
    keys: [hmac::Key; 7],
    /// `None` only if HKDF refused one block, which it never does.
    wrap: Option<aead::LessSafeKey>,
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
        let wrap = prk
            .expand(&[b"linklease v1 key-wrap"], &aead::AES_256_GCM)
            .ok()
            .map(|okm| aead::LessSafeKey::new(aead::UnboundKey::from(okm)));
        Self {
            keys: Purpose::ALL.map(derive),
            wrap,
        }
    }

    /// Encrypts `plaintext` (a private signing key) for storage, bound to `aad` (its key id),
    /// with AES-256-GCM under a key derived from the master secret. Output: nonce ‖ sealed.
    pub fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, RandomError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| RandomError)?;
        let wrap = self.wrap.as_ref().ok_or(RandomError)?;
        let mut sealed = plaintext.to_vec();
        wrap.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            &mut sealed,
        )
        .map_err(|_| RandomError)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`SecretKeys::seal`] made; `None` if it was altered, bound to another `aad`
    /// or sealed under another master secret.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(aead::NONCE_LEN)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .wrap
            .as_ref()?
            .open_in_place(nonce, aead::Aad::from(aad), &mut body)
            .ok()?;
        Some(plain.to_vec())
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
    fn sealed_keys_open_only_with_the_same_master_and_aad() {
        let rng = SystemRandom::new();
        let keys = SecretKeys::from_master(&[3; 32]);
        let sealed = keys.seal(b"private", b"kid-1", &rng).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(keys.open(&sealed, b"kid-1").unwrap(), b"private");
        assert!(keys.open(&sealed, b"kid-2").is_none());
        assert!(
            SecretKeys::from_master(&[4; 32])
                .open(&sealed, b"kid-1")
                .is_none()
        );
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(keys.open(&flipped, b"kid-1").is_none());
        assert!(keys.open(&sealed[..5], b"kid-1").is_none());
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
