//! Link tokens: 32 random bytes, base64url (43 characters), stored only as a keyed hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use std::fmt;

use crate::RandomError;
use crate::secret::{Purpose, SecretHash, SecretKeys};

/// The secret part of a link (`/l/{token}`). Shown once to the originator, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkToken(String);

impl LinkToken {
    /// The length of every token in characters.
    pub const LEN: usize = 43;

    /// A fresh token with 256 bits of entropy.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, RandomError> {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).map_err(|_| RandomError)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts only the exact shape a generated token has; anything else is no token at all.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != Self::LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        (bytes.len() == 32 && URL_SAFE_NO_PAD.encode(&bytes) == s).then(|| Self(s.to_owned()))
    }

    /// The keyed hash under which the token is stored and looked up.
    pub fn hash(&self, keys: &SecretKeys) -> SecretHash {
        keys.hash(Purpose::LinkToken, &[self.0.as_bytes()])
    }

    /// The token text, for the one response that hands it to the originator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn generated_tokens_parse_and_hash_stably() {
        let keys = SecretKeys::from_master(&[9; 32]);
        let t = LinkToken::generate(&SystemRandom::new()).unwrap();
        assert_eq!(t.expose().len(), 43);
        let parsed = LinkToken::parse(t.expose()).unwrap();
        assert_eq!(parsed.hash(&keys), t.hash(&keys));
        assert_eq!(format!("{t:?}"), "LinkToken(<redacted>)");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = "A".repeat(43);
        assert!(LinkToken::parse(&good).is_some());
        assert!(LinkToken::parse(&"A".repeat(42)).is_none());
        assert!(LinkToken::parse(&"A".repeat(44)).is_none());
        assert!(LinkToken::parse(&format!("{}=", "A".repeat(42))).is_none());
        assert!(LinkToken::parse(&format!("{}+", "A".repeat(42))).is_none());
        // Non-canonical trailing bits decode to the same bytes as another string: refused.
        assert!(LinkToken::parse(&format!("{}B", "A".repeat(42))).is_none());
    }
}
