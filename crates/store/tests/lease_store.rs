//! The lease-exchange storage suite (flows, grant counters, leases, submissions, signing keys):
//! every test runs on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use diesel::RunQueryDsl;
use ring::rand::SystemRandom;
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use linklease_grant::{
    ClientId, FlowId, Grant, GrantId, GrantRequest, GrantStatus, Issued, Issuer, LeaseId, Purpose,
    SecretHash, SecretKeys, SubmissionId, TenantId,
};
use linklease_lease::token::{self, Scope};
use linklease_lease::{Event, Flow, FlowLimits, Holder, KeySet, LeaseClaims, SentOtp, Step};
use linklease_store::api_keys::{self, Scope as ApiScope};
use linklease_store::audit::{self, Actor};
use linklease_store::flows::{self, StoredFlow};
use linklease_store::grants::{self, Failure};
use linklease_store::leases::{self, LeaseRecord};
use linklease_store::submissions::{self, SubmissionRecord};
use linklease_store::testing::TestDb;
use linklease_store::{StoreError, backend_tests, clients, signing_keys, tenants};

/// Microsecond precision: what both backends store (the server truncates its clock).
const NOW: OffsetDateTime = datetime!(2026-11-24 09:30:00.123456 UTC);

fn keys() -> SecretKeys {
    SecretKeys::from_master(&[11; 32])
}

fn rng() -> SystemRandom {
    SystemRandom::new()
}

/// A tenant with one API key.
fn tenant(db: &TestDb, name: &str) -> Issuer {
    db.store
        .write(|c| {
            let t = tenants::create(c, name, NOW, &rng())?;
            let scopes = ApiScope::ALL.into_iter().collect();
            let (key, _) = api_keys::create(c, &keys(), t.id, &scopes, NOW, &rng())?;
            Ok(Issuer {
                tenant: t.id,
                api_key: key.id,
            })
        })
        .unwrap()
}

/// A partner client of `tenant`.
fn client(db: &TestDb, tenant: TenantId) -> ClientId {
    db.store
        .write(|c| clients::create(c, &keys(), tenant, "partner", &[], NOW, &rng()))
        .unwrap()
        .0
        .id
}

/// Issues and stores a grant; returns it as stored.
fn grant(db: &TestDb, issuer: Issuer, body: serde_json::Value) -> Grant {
    let req: GrantRequest = serde_json::from_value(body).unwrap();
    let issued: Issued = req.issue(issuer, NOW, &keys(), &rng()).unwrap();
    db.store
        .write(|c| grants::insert(c, &issued.grant, &Actor::system()))
        .unwrap();
    issued.grant.grant
}

fn kinds(db: &TestDb, grant: GrantId) -> Vec<String> {
    db.store
        .read(|c| audit::for_grant(c, grant))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn count_kind(db: &TestDb, grant: GrantId, kind: &str) -> usize {
    kinds(db, grant).iter().filter(|k| *k == kind).count()
}

fn cookie_hash(secret: &str) -> SecretHash {
    keys().hash(Purpose::FlowCookie, &[secret.as_bytes()])
}

fn open_flow(db: &TestDb, grant: GrantId, holder: Holder, cookie: Option<&SecretHash>) -> Flow {
    let flow = Flow::open(
        FlowId::new(NOW, &rng()).unwrap(),
        grant,
        holder,
        NOW,
        &FlowLimits::default(),
    );
    db.store.write(|c| flows::insert(c, &flow, cookie)).unwrap();
    flow
}

fn get_flow(db: &TestDb, id: FlowId) -> StoredFlow {
    db.store.read(|c| flows::get(c, id)).unwrap()
}

fn save_flow(db: &TestDb, flow: &Flow, version: i32) -> Result<(), StoreError> {
    db.store.write(|c| flows::save(c, flow, version))
}

fn state(db: &TestDb, id: GrantId) -> grants::GrantRecord {
    db.store.read(|c| grants::by_id(c, id)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Flows

fn flows_round_trip_and_save_is_compare_and_set(db: &TestDb) {
    let limits = FlowLimits::default();
    let acme = tenant(db, "acme");
    let g = grant(
        db,
        acme,
        json!({"payload": {}, "otp": {"channel": "sms", "to": "+15550100123"}}),
    );
    let partner = client(db, acme.tenant);
    let cookie = cookie_hash("flow-cookie-secret");
    let browser = open_flow(db, g.id, Holder::Browser, Some(&cookie));
    let theirs = open_flow(db, g.id, Holder::Partner(partner), None);

    // Every field comes back, at version 0.
    let stored = get_flow(db, browser.id);
    assert_eq!(
        stored,
        StoredFlow {
            flow: browser.clone(),
            version: 0
        }
    );
    assert_eq!(stored.flow.step, Step::Visited);
    assert_eq!(stored.flow.expires_at, NOW + limits.flow_ttl);
    assert_eq!(stored.flow.otp, None);
    let stored_partner = get_flow(db, theirs.id);
    assert_eq!(stored_partner.flow, theirs);
    assert_eq!(stored_partner.flow.holder, Holder::Partner(partner));
    assert_eq!(stored_partner.version, 0);

    // The cookie finds the browser flow, and only that; a partner flow has no cookie.
    assert_eq!(
        db.store.read(|c| flows::by_cookie(c, &cookie)).unwrap(),
        stored
    );
    assert!(matches!(
        db.store
            .read(|c| flows::by_cookie(c, &cookie_hash("another secret"))),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        db.store
            .read(|c| flows::get(c, FlowId::new(NOW, &rng()).unwrap())),
        Err(StoreError::NotFound)
    ));
    // A cookie hash names one flow only.
    let clash = Flow::open(
        FlowId::new(NOW, &rng()).unwrap(),
        g.id,
        Holder::Browser,
        NOW,
        &limits,
    );
    assert!(matches!(
        db.store.write(|c| flows::insert(c, &clash, Some(&cookie))),
        Err(StoreError::Conflict(_))
    ));

    // Factor passed and its code recorded: the SentOtp is stored with the flow.
    let code_hash = keys().hash(Purpose::Otp, &[b"code"]);
    let t1 = NOW + Duration::seconds(20);
    let passed = browser
        .step(
            Event::Factor {
                matched: true,
                code: Some(code_hash),
            },
            t1,
            &limits,
        )
        .unwrap()
        .flow;
    save_flow(db, &passed, 0).unwrap();
    let after_factor = get_flow(db, browser.id);
    assert_eq!(after_factor.version, 1, "a save bumps the version");
    assert_eq!(after_factor.flow, passed);
    assert_eq!(after_factor.flow.step, Step::OtpSent);

    let t2 = NOW + Duration::seconds(21);
    let sent = passed;
    // One wrong try, so that `tries` is not the default either.
    let sent = sent
        .step(Event::Otp { matched: false }, t2, &limits)
        .unwrap()
        .flow;
    save_flow(db, &sent, 1).unwrap();
    let with_otp = get_flow(db, browser.id);
    assert_eq!(with_otp.version, 2);
    assert_eq!(with_otp.flow, sent);
    assert_eq!(with_otp.flow.step, Step::OtpSent);
    assert_eq!(with_otp.flow.sends, 1);
    assert_eq!(
        with_otp.flow.otp,
        Some(SentOtp {
            send: 1,
            hash: code_hash,
            sent_at: t1,
            expires_at: t1 + limits.otp_ttl,
            tries: 1,
        })
    );
    assert_eq!(
        db.store.read(|c| flows::by_cookie(c, &cookie)).unwrap(),
        with_otp,
        "by_cookie reads the same row"
    );

    // A stale version is refused and changes nothing.
    let stale = Flow {
        step: Step::Dead,
        otp: None,
        sends: 3,
        ..sent.clone()
    };
    for version in [0, 1, 3] {
        assert!(
            matches!(save_flow(db, &stale, version), Err(StoreError::Conflict(_))),
            "version {version}"
        );
    }
    assert_eq!(get_flow(db, browser.id), with_otp, "unchanged");

    // The right code: the flow is leased and its code is forgotten (the otp columns cleared).
    let leased = sent
        .step(
            Event::Otp { matched: true },
            t2 + Duration::seconds(5),
            &limits,
        )
        .unwrap()
        .flow;
    assert_eq!(leased.otp, None);
    save_flow(db, &leased, 2).unwrap();
    let done = get_flow(db, browser.id);
    assert_eq!(
        done,
        StoredFlow {
            flow: leased,
            version: 3
        }
    );

    // The partner flow was not touched by any of it.
    assert_eq!(get_flow(db, theirs.id), stored_partner);

    // Of two writers that read the same version, exactly one wins.
    let read = get_flow(db, theirs.id);
    let a = Flow {
        step: Step::FactorPassed,
        ..read.flow.clone()
    };
    let b = Flow {
        step: Step::Leased,
        ..read.flow.clone()
    };
    save_flow(db, &a, read.version).unwrap();
    assert!(matches!(
        save_flow(db, &b, read.version),
        Err(StoreError::Conflict(_))
    ));
    let now_stored = get_flow(db, theirs.id);
    assert_eq!(now_stored.flow, a);
    assert_eq!(now_stored.version, read.version + 1);
}

// ---------------------------------------------------------------------------------------------
// 2. take_use

fn take_use_race_gives_exactly_max_uses(db: &TestDb) {
    const THREADS: usize = 64;
    let acme = tenant(db, "acme");
    let g = Arc::new(grant(db, acme, json!({"payload": {}, "max_uses": 3})));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = db.store.clone();
            let g = Arc::clone(&g);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store.write(|c| grants::take_use(c, &g, &Actor::system(), NOW))
            })
        })
        .collect();
    let results: Vec<Result<u32, StoreError>> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut taken = Vec::new();
    let mut used = 0;
    for result in results {
        match result {
            Ok(n) => taken.push(n),
            Err(StoreError::GrantNotActive(GrantStatus::Used)) => used += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    taken.sort_unstable();
    assert_eq!(taken, [1, 2, 3], "each use is counted once");
    assert_eq!(used, THREADS - 3);
    let record = state(db, g.id);
    assert_eq!(record.state.uses, 3);
    assert_eq!(record.status(NOW), GrantStatus::Used);
    assert_eq!(count_kind(db, g.id, "grant.used"), 1);
    // And once used, it stays used.
    assert!(matches!(
        db.store
            .write(|c| grants::take_use(c, &g, &Actor::system(), NOW)),
        Err(StoreError::GrantNotActive(GrantStatus::Used))
    ));
    assert_eq!(state(db, g.id).state.uses, 3);
}

fn take_use_refuses_revoked_expired_and_locked_grants(db: &TestDb) {
    let acme = tenant(db, "acme");
    let take = |g: &Grant, now: OffsetDateTime| {
        db.store
            .write(|c| grants::take_use(c, g, &Actor::system(), now))
    };

    // One use of two leaves it active, and records no `grant.used`.
    let two = grant(db, acme, json!({"payload": {}, "max_uses": 2}));
    assert_eq!(take(&two, NOW).unwrap(), 1);
    assert_eq!(state(db, two.id).status(NOW), GrantStatus::Active);
    assert_eq!(count_kind(db, two.id, "grant.used"), 0);

    let revoked = grant(db, acme, json!({"payload": {}, "max_uses": 3}));
    db.store
        .write(|c| grants::revoke(c, acme.tenant, revoked.id, "x", &Actor::system(), NOW))
        .unwrap();
    assert!(matches!(
        take(&revoked, NOW),
        Err(StoreError::GrantNotActive(GrantStatus::Revoked))
    ));
    assert_eq!(state(db, revoked.id).state.uses, 0);

    let expiring = grant(
        db,
        acme,
        json!({"payload": {}, "max_uses": 3, "expires_at": "2026-11-25T00:00:00Z"}),
    );
    let expiry = expiring.expires_at;
    assert!(matches!(
        take(&expiring, expiry),
        Err(StoreError::GrantNotActive(GrantStatus::Expired))
    ));
    assert!(matches!(
        take(&expiring, expiry + Duration::days(1)),
        Err(StoreError::GrantNotActive(GrantStatus::Expired))
    ));
    assert_eq!(state(db, expiring.id).state.uses, 0);
    // Just before its expiry it still works.
    assert_eq!(
        take(&expiring, expiry - Duration::microseconds(1)).unwrap(),
        1
    );

    let locked = grant(db, acme, json!({"payload": {}, "max_uses": 3}));
    for _ in 0..5 {
        db.store
            .write(|c| {
                grants::count_failure(c, &locked, Failure::Factor, &FlowLimits::default(), NOW)
            })
            .unwrap();
    }
    assert!(matches!(
        take(&locked, NOW),
        Err(StoreError::GrantNotActive(GrantStatus::Locked))
    ));
    assert_eq!(state(db, locked.id).state.uses, 0);
}

/// `take_use` documents that it "fails with its status": the status `GrantState::status` derives
/// (revoked before locked before used before expired), the one every listing and API shows.
fn take_use_fails_with_the_grants_status_once_expired(db: &TestDb) {
    let acme = tenant(db, "acme");
    let revoked = grant(db, acme, json!({"payload": {}, "max_uses": 3}));
    db.store
        .write(|c| grants::revoke(c, acme.tenant, revoked.id, "x", &Actor::system(), NOW))
        .unwrap();
    let used = grant(db, acme, json!({"payload": {}, "max_uses": 1}));
    db.store
        .write(|c| grants::take_use(c, &used, &Actor::system(), NOW))
        .unwrap();
    for g in [&revoked, &used] {
        let after = g.expires_at + Duration::minutes(1);
        let status = state(db, g.id).status(after);
        assert_ne!(status, GrantStatus::Expired);
        let err = db
            .store
            .write(|c| grants::take_use(c, g, &Actor::system(), after))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::GrantNotActive(s) if s == status),
            "take_use says {err:?}, the grant is {status:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. take_creates

fn take_creates_reserves_against_max(db: &TestDb) {
    let acme = tenant(db, "acme");
    let g = grant(db, acme, json!({"payload": {}}));
    let take = |id: GrantId, count: u32, max: u32| {
        db.store
            .write(|c| grants::take_creates(c, id, count, max))
            .unwrap()
    };
    let creates = |id: GrantId| db.store.read(|c| grants::creates(c, id)).unwrap();
    assert_eq!(creates(g.id), 0);
    assert_eq!(take(g.id, 0, 5), Ok(()), "nothing to reserve");
    assert_eq!(take(g.id, 3, 5), Ok(()));
    assert_eq!(creates(g.id), 3);
    assert_eq!(take(g.id, 3, 5), Err(2));
    assert_eq!(creates(g.id), 3, "a refused reservation takes nothing");
    assert_eq!(take(g.id, 2, 5), Ok(()));
    assert_eq!(creates(g.id), 5);
    assert_eq!(take(g.id, 1, 5), Err(0));
    assert_eq!(creates(g.id), 5);

    // More than the maximum at once never fits, even on a fresh grant.
    let fresh = grant(db, acme, json!({"payload": {}}));
    assert_eq!(take(fresh.id, 6, 5), Err(5));
    assert_eq!(take(fresh.id, u32::MAX, 5), Err(5));
    assert_eq!(creates(fresh.id), 0);
    assert_eq!(take(fresh.id, 5, 5), Ok(()));
    assert_eq!(creates(fresh.id), 5);
}

fn take_creates_race_gives_exactly_max(db: &TestDb) {
    const THREADS: usize = 16;
    let acme = tenant(db, "acme");
    let g = grant(db, acme, json!({"payload": {}}));
    let id = g.id;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = db.store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store.write(|c| grants::take_creates(c, id, 1, 5))
            })
        })
        .collect();
    let results: Vec<Result<(), u32>> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert!(
        results.iter().filter(|r| r.is_err()).all(|r| *r == Err(0)),
        "{results:?}"
    );
    assert_eq!(db.store.read(|c| grants::creates(c, id)).unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// 4. count_failure

fn count_failure_locks_at_the_limits(db: &TestDb) {
    let limits = FlowLimits::default();
    let acme = tenant(db, "acme");
    let fail = |g: &Grant, failure: Failure, now: OffsetDateTime| {
        db.store
            .write(|c| grants::count_failure(c, g, failure, &limits, now))
            .unwrap()
    };
    let lock_time = NOW + Duration::minutes(3);

    // Factor: four do not lock, the fifth does.
    let by_factor = grant(db, acme, json!({"payload": {}}));
    for n in 1..=4 {
        let s = fail(&by_factor, Failure::Factor, NOW);
        assert_eq!((s.factor_failures, s.otp_failures), (n, 0));
        assert_eq!(s.locked_at, None, "after {n}");
    }
    assert_eq!(state(db, by_factor.id).status(NOW), GrantStatus::Active);
    assert_eq!(count_kind(db, by_factor.id, "grant.locked"), 0);
    let s = fail(&by_factor, Failure::Factor, lock_time);
    assert_eq!(s.factor_failures, 5);
    assert_eq!(s.locked_at, Some(lock_time));
    let record = state(db, by_factor.id);
    assert_eq!(record.state, s, "returned facts are the stored ones");
    assert_eq!(record.status(lock_time), GrantStatus::Locked);
    assert_eq!(count_kind(db, by_factor.id, "grant.locked"), 1);
    // A locked grant counts nothing more: the lock time stays and nothing more is recorded.
    let s = fail(&by_factor, Failure::Otp, lock_time + Duration::minutes(1));
    assert_eq!((s.factor_failures, s.otp_failures), (5, 0));
    assert_eq!(s.locked_at, Some(lock_time));
    assert_eq!(count_kind(db, by_factor.id, "grant.locked"), 1);

    // OTP: nine do not lock, the tenth does.
    let by_otp = grant(db, acme, json!({"payload": {}}));
    for n in 1..=9 {
        let s = fail(&by_otp, Failure::Otp, NOW);
        assert_eq!((s.factor_failures, s.otp_failures), (0, n));
        assert_eq!(s.locked_at, None, "after {n}");
    }
    assert_eq!(count_kind(db, by_otp.id, "grant.locked"), 0);
    let s = fail(&by_otp, Failure::Otp, lock_time);
    assert_eq!(s.otp_failures, 10);
    assert_eq!(s.locked_at, Some(lock_time));
    assert_eq!(state(db, by_otp.id).status(NOW), GrantStatus::Locked);
    assert_eq!(count_kind(db, by_otp.id, "grant.locked"), 1);

    // Both together: 4 factor + 5 OTP do not lock, the tenth failure does.
    let mixed = grant(db, acme, json!({"payload": {}}));
    for _ in 0..4 {
        fail(&mixed, Failure::Factor, NOW);
    }
    for _ in 0..5 {
        fail(&mixed, Failure::Otp, NOW);
    }
    assert_eq!(state(db, mixed.id).status(NOW), GrantStatus::Active);
    let s = fail(&mixed, Failure::Otp, lock_time);
    assert_eq!((s.factor_failures, s.otp_failures), (4, 6));
    assert_eq!(s.locked_at, Some(lock_time));
    assert_eq!(count_kind(db, mixed.id, "grant.locked"), 1);
    let locked_event = db
        .store
        .read(|c| audit::for_grant(c, mixed.id))
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "grant.locked")
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&locked_event.detail).unwrap();
    assert_eq!(detail, json!({"factor_failures": 4, "otp_failures": 6}));
    assert_eq!(
        locked_event.at,
        linklease_grant::micros::to_micros(lock_time)
    );

    // Failures on one grant never touch another.
    let bystander = grant(db, acme, json!({"payload": {}}));
    assert_eq!(state(db, bystander.id).state, Default::default());
}

// ---------------------------------------------------------------------------------------------
// 5. Leases

fn lease_record(
    tenant: TenantId,
    grant: GrantId,
    flow: FlowId,
    client: Option<ClientId>,
) -> LeaseRecord {
    LeaseRecord {
        id: LeaseId::new(NOW, &rng()).unwrap(),
        tenant,
        grant,
        flow,
        client,
        issued_at: NOW,
        expires_at: NOW + Duration::minutes(15),
        ended_at: None,
        end_reason: None,
        ip: Some("2001:db8::7".into()),
        user_agent: Some("Mozilla/5.0 (test)".into()),
    }
}

fn leases_round_trip_extend_and_end_once(db: &TestDb) {
    let acme = tenant(db, "acme");
    let g = grant(db, acme, json!({"payload": {}}));
    let partner = client(db, acme.tenant);
    let browser_flow = open_flow(db, g.id, Holder::Browser, Some(&cookie_hash("c")));
    let partner_flow = open_flow(db, g.id, Holder::Partner(partner), None);

    let mut browser = lease_record(acme.tenant, g.id, browser_flow.id, None);
    browser.ip = None;
    browser.user_agent = None;
    let theirs = lease_record(acme.tenant, g.id, partner_flow.id, Some(partner));
    for lease in [&browser, &theirs] {
        db.store.write(|c| leases::insert(c, lease)).unwrap();
        assert_eq!(&db.store.read(|c| leases::get(c, lease.id)).unwrap(), lease);
    }
    assert!(matches!(
        db.store
            .read(|c| leases::get(c, LeaseId::new(NOW, &rng()).unwrap())),
        Err(StoreError::NotFound)
    ));
    // One flow issues one lease.
    let again = lease_record(acme.tenant, g.id, browser_flow.id, None);
    assert!(matches!(
        db.store.write(|c| leases::insert(c, &again)),
        Err(StoreError::Conflict(_))
    ));

    // Live until it expires.
    assert!(browser.is_live(NOW));
    assert!(browser.is_live(browser.expires_at - Duration::microseconds(1)));
    assert!(!browser.is_live(browser.expires_at));

    // Refresh moves the expiry.
    let later = NOW + Duration::minutes(25);
    assert!(
        db.store
            .write(|c| leases::extend(c, browser.id, later))
            .unwrap()
    );
    let extended = db.store.read(|c| leases::get(c, browser.id)).unwrap();
    assert_eq!(extended.expires_at, later);
    assert!(extended.is_live(NOW + Duration::minutes(20)));
    assert_eq!(
        LeaseRecord {
            expires_at: browser.expires_at,
            ..extended.clone()
        },
        browser,
        "nothing else changed"
    );

    // End: once.
    let end_at = NOW + Duration::minutes(5);
    assert!(
        db.store
            .write(|c| leases::end(c, browser.id, "logout", end_at))
            .unwrap()
    );
    assert!(
        !db.store
            .write(|c| leases::end(c, browser.id, "again", end_at + Duration::minutes(1)))
            .unwrap()
    );
    let ended = db.store.read(|c| leases::get(c, browser.id)).unwrap();
    assert_eq!(ended.ended_at, Some(end_at), "the first end stays");
    assert_eq!(ended.end_reason.as_deref(), Some("logout"));
    assert!(
        !ended.is_live(NOW),
        "an ended lease is not live even before expiry"
    );
    // An ended lease cannot be extended.
    assert!(
        !db.store
            .write(|c| leases::extend(c, browser.id, later + Duration::minutes(30)))
            .unwrap()
    );
    assert_eq!(
        db.store
            .read(|c| leases::get(c, browser.id))
            .unwrap()
            .expires_at,
        later
    );
    // Unknown leases neither extend nor end.
    let unknown = LeaseId::new(NOW, &rng()).unwrap();
    assert!(
        !db.store
            .write(|c| leases::extend(c, unknown, later))
            .unwrap()
    );
    assert!(
        !db.store
            .write(|c| leases::end(c, unknown, "x", NOW))
            .unwrap()
    );

    // The other lease is untouched.
    let other = db.store.read(|c| leases::get(c, theirs.id)).unwrap();
    assert_eq!(other, theirs);
    assert!(other.is_live(NOW));
}

// ---------------------------------------------------------------------------------------------
// 6. Submissions

/// A grant with a lease (as the exchange would leave it).
fn leased_grant(db: &TestDb, issuer: Issuer) -> (GrantId, LeaseId) {
    let g = grant(db, issuer, json!({"payload": {}, "max_uses": 10}));
    let flow = open_flow(db, g.id, Holder::Browser, None);
    let lease = lease_record(issuer.tenant, g.id, flow.id, None);
    db.store.write(|c| leases::insert(c, &lease)).unwrap();
    (g.id, lease.id)
}

fn submission(
    tenant: TenantId,
    (grant, lease): (GrantId, LeaseId),
    at: OffsetDateTime,
    key: Option<&str>,
) -> SubmissionRecord {
    let body = json!({"creates": [], "fields": {"note": format!("at {at}")}}).to_string();
    SubmissionRecord {
        id: SubmissionId::new(at, &rng()).unwrap(),
        tenant,
        grant,
        lease,
        received_at: at,
        body_sha256: linklease_grant::request::sha256(body.as_bytes()),
        body_commitment: None,
        body,
        creates: 2,
        idempotency_key: key.map(str::to_owned),
    }
}

fn submissions_are_unique_per_key_paged_and_append_only(db: &TestDb) {
    let acme = tenant(db, "acme");
    let other = tenant(db, "other");
    let first = leased_grant(db, acme);
    let second = leased_grant(db, acme);
    let insert = |s: &SubmissionRecord| db.store.write(|c| submissions::insert(c, s));

    // Stored and found by key.
    let keyed = submission(acme.tenant, first, NOW, Some("retry-1"));
    insert(&keyed).unwrap();
    assert_eq!(
        db.store
            .read(|c| submissions::by_idempotency_key(c, first.0, "retry-1"))
            .unwrap(),
        Some(keyed.clone())
    );
    assert_eq!(
        db.store
            .read(|c| submissions::by_idempotency_key(c, first.0, "retry-2"))
            .unwrap(),
        None
    );
    assert_eq!(
        db.store
            .read(|c| submissions::by_idempotency_key(c, second.0, "retry-1"))
            .unwrap(),
        None,
        "keys are per grant"
    );

    // The same key on the same grant: Conflict, and the first stays.
    let dup = submission(
        acme.tenant,
        first,
        NOW + Duration::seconds(1),
        Some("retry-1"),
    );
    assert!(matches!(insert(&dup), Err(StoreError::Conflict(_))));
    assert_eq!(
        db.store
            .read(|c| submissions::by_idempotency_key(c, first.0, "retry-1"))
            .unwrap(),
        Some(keyed.clone())
    );

    // The same key on another grant, and any number without a key, are fine.
    let mut all = vec![keyed.clone()];
    let same_key_other_grant = submission(
        acme.tenant,
        second,
        NOW + Duration::seconds(2),
        Some("retry-1"),
    );
    insert(&same_key_other_grant).unwrap();
    all.push(same_key_other_grant);
    for i in 3..8 {
        let on = if i % 2 == 0 { first } else { second };
        let s = submission(acme.tenant, on, NOW + Duration::seconds(i), None);
        insert(&s).unwrap();
        all.push(s);
    }
    all.sort_by_key(|s| s.id);

    let list = |tenant: TenantId, grant: Option<GrantId>, after: Option<SubmissionId>, limit| {
        db.store
            .read(|c| submissions::list(c, tenant, grant, after, limit))
            .unwrap()
    };
    assert_eq!(list(acme.tenant, None, None, 100), all, "oldest first");
    for g in [first.0, second.0] {
        let want: Vec<_> = all.iter().filter(|s| s.grant == g).cloned().collect();
        assert!(!want.is_empty());
        assert_eq!(list(acme.tenant, Some(g), None, 100), want);
    }

    // Pages of two, by tenant and by grant, walk everything once in id order.
    for grant in [None, Some(first.0), Some(second.0)] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = list(acme.tenant, grant, after, 2);
            assert!(page.len() <= 2);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|s| s.id);
            seen.extend(page);
        }
        let want: Vec<_> = all
            .iter()
            .filter(|s| grant.is_none_or(|g| s.grant == g))
            .cloned()
            .collect();
        assert_eq!(seen, want, "{grant:?}");
    }
    assert!(list(acme.tenant, None, Some(all[6].id), 100).is_empty());

    // Another tenant sees none of it, even naming the grant.
    assert!(list(other.tenant, None, None, 100).is_empty());
    assert!(list(other.tenant, Some(first.0), None, 100).is_empty());

    // The database refuses to change or remove a submission.
    let id = keyed.id;
    for sql in [
        format!("UPDATE submissions SET body = 'x' WHERE id = '{id}'"),
        "UPDATE submissions SET creates = creates + 1".to_string(),
        format!("DELETE FROM submissions WHERE id = '{id}'"),
        "DELETE FROM submissions".to_string(),
    ] {
        let err = db
            .store
            .write(|c| Ok(diesel::sql_query(&sql).execute(c)?))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("append-only") || message.contains("immutable"),
            "{sql}: {message}"
        );
    }
    assert_eq!(list(acme.tenant, None, None, 100), all, "unchanged");
}

// ---------------------------------------------------------------------------------------------
// 7. Signing keys

fn load(db: &TestDb, secrets: &SecretKeys) -> Result<Vec<linklease_lease::SigningKey>, StoreError> {
    db.store.read(|c| signing_keys::load(c, secrets))
}

fn kids(db: &TestDb) -> BTreeSet<String> {
    load(db, &keys())
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect()
}

fn rotate(db: &TestDb, now: OffsetDateTime) -> String {
    db.store
        .write(|c| {
            signing_keys::rotate(
                c,
                &keys(),
                &FlowLimits::default(),
                &Actor::operator(),
                now,
                &rng(),
            )
        })
        .unwrap()
}

fn claims(issued_at: OffsetDateTime) -> LeaseClaims {
    LeaseClaims::new(
        GrantId::new(issued_at, &rng()).unwrap(),
        LeaseId::new(issued_at, &rng()).unwrap(),
        issued_at,
        issued_at + Duration::minutes(30),
        vec![Scope::Read],
    )
}

fn signing_keys_are_sealed_shared_and_rotate(db: &TestDb) {
    let limits = FlowLimits::default();
    let ensure = |now: OffsetDateTime| {
        db.store
            .write(|c| signing_keys::ensure(c, &keys(), now, &rng()))
            .unwrap()
    };

    // The first ensure makes one key; the second finds it.
    assert!(load(db, &keys()).unwrap().is_empty());
    let first = ensure(NOW);
    let k1 = first.signer().kid.clone();
    assert_eq!(first.keys().count(), 1);
    assert_eq!(kids(db), BTreeSet::from([k1.clone()]));
    let second = ensure(NOW + Duration::minutes(1));
    assert_eq!(second.signer().kid, k1);
    assert_eq!(second.signer().public, first.signer().public);
    assert_eq!(second.keys().count(), 1);
    let loaded = load(db, &keys()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].pkcs8(), first.signer().pkcs8());
    assert_eq!(loaded[0].created_at, NOW);
    assert_eq!(loaded[0].retired_at, None);

    // Another master secret cannot open it.
    let stranger = SecretKeys::from_master(&[99; 32]);
    assert!(matches!(load(db, &stranger), Err(StoreError::Corrupt(_))));
    assert!(matches!(
        db.store
            .write(|c| signing_keys::ensure(c, &stranger, NOW, &rng())),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(kids(db), BTreeSet::from([k1.clone()]), "nothing added");

    // The private key is stored sealed: neither the PKCS#8 document nor its seed is in the row.
    let (public, sealed): (Vec<u8>, Vec<u8>) = db
        .store
        .read(|c| {
            use diesel::prelude::*;
            use linklease_store::schema::signing_keys::dsl;
            Ok(dsl::signing_keys
                .select((dsl::public_key, dsl::sealed_private))
                .get_result(c)?)
        })
        .unwrap();
    assert_eq!(public, first.signer().public);
    let pkcs8 = first.signer().pkcs8();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&sealed, pkcs8));
    // Ed25519 PKCS#8: the 32-byte seed follows the 16-byte prefix.
    assert!(!contains(&sealed, &pkcs8[16..48]));

    // A lease signed by the first key, before rotation.
    let old_claims = claims(NOW);
    let old_token = token::sign(&old_claims, first.signer()).unwrap();

    // Rotation: a new kid; the old one is retired and still verifies.
    let t1 = NOW + Duration::minutes(10);
    let k2 = rotate(db, t1);
    assert_ne!(k2, k1);
    let stored = load(db, &keys()).unwrap();
    let find = |keys: &[linklease_lease::SigningKey], kid: &str| {
        keys.iter().find(|k| k.kid == kid).cloned().unwrap()
    };
    assert_eq!(find(&stored, &k1).retired_at, Some(t1));
    assert_eq!(find(&stored, &k2).retired_at, None);
    assert_eq!(find(&stored, &k2).created_at, t1);
    let events: Vec<_> = db
        .store
        .read(audit::all)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "keys.rotated")
        .collect();
    assert_eq!(events.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&events[0].detail).unwrap();
    assert_eq!(detail, json!({"kid": k2, "retired": [k1]}));
    assert_eq!(events[0].actor_kind, "operator");

    // Every instance builds the same key set from the database: the new key signs ...
    let set = KeySet::new(stored).unwrap();
    assert_eq!(set.signer().kid, k2);
    let check_at = t1 + Duration::minutes(5);
    let new_claims = claims(t1);
    let new_token = token::sign(&new_claims, set.signer()).unwrap();
    assert_eq!(
        token::verify(new_token.expose(), &set, check_at, &limits).unwrap(),
        new_claims
    );
    let header = new_token.expose().split('.').next().unwrap().to_owned();
    assert_ne!(
        header,
        old_token.expose().split('.').next().unwrap(),
        "a different kid in the header"
    );
    // ... and the old key still verifies what it signed.
    assert_eq!(
        token::verify(old_token.expose(), &set, check_at, &limits).unwrap(),
        old_claims
    );
    // `ensure` now returns the rotated set without adding a key.
    assert_eq!(ensure(check_at).signer().kid, k2);
    assert_eq!(kids(db), BTreeSet::from([k1.clone(), k2.clone()]));

    // A rotation within the absolute lease lifetime of k1's retirement keeps k1 ...
    let t2 = t1 + Duration::minutes(30);
    let k3 = rotate(db, t2);
    assert_eq!(
        kids(db),
        BTreeSet::from([k1.clone(), k2.clone(), k3.clone()])
    );
    // ... one at exactly that lifetime after it forgets k1 (it can verify nothing any more),
    // keeps k2 (retired at t2), and retires k3.
    let t3 = t1 + limits.lease_absolute;
    let k4 = rotate(db, t3);
    assert_eq!(
        kids(db),
        BTreeSet::from([k2.clone(), k3.clone(), k4.clone()])
    );
    let stored = load(db, &keys()).unwrap();
    assert_eq!(find(&stored, &k2).retired_at, Some(t2));
    assert_eq!(find(&stored, &k3).retired_at, Some(t3));
    assert_eq!(find(&stored, &k4).retired_at, None);
    // Long after, a rotation forgets every key retired more than a lifetime before.
    let t4 = t3 + limits.lease_absolute + Duration::seconds(1);
    let k5 = rotate(db, t4);
    assert_eq!(kids(db), BTreeSet::from([k4.clone(), k5.clone()]));
    let set = KeySet::new(load(db, &keys()).unwrap()).unwrap();
    assert_eq!(set.signer().kid, k5);
    assert!(matches!(
        token::verify(old_token.expose(), &set, t4, &limits),
        Err(token::TokenError::UnknownKey)
    ));
    let rotated = db
        .store
        .read(audit::all)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "keys.rotated")
        .count();
    assert_eq!(rotated, 4);
}

// 7. The single-node copy of lease facts

/// A SQLite server's in-process copy of lease facts is exactly as fresh as the database: its
/// own writes drop it, audit appends keep it, and another process's hold sends every check to
/// the database until the hold ends.
#[test]
fn the_single_node_copy_of_lease_facts_stays_exact() {
    let db = TestDb::sqlite();
    let issuer = tenant(&db, "clinic");
    let (grant_id, lease) = leased_grant(&db, issuer);
    // Off until the store serves the file.
    db.store.lease_facts(lease).unwrap();
    assert_eq!(db.store.cached_lease_facts(lease), None);
    let serving = db.store.serve_exclusively().unwrap();
    assert!(serving.is_some());
    let first = db.store.lease_facts(lease).unwrap();
    assert_eq!(db.store.cached_lease_facts(lease), Some(first.clone()));

    // Appending read events changes no fact and keeps the copy.
    let read = audit::NewEvent {
        at: NOW,
        tenant: Some(issuer.tenant),
        grant: Some(grant_id),
        lease: Some(lease),
        kind: audit::AuditKind::PayloadRead,
        actor: Actor::system(),
        detail: json!({}),
    };
    db.store.append_audit(std::slice::from_ref(&read)).unwrap();
    assert_eq!(db.store.cached_lease_facts(lease), Some(first.clone()));

    // Any write drops it; the next check reads the change.
    let later = NOW + Duration::minutes(20);
    assert!(db.store.write(|c| leases::extend(c, lease, later)).unwrap());
    assert_eq!(db.store.cached_lease_facts(lease), None);
    assert_eq!(db.store.lease_facts(lease).unwrap().expires_at, later);
    assert!(db.store.cached_lease_facts(lease).is_some());

    // Another process (here: another pool on the file) changes a fact under a hold: while it
    // lasts nothing is answered from the copy, and afterwards the change is seen.
    let other = linklease_store::Store::open(&db.url, &Default::default()).unwrap();
    let hold = other.hold_for_write().unwrap();
    assert!(matches!(hold, linklease_store::WriteHold::Server(_)));
    assert_eq!(db.store.cached_lease_facts(lease), None);
    assert!(
        other
            .write(|c| leases::end(c, lease, "operator", later))
            .unwrap()
    );
    assert_eq!(db.store.lease_facts(lease).unwrap().ended_at, Some(later));
    drop(hold);
    assert_eq!(db.store.lease_facts(lease).unwrap().ended_at, Some(later));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while db.store.cached_lease_facts(lease).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never resumed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        db.store.lease_facts(lease).unwrap();
    }
    assert_eq!(
        db.store.cached_lease_facts(lease).unwrap().ended_at,
        Some(later)
    );

    // Without a server, a hold is the lock itself, and a server waits for it.
    drop(serving);
    let hold = other.hold_for_write().unwrap();
    assert!(matches!(hold, linklease_store::WriteHold::Locked(_)));
    drop(hold);
    assert!(db.store.serve_exclusively().unwrap().is_some());
}

backend_tests!(
    flows_round_trip_and_save_is_compare_and_set,
    take_use_race_gives_exactly_max_uses,
    take_use_refuses_revoked_expired_and_locked_grants,
    take_use_fails_with_the_grants_status_once_expired,
    take_creates_reserves_against_max,
    take_creates_race_gives_exactly_max,
    count_failure_locks_at_the_limits,
    leases_round_trip_extend_and_end_once,
    submissions_are_unique_per_key_paged_and_append_only,
    signing_keys_are_sealed_shared_and_rotate,
);
