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
        body_commitment: g.commitments.map(|c| c.body(body.as_bytes())),
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
    // The first grant's use is found through the grant index (SQLite builds it in the
    // background), the second's among the events not indexed yet.
    db.store.index_audit().unwrap();
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

/// A read event about `g` (what every `GET /v1/lease` appends).
fn read_event(db: &TestDb, g: &Grant) {
    let event = audit::NewEvent {
        at: NOW,
        tenant: Some(g.tenant),
        grant: Some(g.id),
        lease: None,
        kind: audit::AuditKind::PayloadRead,
        actor: Actor::system(),
        detail: json!({}),
    };
    db.store.append_audit(&[event]).unwrap();
}

/// The seqs of `g`'s history, checked to be its own and in order.
fn history(db: &TestDb, g: &Grant) -> Vec<i64> {
    let events = db.store.read(|c| audit::for_grant(c, g.id)).unwrap();
    assert!(events.iter().all(|e| e.grant_id == Some(g.id.to_string())));
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    seqs
}

/// A grant's history is whole, in order and without doubles whatever the background indexer
/// has done: nothing indexed yet, everything indexed, a pass cut off after inserting entries
/// but before moving its watermark, and the same events indexed twice. (SQLite defers its index
/// by grant; PostgreSQL indexes as it goes, and `index_audit` has nothing to do there.)
fn grant_history_is_whole_whatever_the_indexer_did(db: &TestDb) {
    use diesel::prelude::*;
    use linklease_store::schema::{audit_grant_index, audit_grant_index_state};
    let sqlite = db.store.backend_name() == "sqlite";
    let acme = tenant(db, "acme");
    let a = grant(db, acme, json!({"payload": {"a": 1}}));
    let b = grant(db, acme, json!({"payload": {"b": 2}}));
    for g in [&a, &b, &a] {
        read_event(db, g);
    }
    let (a3, b2) = (history(db, &a), history(db, &b));
    assert_eq!((a3.len(), b2.len()), (3, 2), "nothing indexed yet");

    let moved = db.store.index_audit().unwrap();
    if sqlite {
        assert!(moved >= 5, "{moved}");
    } else {
        assert_eq!(moved, 0);
    }
    assert_eq!((history(db, &a), history(db, &b)), (a3.clone(), b2.clone()));
    assert_eq!(db.store.index_audit().unwrap(), 0, "nothing new");

    read_event(db, &a);
    read_event(db, &a);
    let a5 = history(db, &a);
    assert_eq!(a5.len(), 5, "indexed and not yet indexed");
    assert_eq!(a5[..3], a3[..]);
    if sqlite {
        // A pass cut off half-way: entries past the watermark, which readers must not count twice.
        db.store
            .write(|c| {
                for seq in &a5[3..] {
                    diesel::insert_into(audit_grant_index::table)
                        .values((
                            audit_grant_index::grant_id.eq(a.id.to_string()),
                            audit_grant_index::seq.eq(seq),
                        ))
                        .execute(c)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(history(db, &a), a5);
        // An event whose grant is spelt unlike any written by linklease is indexed as it is.
        let odd_seq: i64 = db
            .store
            .write(|c| {
                use linklease_store::schema::audit_events as e;
                Ok(diesel::insert_into(e::table)
                    .values((
                        e::at.eq(0),
                        e::grant_id.eq("ODD"),
                        e::kind.eq("payload.read"),
                        e::actor_kind.eq("system"),
                        e::detail.eq("{}"),
                    ))
                    .returning(e::seq)
                    .get_result(c)?)
            })
            .unwrap();
        // The next pass inserts them again, harmlessly, and moves the watermark past them.
        assert_eq!(db.store.index_audit().unwrap(), 3);
        let odd: Vec<(String, i64)> = db
            .store
            .read(|c| {
                Ok(audit_grant_index::table
                    .filter(audit_grant_index::grant_id.eq("ODD"))
                    .load(c)?)
            })
            .unwrap();
        assert_eq!(odd, vec![("ODD".to_string(), odd_seq)]);
        let upto: i64 = db
            .store
            .read(|c| {
                Ok(audit_grant_index_state::table
                    .select(audit_grant_index_state::upto)
                    .get_result(c)?)
            })
            .unwrap();
        assert_eq!(upto, odd_seq);
        let indexed: i64 = db
            .store
            .read(|c| {
                Ok(audit_grant_index::table
                    .filter(audit_grant_index::grant_id.eq(a.id.to_string()))
                    .count()
                    .get_result(c)?)
            })
            .unwrap();
        assert_eq!(indexed, 5);
    }
    assert_eq!((history(db, &a), history(db, &b)), (a5, b2));
}

/// The migration that defers SQLite's grant index indexes the events already stored: undone
/// and applied again over a log with events, every grant's history is whole and indexed.
#[test]
fn sqlite_deferred_index_migration_indexes_stored_events() {
    use diesel::prelude::*;
    use linklease_store::schema::{audit_grant_index, audit_grant_index_state};
    let db = TestDb::sqlite();
    let acme = tenant(&db, "acme");
    let a = grant(&db, acme, json!({"payload": {"a": 1}}));
    read_event(&db, &a);
    let before = history(&db, &a);
    assert_eq!(before.len(), 2);
    let backend = linklease_store::Backend::from_url(&db.url).unwrap();
    // Undo the later migrations down to the audit queue, which follows the deferred index.
    let mut reverted = 1;
    while linklease_store::migrate::revert_last(&backend).unwrap() != "20261127000001" {
        reverted += 1;
        assert!(reverted < 20, "no audit queue migration");
    }
    let undone = linklease_store::migrate::revert_last(&backend).unwrap();
    assert_eq!(
        undone, "20261126000001",
        "the deferred index comes before it"
    );
    assert_eq!(db.store.migrate().unwrap().len(), reverted + 1);
    let (indexed, upto): (i64, i64) = db
        .store
        .read(|c| {
            Ok((
                audit_grant_index::table.count().get_result(c)?,
                audit_grant_index_state::table
                    .select(audit_grant_index_state::upto)
                    .get_result(c)?,
            ))
        })
        .unwrap();
    assert_eq!(
        indexed, 2,
        "the grant's two events (the tenant's own have no grant)"
    );
    assert_eq!(upto, *before.last().unwrap());
    assert_eq!(history(&db, &a), before);
}

/// Events as stored: (chained, still queued), read without chaining anything.
fn stored_events(db: &TestDb) -> (i64, i64) {
    use diesel::prelude::*;
    use linklease_store::schema::{audit_events, audit_queue};
    db.store
        .read(|c| {
            Ok((
                audit_events::table.count().get_result(c)?,
                audit_queue::table.count().get_result(c)?,
            ))
        })
        .unwrap()
}

/// The chain positions of every event of `tenant`'s chain, in log order.
fn positions(db: &TestDb, tenant: linklease_grant::TenantId) -> Vec<i64> {
    db.store
        .read(audit::all)
        .unwrap()
        .into_iter()
        .filter(|e| e.chain.as_deref() == Some(tenant.to_string().as_str()))
        .map(|e| e.chain_seq.unwrap())
        .collect()
}

/// PostgreSQL: a change's events are committed to the queue with it, not to the chain; the
/// first reader of the log chains them, so it reads them at once.
#[test]
fn postgres_events_wait_in_the_queue_until_read() {
    let Some(db) = TestDb::postgres() else { return };
    let acme = tenant(&db, "acme");
    let a = grant(&db, acme, json!({"payload": {"a": 1}}));
    read_event(&db, &a);
    let (chained, queued) = stored_events(&db);
    assert_eq!(
        (chained, queued),
        (0, 4),
        "tenant, key, grant, read: queued"
    );
    let kinds: Vec<String> = db
        .store
        .read(|c| audit::for_grant(c, a.id))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["grant.created", "payload.read"]);
    assert_eq!(stored_events(&db), (4, 0), "the read chained them all");
    assert_eq!(
        positions(&db, acme.tenant),
        [1, 2, 3, 4],
        "in the order recorded"
    );
    assert_eq!(verify(&db).unwrap().events, 4);
}

/// PostgreSQL: writers and several chainers at once (as on several instances) chain every
/// event exactly once, each chain without a gap, and the log verifies.
#[test]
fn postgres_concurrent_chainers_chain_every_event_once() {
    const WRITERS: usize = 4;
    const EVENTS: usize = 40;
    let Some(db) = TestDb::postgres() else { return };
    let acme = tenant(&db, "acme");
    let bravo = tenant(&db, "bravo");
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (db, done) = (&db, &done);
            scope.spawn(move || {
                for i in 0..EVENTS {
                    let issuer = if (w + i) % 2 == 0 { acme } else { bravo };
                    let event = audit::NewEvent {
                        at: NOW,
                        tenant: Some(issuer.tenant),
                        grant: None,
                        lease: None,
                        kind: audit::AuditKind::PayloadRead,
                        actor: Actor::system(),
                        detail: json!({ "writer": w, "i": i }),
                    };
                    db.store.append_audit(&[event.clone(), event]).unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        for _ in 0..3 {
            let (db, done) = (&db, &done);
            scope.spawn(move || {
                while done.load(std::sync::atomic::Ordering::SeqCst) < WRITERS {
                    db.store.chain_audit().unwrap();
                }
            });
        }
    });
    db.store.chain_audit().unwrap();
    let total = 4 + WRITERS * EVENTS * 2;
    assert_eq!(stored_events(&db), (total as i64, 0));
    for issuer in [acme, bravo] {
        let seqs = positions(&db, issuer.tenant);
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    }
    assert_eq!(verify(&db).unwrap().events, total as u64);
}

/// PostgreSQL: a serving process's chainer empties the queue without any reader.
#[test]
fn postgres_background_chainer_empties_the_queue() {
    let Some(db) = TestDb::postgres() else { return };
    let chainer = db.store.start_audit_chainer().unwrap();
    assert!(chainer.is_some());
    let acme = tenant(&db, "acme");
    grant(&db, acme, json!({"payload": {"a": 1}}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored_events(&db) != (3, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            stored_events(&db)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let sqlite = TestDb::sqlite();
    assert!(
        sqlite.store.start_audit_chainer().unwrap().is_none(),
        "SQLite has no queue"
    );
}

backend_tests!(
    grant_history_is_whole_whatever_the_indexer_did,
    purge_keeps_the_evidence_of_ended_grants_only,
    submissions_allow_only_emptying_a_body,
    verify_names_forged_rows,
    checkpoints_and_bundles_survive_rotation,
);
