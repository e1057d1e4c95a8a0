//! One-time codes: six uniform digits from the system's secure randomness, stored only as a
//! keyed hash bound to their flow and compared in constant time.

use linklease_grant::{Purpose, RandomError, SecretHash, SecretKeys, SecretString};
use ring::rand::SecureRandom;
use uuid::Uuid;

/// Digits in a code.
pub const DIGITS: usize = 6;

/// Draws a code uniformly from `000000`–`999999` (rejection sampling: no modulo bias).
pub fn generate(rng: &dyn SecureRandom) -> Result<SecretString, RandomError> {
    // The largest multiple of 10^6 that fits in a u32; draws at or above it are redrawn.
    const RANGE: u32 = 1_000_000;
    const LIMIT: u32 = u32::MAX - (u32::MAX % RANGE);
    loop {
        let mut bytes = [0u8; 4];
        rng.fill(&mut bytes).map_err(|_| RandomError)?;
        let n = u32::from_be_bytes(bytes);
        if n < LIMIT {
            return Ok(SecretString::new(format!("{:06}", n % RANGE)));
        }
    }
}

/// The keyed hash of `code` for flow `flow` and send number `send`: a code is worth nothing
/// in another flow, and a resent code replaces the previous one.
pub fn hash(keys: &SecretKeys, flow: Uuid, send: u32, code: &SecretString) -> SecretHash {
    keys.hash(
        Purpose::Otp,
        &[
            flow.as_bytes(),
            &send.to_be_bytes(),
            code.expose().as_bytes(),
        ],
    )
}

/// Whether `presented` is the code behind `stored`. Anything but six ASCII digits (after
/// trimming spaces) is a mismatch; the comparison is constant-time.
pub fn matches(
    keys: &SecretKeys,
    flow: Uuid,
    send: u32,
    stored: &SecretHash,
    presented: &SecretString,
) -> bool {
    let code: String = presented
        .expose()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    keys.verify(
        Purpose::Otp,
        &[flow.as_bytes(), &send.to_be_bytes(), code.as_bytes()],
        stored,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn codes_are_six_digits_and_spread_over_every_position() {
        let rng = SystemRandom::new();
        let mut seen = [[false; 10]; DIGITS];
        for _ in 0..2000 {
            let code = generate(&rng).unwrap();
            let code = code.expose();
            assert_eq!(code.len(), DIGITS);
            for (i, b) in code.bytes().enumerate() {
                assert!(b.is_ascii_digit());
                seen[i][(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|pos| pos.iter().all(|&d| d)));
    }

    #[test]
    fn a_code_matches_only_its_flow_and_send() {
        let keys = SecretKeys::from_master(&[9; 32]);
        let flow = Uuid::from_u128(1);
        let code = SecretString::new("012345");
        let stored = hash(&keys, flow, 1, &code);
        assert!(matches(&keys, flow, 1, &stored, &code));
        assert!(matches(
            &keys,
            flow,
            1,
            &stored,
            &SecretString::new(" 012 345 ")
        ));
        assert!(!matches(&keys, flow, 2, &stored, &code));
        assert!(!matches(&keys, Uuid::from_u128(2), 1, &stored, &code));
        for wrong in ["012346", "12345", "0123456", "01234a", "", "０１２３４５"] {
            assert!(
                !matches(&keys, flow, 1, &stored, &SecretString::new(wrong)),
                "{wrong}"
            );
        }
    }
}
