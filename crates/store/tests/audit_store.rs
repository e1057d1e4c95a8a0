//! The audit log's store-level pieces on SQLite and PostgreSQL: retention (`purge`) keeps the
//! evidence, the submissions trigger allows nothing but emptying a body, verification names a
//! forged row, and checkpoints and bundles survive an audit key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::RunQueryDsl;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use linklease_audit::{Tamper, bundle};
use linklease_grant::{
    FlowId, Grant, GrantId, GrantRequest, Issuer, LeaseId, SecretKeys, SubmissionId,
};
use linklease_lease::{Flow, FlowLimits, Holder};
use linklease_store::api_keys::{self, Scope};
use linklease_store::audit::{self, Actor};
use linklease_store::grants::{self, Failure};
use linklease_store::leases::{self, LeaseRecord};
use linklease_store::purge::{self, Purged};
use linklease_store::submissions::{self, SubmissionRecord};
use linklease_store::testing::TestDb;
use linklease_store::{audit_keys, backend_tests, flows, tenants};

const NOW: OffsetDateTime = datetime!(2026-11-24 09:30:00.123456 UTC);

fn keys() -> SecretKeys {
    SecretKeys::from_master(&[7; 32])
}

fn rng() -> SystemRandom {
    SystemRandom::new()
}

fn tenant(db: &TestDb, name: &str) -> Issuer {
    db.store
        .write(|c| {
            let t = tenants::create(c, name, NOW, &rng())?;
            let scopes = Scope::ALL.into_iter().collect();
            let (key, _) = api_keys::create(c, &keys(), t.id, &scopes, NOW, &rng())?;
            Ok(Issuer {
                tenant: t.id,
                api_key: key.id,
            })
        })
        .unwrap()
}

fn grant(db: &TestDb, issuer: Issuer, body: Value) -> Grant {
    let req: GrantRequest = serde_json::from_value(body).unwrap();
    let issued = req.issue(issuer, NOW, &keys(), &rng()).unwrap();
    db.store
        .write(|c| grants::insert(c, &issued.grant, &Actor::system()))
        .unwrap();
    issued.grant.grant
}

/// A lease on `grant` and one submission through it.
fn submit(db: &TestDb, g: &Grant, at: OffsetDateTime) -> SubmissionRecord {
    let flow = Flow::open(
        FlowId::new(NOW, &rng()).unwrap(),
        g.id,
        Holder::Browser,
        NOW,
        &FlowLimits::default(),
    );
    db.store.write(|c| flows::insert(c, &flow, None)).unwrap();
    let lease = LeaseRecord {
        id: LeaseId::new(NOW, &rng()).unwrap(),
        tenant: g.tenant,
        grant: g.id,
        flow: flow.id,
        client: None,
        issued_at: NOW,
        expires_at: NOW + Duration::minutes(15),
        ended_at: None,
        end_reason: None,
        ip: Some("192.0.2.1".into()),
        user_agent: None,
    };
    db.store.write(|c| leases::insert(c, &lease)).unwrap();
    let body = json!({"creates": [], "fields": {"note": "private words"}}).to_string();
    let s = SubmissionRecord {
        id: SubmissionId::new(at, &rng()).unwrap(),
        tenant: g.tenant,
        grant: g.id,
        lease: lease.id,
        received_at: at,
        body_sha256: linklease_grant::request::sha256(body.as_bytes()),
        body,
        creates: 0,
        idempotency_key: None,
    };
    db.store.write(|c| submissions::insert(c, &s)).unwrap();
    s
}

fn payload(db: &TestDb, id: GrantId) -> Option<String> {
    db.store.read(|c| grants::payload(c, id)).unwrap()
}

fn bodies(db: &TestDb, g: &Grant) -> Vec<(String, [u8; 32])> {
    db.store
        .read(|c| submissions::list(c, g.tenant, Some(g.id), None, 100))
        .unwrap()
        .into_iter()
        .map(|s| (s.body, s.body_sha256))
        .collect()
}

fn kinds(db: &TestDb, id: GrantId) -> Vec<String> {
    db.store
        .read(|c| audit::for_grant(c, id))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn verify(db: &TestDb) -> Result<audit::Report, Tamper> {
    db.store
        .read(|c| {
            let keys = audit_keys::public_keys(c)?;
            audit::verify(c, &keys)
        })
        .unwrap()
}

/// Runs purge to the end in batches of `limit`.
fn purge_all(db: &TestDb, ended_before: OffsetDateTime, now: OffsetDateTime) -> Purged {
    let mut total = Purged::default();
    let mut after = None;
    loop {
        let batch = db
            .store
            .write(|c| purge::ended_before(c, ended_before, now, &Actor::operator(), after, 2))
            .unwrap();
        total.grants += batch.grants;
        total.payloads += batch.payloads;
        total.submissions += batch.submissions;
        match batch.next {
            Some(next) => after = Some(next),
            None => return total,
        }
    }
}

fn purge_keeps_the_evidence_of_ended_grants_only(db: &TestDb) {
    let acme = tenant(db, "acme");
    let t = |minutes: i64| NOW + Duration::minutes(minutes);
    let rfc = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    // Expired an hour in.
    let expired = grant(
        db,
        acme,
        json!({"payload": {"a": 1}, "expires_at": rfc(t(60))}),
    );
    // Revoked after 10 minutes.
    let revoked = grant(db, acme, json!({"payload": {"b": 2}}));
    db.store
        .write(|c| {
            grants::revoke(
                c,
                acme.tenant,
                revoked.id,
                "done",
                &Actor::operator(),
                t(10),
            )
        })
        .unwrap();
    // Locked after five wrong factors.
    let locked = grant(db, acme, json!({"payload": {"c": 3}}));
    db.store
        .write(|c| {
            grants::lock_state(c, locked.id)?;
            for _ in 0..5 {
                grants::count_failure(c, &locked, Failure::Factor, &FlowLimits::default(), t(5))?;
            }
            Ok(())
        })
        .unwrap();
    // Used up after 20 minutes, with a submission.
    let used = grant(db, acme, json!({"payload": {"d": 4}}));
    let used_submission = submit(db, &used, t(20));
    db.store
        .write(|c| grants::take_use(c, &used, &Actor::system(), t(20)))
        .unwrap();
    // Used up only after three hours.
    let used_late = grant(db, acme, json!({"payload": {"e": 5}}));
    submit(db, &used_late, t(180));
    db.store
        .write(|c| grants::take_use(c, &used_late, &Actor::system(), t(180)))
        .unwrap();
    // Still active, with a submission.
    let active = grant(db, acme, json!({"payload": {"f": 6}, "max_uses": 3}));
    let active_submission = submit(db, &active, t(30));
    db.store
        .write(|c| grants::take_use(c, &active, &Actor::system(), t(30)))
        .unwrap();
    let before = verify(db).unwrap();

    // Ended before two hours in: the first four.
    let purged = purge_all(db, t(120), t(240));
    assert_eq!(
        purged,
        Purged {
            grants: 4,
            payloads: 4,
            submissions: 1,
            next: None
        }
    );
    for g in [&expired, &revoked, &locked, &used] {
        assert_eq!(payload(db, g.id), None, "{}", g.id);
        assert_eq!(kinds(db, g.id).last().unwrap(), "payload.purged");
    }
    assert_eq!(
        bodies(db, &used),
        vec![(String::new(), used_submission.body_sha256)],
        "the body is emptied, its hash kept"
    );
    // The grant row (and its payload hash) stays.
    let kept = db.store.read(|c| grants::by_id(c, used.id)).unwrap();
    assert_eq!(kept.grant.payload_sha256, used.payload_sha256);
    for g in [&used_late, &active] {
        assert!(payload(db, g.id).is_some(), "{}", g.id);
        assert!(!kinds(db, g.id).contains(&"payload.purged".to_string()));
    }
    assert_eq!(
        bodies(db, &active),
        vec![(
            active_submission.body.clone(),
            active_submission.body_sha256
        )]
    );
    // The event says what was removed and what proves it.
    let event = db
        .store
        .read(|c| audit::for_grant(c, used.id))
        .unwrap()
        .pop()
        .unwrap();
    let detail: Value = serde_json::from_str(&event.detail).unwrap();
    assert_eq!(detail["status"], "used");
    assert_eq!(detail["payload_removed"], true);
    assert_eq!(detail["submission_bodies_emptied"], 1);
    assert_eq!(detail["ended_before"], rfc(t(120)));
    assert_eq!(event.actor_kind, "operator");
    assert!(!event.detail.contains("private words"));

    // The chain is intact and longer by one event per purged grant.
    let after = verify(db).unwrap();
    assert_eq!(after.events, before.events + 4);

    // Twice is harmless: nothing left, no new event.
    assert_eq!(purge_all(db, t(120), t(240)), Purged::default());
    assert_eq!(verify(db).unwrap().events, after.events);

    // A date in the future only reaches grants that have ended by now.
    let far = t(60 * 24 * 30);
    let purged = purge_all(db, far, t(240));
    assert_eq!(
        (purged.grants, purged.submissions),
        (1, 1),
        "used_late only"
    );
    assert_eq!(payload(db, used_late.id), None);
    assert!(payload(db, active.id).is_some());
}

fn submissions_allow_only_emptying_a_body(db: &TestDb) {
    let acme = tenant(db, "acme");
    let g = grant(db, acme, json!({"payload": {}, "max_uses": 5}));
    let s = submit(db, &g, NOW);
    let id = s.id;
    let run = |sql: &str| db.store.write(|c| Ok(diesel::sql_query(sql).execute(c)?));
    for sql in [
        format!("UPDATE submissions SET body = 'x' WHERE id = '{id}'"),
        format!("UPDATE submissions SET body = '', creates = creates + 1 WHERE id = '{id}'"),
        format!("UPDATE submissions SET body = '', received_at = 0 WHERE id = '{id}'"),
        format!("UPDATE submissions SET body = '', idempotency_key = 'k' WHERE id = '{id}'"),
        format!("UPDATE submissions SET body = '', lease_id = grant_id WHERE id = '{id}'"),
        format!("UPDATE submissions SET creates = 1 WHERE id = '{id}'"),
        format!("DELETE FROM submissions WHERE id = '{id}'"),
    ] {
        let message = run(&sql).unwrap_err().to_string();
        assert!(
            message.contains("append-only") || message.contains("immutable"),
            "{sql}: {message}"
        );
    }
    assert_eq!(bodies(db, &g), vec![(s.body.clone(), s.body_sha256)]);
    // The one change retention makes.
    assert_eq!(
        run(&format!(
            "UPDATE submissions SET body = '' WHERE id = '{id}'"
        ))
        .unwrap(),
        1
    );
    assert_eq!(bodies(db, &g), vec![(String::new(), s.body_sha256)]);
    // Once empty, it stays empty.
    for sql in [
        format!("UPDATE submissions SET body = '' WHERE id = '{id}'"),
        format!("UPDATE submissions SET body = 'back' WHERE id = '{id}'"),
    ] {
        assert!(run(&sql).is_err(), "{sql}");
    }
    // Payloads: deleted by retention, never updated.
    assert!(
        run(&format!(
            "UPDATE grant_payloads SET payload = '{{}}' WHERE grant_id = '{}'",
            g.id
        ))
        .is_err()
    );
}

fn verify_names_forged_rows(db: &TestDb) {
    let acme = tenant(db, "acme");
    let g = grant(db, acme, json!({"payload": {}}));
    db.store
        .write(|c| grants::revoke(c, acme.tenant, g.id, "r", &Actor::operator(), NOW))
        .unwrap();
    let intact = verify(db).unwrap();
    assert_eq!((intact.unchained, intact.chains), (0, 2));
    let next: i64 = db
        .store
        .read(audit::all)
        .unwrap()
        .last()
        .map(|e| e.seq + 1)
        .unwrap();
    let pg = db.store.backend_name() == "postgres";
    let overriding = if pg { "OVERRIDING SYSTEM VALUE" } else { "" };
    let run = |sql: String| {
        db.store
            .write(|c| Ok(diesel::sql_query(&sql).execute(c)?))
            .unwrap()
    };

    // A row without chain fields, passing itself off as older than the chain.
    run(format!(
        "INSERT INTO audit_events (seq, at, tenant_id, grant_id, kind, actor_kind, detail) \
         {overriding} VALUES ({next}, 0, '{}', '{}', 'payload.read', 'lease', '{{}}')",
        acme.tenant, g.id
    ));
    assert_eq!(verify(db), Err(Tamper::Edited { seq: next }));
    run(format!("DELETE FROM audit_events WHERE seq = {next}"));
    assert!(verify(db).is_ok());

    // A copy of the last event claiming the next position: its hash does not fit.
    run(format!(
        "INSERT INTO audit_events (seq, at, tenant_id, grant_id, lease_id, kind, actor_kind, \
         actor_id, actor_ip, actor_user_agent, detail, prev_hash, hash, chain, chain_seq) \
         {overriding} SELECT {next}, at, tenant_id, grant_id, lease_id, 'payload.read', \
         actor_kind, actor_id, actor_ip, actor_user_agent, detail, hash, hash, chain, \
         chain_seq + 1 FROM audit_events WHERE seq = {}",
        next - 1
    ));
    assert_eq!(verify(db), Err(Tamper::Edited { seq: next }));
}

fn checkpoints_and_bundles_survive_rotation(db: &TestDb) {
    let acme = tenant(db, "acme");
    grant(db, acme, json!({"payload": {}}));
    let first = db
        .store
        .write(|c| {
            let key = audit_keys::ensure(c, &keys(), NOW, &rng())?;
            audit_keys::checkpoint(c, &key, NOW)?;
            Ok(key.kid)
        })
        .unwrap();
    let old_bundle = db
        .store
        .write(|c| audit_keys::export_bundle(c, &keys(), None, None, None, NOW, &rng()))
        .unwrap();
    let second = db
        .store
        .write(|c| audit_keys::rotate(c, &keys(), NOW + Duration::seconds(1), &rng()))
        .unwrap();
    assert_ne!(first, second);
    grant(db, acme, json!({"payload": {}}));
    let new_bundle = db
        .store
        .write(|c| {
            audit_keys::export_bundle(c, &keys(), Some(acme.tenant), None, None, NOW, &rng())
        })
        .unwrap();
    let public = db.store.read(audit_keys::public_keys).unwrap();
    assert_eq!(public.len(), 2);
    assert_eq!(public[0].kid, second, "the active key first");
    let report = verify(db).unwrap();
    // One checkpoint per non-empty chain at each signing: acme; acme; acme.
    assert_eq!(report.checkpoints, 3);
    assert_eq!(bundle::verify(&old_bundle, &public).unwrap().kid, first);
    let new = bundle::verify(&new_bundle, &public).unwrap();
    assert_eq!(new.kid, second);
    assert_eq!(new.header.tenant, Some(acme.tenant.to_string()));
    let acme_events = db
        .store
        .read(audit::all)
        .unwrap()
        .iter()
        .filter(|e| e.tenant_id == Some(acme.tenant.to_string()))
        .count();
    assert_eq!(new.header.count, acme_events as u64);
    assert!(matches!(
        bundle::verify(&new_bundle, &public[1..]),
        Err(bundle::BundleError::UnknownKey(_))
    ));
}

backend_tests!(
    purge_keeps_the_evidence_of_ended_grants_only,
    submissions_allow_only_emptying_a_body,
    verify_names_forged_rows,
    checkpoints_and_bundles_survive_rotation,
);
