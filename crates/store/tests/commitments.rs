//! Salted commitments on SQLite and PostgreSQL: a grant's salt and payload commitment round-trip,
//! its events show the commitment and never the plain SHA-256, and a grant stored without a salt
//! (as every grant before the migration was) reads back and is recorded as it always was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

use linklease_grant::{GrantRequest, Issuer, NewGrant, SecretKeys, commitment, hex};
use linklease_store::api_keys::{self, Scope};
use linklease_store::audit::{self, Actor};
use linklease_store::testing::TestDb;
use linklease_store::{audit_keys, backend_tests, grants, purge, tenants};

const NOW: time::OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

fn issuer(db: &TestDb) -> Issuer {
    let rng = SystemRandom::new();
    db.store
        .write(|c| {
            let t = tenants::create(c, "clinic", NOW, &rng)?;
            let scopes = Scope::ALL.into_iter().collect();
            let keys = SecretKeys::from_master(&[7; 32]);
            let (key, _) = api_keys::create(c, &keys, t.id, &scopes, NOW, &rng)?;
            Ok(Issuer {
                tenant: t.id,
                api_key: key.id,
            })
        })
        .unwrap()
}

fn issue(issuer: Issuer) -> NewGrant {
    let req: GrantRequest =
        serde_json::from_value(json!({"payload": {"result": "negative"}})).unwrap();
    req.issue(
        issuer,
        NOW,
        &SecretKeys::from_master(&[7; 32]),
        &SystemRandom::new(),
    )
    .unwrap()
    .grant
}

/// The details of the grant's events, by kind.
fn details(db: &TestDb, new: &NewGrant) -> Vec<(String, Value)> {
    db.store
        .read(|c| audit::for_grant(c, new.grant.id))
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, serde_json::from_str(&e.detail).unwrap()))
        .collect()
}

fn salted_commitments_are_stored_and_old_rows_keep_their_hashes(db: &TestDb) {
    let issuer = issuer(db);
    let salted = issue(issuer);
    let mut legacy = issue(issuer);
    legacy.grant.commitments = None;
    for new in [&salted, &legacy] {
        db.store
            .write(|c| grants::insert(c, new, &Actor::system()))
            .unwrap();
    }

    // The salted grant: salt and commitment read back; the commitment is HMAC-SHA256 keyed
    // with the salt over the stored payload bytes, and recomputing it needs only those two.
    let stored = db
        .store
        .read(|c| grants::by_id(c, salted.grant.id))
        .unwrap();
    let c = stored.grant.commitments.expect("a salt");
    assert_eq!(Some(c), salted.grant.commitments);
    let payload = db
        .store
        .read(|c| grants::payload(c, salted.grant.id))
        .unwrap()
        .unwrap();
    assert_eq!(c.payload, commitment::commit(&c.salt, payload.as_bytes()));
    let plain = hex::encode(&linklease_grant::request::sha256(payload.as_bytes()));
    assert_eq!(hex::encode(&stored.grant.payload_sha256), plain);
    let events = details(db, &salted);
    assert_eq!(events[0].0, "grant.created");
    assert_eq!(events[0].1["payload_commitment"], hex::encode(&c.payload));
    assert!(
        events[0].1.get("payload_sha256").is_none(),
        "{}",
        events[0].1
    );
    assert!(!events[0].1.to_string().contains(&plain));
    assert!(!events[0].1.to_string().contains(&hex::encode(&c.salt)));

    // The grant without a salt: none read back, and its event shows the plain hash.
    let old = db
        .store
        .read(|c| grants::by_id(c, legacy.grant.id))
        .unwrap();
    assert_eq!(old.grant.commitments, None);
    let events = details(db, &legacy);
    assert_eq!(
        events[0].1["payload_sha256"],
        hex::encode(&legacy.grant.payload_sha256)
    );
    assert!(events[0].1.get("payload_commitment").is_none());

    // Retention keeps each grant's own kind of evidence; the chain still verifies.
    let later = NOW + Duration::days(1);
    for new in [&salted, &legacy] {
        db.store
            .write(|c| {
                grants::revoke(
                    c,
                    issuer.tenant,
                    new.grant.id,
                    "done",
                    &Actor::system(),
                    NOW,
                )
            })
            .unwrap();
    }
    db.store
        .write(|c| purge::ended_before(c, later, later, &Actor::operator(), None, 10))
        .unwrap();
    let purged = |new: &NewGrant| {
        details(db, new)
            .into_iter()
            .find(|(kind, _)| kind == "payload.purged")
            .unwrap()
            .1
    };
    assert_eq!(
        purged(&salted)["payload_commitment"],
        hex::encode(&c.payload)
    );
    assert!(purged(&salted).get("payload_sha256").is_none());
    assert_eq!(
        purged(&legacy)["payload_sha256"],
        hex::encode(&legacy.grant.payload_sha256)
    );
    let report = db
        .store
        .read(|c| {
            let keys = audit_keys::public_keys(c)?;
            audit::verify(c, &keys)
        })
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
}

backend_tests!(salted_commitments_are_stored_and_old_rows_keep_their_hashes);
