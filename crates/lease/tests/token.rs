//! Lease tokens: what verifies, and every forgery that must not (one claim at a time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use linklease_lease::grant::{GrantId, LeaseId};
use linklease_lease::token::{self, LeaseClaims, Scope, TokenError};
use linklease_lease::{FlowLimits, KeySet, SigningKey};
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

fn claims() -> LeaseClaims {
    LeaseClaims::new(
        GrantId(Uuid::from_u128(1)),
        LeaseId(Uuid::from_u128(2)),
        T0,
        T0 + Duration::minutes(15),
        vec![Scope::Read, Scope::Write],
    )
}

fn keyset() -> KeySet {
    KeySet::new(vec![
        SigningKey::generate(T0, &SystemRandom::new()).unwrap(),
    ])
    .unwrap()
}

/// Re-encodes a token's header or claims without re-signing.
fn tamper(token: &str, part: usize, change: impl FnOnce(&mut Value)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut value: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[part]).unwrap()).unwrap();
    change(&mut value);
    parts[part] = URL_SAFE_NO_PAD.encode(value.to_string());
    parts.join(".")
}

#[test]
fn a_signed_token_verifies_until_it_expires() {
    let keys = keyset();
    let l = FlowLimits::default();
    let token = token::sign(&claims(), keys.signer()).unwrap();
    let t = token.expose();
    assert_eq!(token::verify(t, &keys, T0, &l).unwrap(), claims());
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], keys.signer().kid.as_str());
    let last = T0 + Duration::minutes(15) - Duration::seconds(1);
    assert!(token::verify(t, &keys, last, &l).is_ok());
    assert_eq!(
        token::verify(t, &keys, T0 + Duration::minutes(15), &l).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn forgeries_are_refused() {
    let keys = keyset();
    let l = FlowLimits::default();
    let good = token::sign(&claims(), keys.signer()).unwrap();
    let good = good.expose();
    let other = keyset();
    let by_other_key = token::sign(&claims(), other.signer()).unwrap();

    let mut cases: Vec<(&str, String, TokenError)> = vec![
        ("not a jwt", "abc".into(), TokenError::Malformed),
        ("empty", String::new(), TokenError::Malformed),
        (
            "changed grant",
            tamper(good, 1, |c| c["sub"] = json!(Uuid::from_u128(9))),
            TokenError::Invalid,
        ),
        (
            "added scope",
            tamper(good, 1, |c| c["scopes"] = json!(["read", "write", "admin"])),
            TokenError::Invalid,
        ),
        (
            "longer life",
            tamper(good, 1, |c| c["exp"] = json!(T0.unix_timestamp() + 7200)),
            TokenError::Invalid,
        ),
        (
            "alg none",
            {
                let t = tamper(good, 0, |h| h["alg"] = json!("none"));
                let mut parts: Vec<&str> = t.split('.').collect();
                parts[2] = "";
                parts.join(".")
            },
            TokenError::Malformed,
        ),
        (
            "alg HS256",
            tamper(good, 0, |h| h["alg"] = json!("HS256")),
            TokenError::Header,
        ),
        (
            "unknown kid",
            tamper(good, 0, |h| h["kid"] = json!("nope")),
            TokenError::UnknownKey,
        ),
        (
            "no kid",
            tamper(good, 0, |h| {
                h.as_object_mut().unwrap().remove("kid");
            }),
            TokenError::Header,
        ),
        (
            "another key under our kid",
            tamper(by_other_key.expose(), 0, |h| {
                h["kid"] = json!(keys.signer().kid)
            }),
            TokenError::Invalid,
        ),
        (
            "another key",
            by_other_key.expose().to_owned(),
            TokenError::UnknownKey,
        ),
    ];
    let mut wrong_aud = claims();
    wrong_aud.aud = "someone-else".into();
    cases.push((
        "wrong audience, validly signed",
        token::sign(&wrong_aud, keys.signer())
            .unwrap()
            .expose()
            .to_owned(),
        TokenError::Invalid,
    ));
    let mut wrong_iss = claims();
    wrong_iss.iss = "evil".into();
    cases.push((
        "wrong issuer, validly signed",
        token::sign(&wrong_iss, keys.signer())
            .unwrap()
            .expose()
            .to_owned(),
        TokenError::Invalid,
    ));
    let mut expired = claims();
    expired.iat = (T0 - Duration::minutes(30)).unix_timestamp();
    expired.exp = (T0 - Duration::minutes(15)).unix_timestamp();
    cases.push((
        "expired, validly signed",
        token::sign(&expired, keys.signer())
            .unwrap()
            .expose()
            .to_owned(),
        TokenError::Expired,
    ));
    for (name, forged, want) in cases {
        assert_eq!(
            token::verify(&forged, &keys, T0, &l).unwrap_err(),
            want,
            "{name}"
        );
    }
}

#[test]
fn rotation_keeps_old_leases_valid_until_they_must_have_expired() {
    let rng = SystemRandom::new();
    let l = FlowLimits::default();
    let mut keys = keyset();
    let old = token::sign(&claims(), keys.signer()).unwrap();
    let old_kid = keys.signer().kid.clone();
    let rotated_at = T0 + Duration::minutes(5);
    keys.rotate(
        SigningKey::generate(rotated_at, &rng).unwrap(),
        rotated_at,
        &l,
    );
    assert_ne!(keys.signer().kid, old_kid, "the newest key signs");
    assert!(token::verify(old.expose(), &keys, T0 + Duration::minutes(10), &l).is_ok());
    // One absolute lease lifetime after retirement the old key is gone.
    let gone = rotated_at + l.lease_absolute;
    assert!(
        keys.verifier(&old_kid, gone - Duration::SECOND, &l)
            .is_some()
    );
    assert!(keys.verifier(&old_kid, gone, &l).is_none());
    keys.rotate(SigningKey::generate(gone, &rng).unwrap(), gone, &l);
    assert_eq!(
        keys.keys().count(),
        2,
        "expired keys are dropped at rotation"
    );

    // Loaded back from storage the same keys verify the same tokens.
    let stored: Vec<SigningKey> = keys
        .keys()
        .map(|k| SigningKey::from_pkcs8(k.pkcs8().to_vec(), k.created_at, k.retired_at).unwrap())
        .collect();
    let reloaded = KeySet::new(stored).unwrap();
    assert_eq!(reloaded.signer().kid, keys.signer().kid);
    let fresh = token::sign(&claims(), keys.signer()).unwrap();
    assert!(token::verify(fresh.expose(), &reloaded, T0, &l).is_ok());
    assert!(!format!("{:?}", keys.signer()).contains("pkcs8"));
    assert!(SigningKey::from_pkcs8(vec![1, 2, 3], T0, None).is_err());
    assert!(KeySet::new(Vec::new()).is_err());
}

/// `token::sign` signs with the key pair it keeps parsed; the token is byte for byte the one
/// `jsonwebtoken::encode` makes from the stored PKCS#8 document (Ed25519 is deterministic).
#[test]
fn signing_makes_the_token_jsonwebtoken_would() {
    let keys = keyset();
    let key = keys.signer();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let theirs = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ed_der(key.pkcs8()),
    )
    .unwrap();
    let ours = token::sign(&claims(), key).unwrap();
    assert_eq!(ours.expose(), theirs);
}
