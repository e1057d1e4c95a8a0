//! Tamper each way on a synthetic log; bundles signed and checked offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use linklease_audit::bundle::{self, BundleError, Header};
use linklease_audit::{AuditKey, ChainVerifier, EventRecord, GENESIS, Head, Tamper};
use ring::rand::SystemRandom;

/// A log of `n` events over two tenant chains and the system chain, properly linked.
fn log(n: i64) -> Vec<EventRecord> {
    let mut last: std::collections::HashMap<String, (i64, [u8; 32])> = Default::default();
    (1..=n)
        .map(|seq| {
            let chain = match seq % 5 {
                0 => "system".to_owned(),
                1 | 3 => "tenant-a".to_owned(),
                _ => "tenant-b".to_owned(),
            };
            let (pos, prev) = last.get(&chain).copied().unwrap_or((0, GENESIS));
            let mut e = EventRecord {
                seq,
                chain: chain.clone(),
                chain_seq: pos + 1,
                at: 1_700_000_000_000_000 + seq,
                tenant: (chain != "system").then(|| chain.clone()),
                grant: Some(format!("g{seq}")),
                lease: None,
                kind: "payload.read".into(),
                actor_kind: "lease".into(),
                actor_id: Some("l1".into()),
                actor_ip: Some("10.0.0.1".into()),
                actor_user_agent: None,
                detail: format!("{{\"n\":{seq}}}"),
                prev_hash: prev,
                hash: [0; 32],
            };
            e.hash = e.expected_hash();
            last.insert(chain, (e.chain_seq, e.hash));
            e
        })
        .collect()
}

fn heads(events: &[EventRecord]) -> Vec<Head> {
    let mut out: Vec<Head> = Vec::new();
    for e in events {
        out.retain(|h| h.chain != e.chain);
        out.push(Head {
            chain: e.chain.clone(),
            chain_seq: e.chain_seq,
            hash: e.hash,
        });
    }
    out
}

fn verify(events: &[EventRecord], heads: &[Head]) -> Result<(), Tamper> {
    let mut v = ChainVerifier::new();
    for e in events {
        v.push(e)?;
    }
    v.finish(heads)
}

#[test]
fn an_intact_log_verifies() {
    let events = log(50);
    assert_eq!(verify(&events, &heads(&events)), Ok(()));
}

#[test]
fn every_kind_of_tampering_is_named() {
    let events = log(50);
    let h = heads(&events);

    let mut edited = events.clone();
    edited[10].detail = "{\"n\":999}".into();
    assert_eq!(verify(&edited, &h), Err(Tamper::Edited { seq: 11 }));

    let mut rehashed = events.clone();
    rehashed[10].actor_ip = Some("10.6.6.6".into());
    rehashed[10].hash = rehashed[10].expected_hash();
    assert!(
        matches!(
            verify(&rehashed, &h),
            Err(Tamper::Broken { seq, .. }) if seq > 11
        ),
        "a recomputed hash breaks the next link"
    );

    let mut deleted = events.clone();
    deleted.remove(10);
    assert!(matches!(verify(&deleted, &h), Err(Tamper::Broken { .. })));

    let mut inserted = events.clone();
    let mut extra = events[10].clone();
    extra.seq = 1000;
    inserted.insert(20, extra);
    assert!(verify(&inserted, &h).is_err());

    let mut swapped = events.clone();
    swapped.swap(10, 12);
    (swapped[10].seq, swapped[12].seq) = (11, 13);
    assert!(matches!(
        verify(&swapped, &h),
        Err(Tamper::Broken { seq: 11, .. })
    ));

    let truncated = &events[..45];
    assert!(matches!(
        verify(truncated, &h),
        Err(Tamper::Truncated { .. })
    ));

    let mut out_of_order = events.clone();
    out_of_order[5].seq = 2;
    assert_eq!(
        verify(&out_of_order, &h),
        Err(Tamper::OutOfOrder { seq: 2, after: 5 })
    );
}

#[test]
fn pins_catch_a_rewritten_tail() {
    let events = log(30);
    // An attacker rewrites chain tenant-a from position 4 on and fixes up every hash.
    let mut forged = events.clone();
    let mut last: std::collections::HashMap<String, (i64, [u8; 32])> = Default::default();
    for e in forged.iter_mut() {
        if e.chain == "tenant-a" && e.chain_seq >= 4 {
            e.detail = "{\"forged\":true}".into();
        }
        let (_, prev) = last.get(&e.chain).copied().unwrap_or((0, GENESIS));
        e.prev_hash = prev;
        e.hash = e.expected_hash();
        last.insert(e.chain.clone(), (e.chain_seq, e.hash));
    }
    assert_eq!(
        verify(&forged, &heads(&forged)),
        Ok(()),
        "unkeyed: consistent"
    );
    // A signed checkpoint taken before holds the real hash at position 6.
    let real = events
        .iter()
        .find(|e| e.chain == "tenant-a" && e.chain_seq == 6)
        .unwrap();
    let mut v = ChainVerifier::new();
    v.pin(Head {
        chain: "tenant-a".into(),
        chain_seq: 6,
        hash: real.hash,
    });
    let err = forged.iter().try_for_each(|e| v.push(e)).unwrap_err();
    assert!(matches!(err, Tamper::HeadMismatch { chain_seq: 6, .. }));
}

#[test]
fn bundles_verify_offline_and_one_flipped_byte_fails() {
    let rng = SystemRandom::new();
    let key = AuditKey::generate(&rng).unwrap();
    let events = log(40);
    // A window: events 11..=40, continuing from each chain's state after event 10.
    let starts = heads(&events[..10]);
    let header = Header {
        format: String::new(),
        tenant: None,
        from: None,
        to: None,
        created_at: "2026-11-23T12:00:00Z".into(),
        count: 0,
        starts,
        ends: Vec::new(),
    };
    let bytes = bundle::write(header, &events[10..], &key).unwrap();
    let verified = bundle::verify(&bytes, &[key.public()]).unwrap();
    assert_eq!(verified.header.count, 30);
    assert_eq!(verified.kid, key.kid);

    for i in [5, bytes.len() / 2, bytes.len() - 10] {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        assert!(
            bundle::verify(&flipped, &[key.public()]).is_err(),
            "byte {i}"
        );
    }
    let other = AuditKey::generate(&rng).unwrap();
    assert!(matches!(
        bundle::verify(&bytes, &[other.public()]),
        Err(BundleError::UnknownKey(_))
    ));
    let mut impostor = other.public();
    impostor.kid = key.kid.clone();
    assert!(bundle::verify(&bytes, &[impostor]).is_err());
    assert!(bundle::verify(b"not a bundle", &[key.public()]).is_err());
    // Re-signing a tampered bundle needs the private key: with another key it is unknown.
    let mut forged_events = events[10..].to_vec();
    forged_events[3].detail = "{}".into();
    let forged = bundle::write(
        Header {
            format: String::new(),
            tenant: None,
            from: None,
            to: None,
            created_at: String::new(),
            count: 0,
            starts: heads(&events[..10]),
            ends: Vec::new(),
        },
        &forged_events,
        &key,
    )
    .unwrap();
    assert!(matches!(
        bundle::verify(&forged, &[key.public()]),
        Err(BundleError::Chain(Tamper::Edited { .. }))
    ));
    // Keys round-trip through PKCS#8 (storage) with the same kid.
    let again = AuditKey::from_pkcs8(key.pkcs8().to_vec()).unwrap();
    assert_eq!(again.kid, key.kid);
    assert!(!format!("{key:?}").contains("pkcs8"));
}
