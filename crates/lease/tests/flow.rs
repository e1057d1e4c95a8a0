//! Every transition of the flow state machine and every limit, with a fixed clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use linklease_lease::grant::{FlowId, GrantId, SecretHash, SecretKeys, SecretString};
use linklease_lease::{Effect, Event, Flow, FlowError, FlowLimits, Holder, Step, otp};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

fn limits() -> FlowLimits {
    FlowLimits::default()
}

fn fresh() -> Flow {
    Flow::open(
        FlowId(Uuid::from_u128(7)),
        GrantId(Uuid::from_u128(1)),
        Holder::Browser,
        T0,
        &limits(),
    )
}

fn hash(n: u8) -> SecretHash {
    SecretHash([n; 32])
}

/// Runs `events` from a fresh flow at the given offsets, each expected to be accepted.
fn run(events: Vec<(i64, Event)>) -> Flow {
    let mut flow = fresh();
    for (secs, event) in events {
        flow = flow
            .step(event, T0 + Duration::seconds(secs), &limits())
            .unwrap()
            .flow;
    }
    flow
}

/// The factor event; a grant that sends codes passes the hash of its first code.
fn factor(matched: bool, otp_required: bool) -> Event {
    Event::Factor {
        matched,
        code: otp_required.then(|| hash(1)),
    }
}

fn resend(send: u8) -> Event {
    Event::Resend { code: hash(send) }
}

/// The first code recorded (and so sent) at T0 + 2 s.
fn at_otp_sent() -> Flow {
    run(vec![(2, factor(true, true))])
}

/// A flow stored by an earlier version: the factor passed, no code recorded.
fn at_factor_passed() -> Flow {
    let mut flow = fresh();
    flow.step = Step::FactorPassed;
    flow
}

/// start, event, seconds after T0, next step, effects, refusal.
type Case = (Flow, Event, i64, Step, Vec<Effect>, Option<FlowError>);

#[test]
fn every_accepted_transition() {
    // (start, event, at, next step, effects, refusal)
    let otp_sent = at_otp_sent();
    let table: Vec<Case> = vec![
        // The send is recorded with the factor, before the courier is called.
        (
            fresh(),
            factor(true, true),
            1,
            Step::OtpSent,
            vec![Effect::FactorPassed, Effect::SendOtp { send: 1 }],
            None,
        ),
        (
            fresh(),
            factor(true, false),
            1,
            Step::Leased,
            vec![Effect::FactorPassed, Effect::IssueLease],
            None,
        ),
        (
            fresh(),
            factor(false, true),
            1,
            Step::Visited,
            vec![Effect::FactorFailed],
            Some(FlowError::FactorMismatch),
        ),
        // A flow stored before sends were recorded first: a resend sends its first code.
        (
            at_factor_passed(),
            resend(1),
            2,
            Step::OtpSent,
            vec![Effect::SendOtp { send: 1 }],
            None,
        ),
        (
            otp_sent.clone(),
            Event::Otp { matched: true },
            3,
            Step::Leased,
            vec![Effect::OtpPassed, Effect::IssueLease],
            None,
        ),
        (
            otp_sent.clone(),
            Event::Otp { matched: false },
            3,
            Step::OtpSent,
            vec![Effect::OtpFailed],
            Some(FlowError::OtpMismatch { tries_left: 4 }),
        ),
        (
            otp_sent,
            resend(2),
            32,
            Step::OtpSent,
            vec![Effect::SendOtp { send: 2 }],
            None,
        ),
    ];
    for (start, event, secs, step, effects, refusal) in table {
        let label = format!("{:?} + {event:?}", start.step);
        let t = start
            .step(event, T0 + Duration::seconds(secs), &limits())
            .unwrap();
        assert_eq!(t.flow.step, step, "{label}");
        assert_eq!(t.effects, effects, "{label}");
        assert_eq!(t.refusal, refusal, "{label}");
    }
}

#[test]
fn every_refused_transition_changes_nothing() {
    let leased = run(vec![(1, factor(true, false))]);
    let otp_sent = at_otp_sent();
    let table: Vec<(Flow, Event, i64, FlowError)> = vec![
        // Out of order.
        (
            fresh(),
            Event::Otp { matched: true },
            1,
            FlowError::WrongStep,
        ),
        (fresh(), resend(1), 1, FlowError::WrongStep),
        (
            otp_sent.clone(),
            factor(true, true),
            3,
            FlowError::WrongStep,
        ),
        // Finished: a code works once, a lease is issued once.
        (
            leased.clone(),
            Event::Otp { matched: true },
            2,
            FlowError::Finished,
        ),
        (leased, factor(true, false), 2, FlowError::Finished),
        // Resend too soon: 30 s after the last send.
        (
            otp_sent.clone(),
            resend(2),
            31,
            FlowError::ResendTooSoon {
                retry_after: Duration::seconds(1),
            },
        ),
    ];
    for (start, event, secs, want) in table {
        let label = format!("{:?} + {event:?}", start.step);
        let got = start.step(event, T0 + Duration::seconds(secs), &limits());
        assert_eq!(got.unwrap_err(), want, "{label}");
    }
}

#[test]
fn the_clock_crossing_each_expiry() {
    let l = limits();
    // The flow: 15 minutes from the visit, whatever the step.
    let last = T0 + l.flow_ttl - Duration::MICROSECOND;
    assert!(fresh().step(factor(true, true), last, &l).is_ok());
    assert_eq!(
        fresh()
            .step(factor(true, true), T0 + l.flow_ttl, &l)
            .unwrap_err(),
        FlowError::Expired
    );
    let otp_sent = at_otp_sent();
    assert_eq!(
        otp_sent
            .step(Event::Otp { matched: true }, T0 + l.flow_ttl, &l)
            .unwrap_err(),
        FlowError::Expired
    );
    // The code: 10 minutes from when it was recorded and sent (at T0 + 2 s).
    let sent_at = T0 + Duration::seconds(2);
    let ok = otp_sent
        .step(
            Event::Otp { matched: true },
            sent_at + l.otp_ttl - Duration::MICROSECOND,
            &l,
        )
        .unwrap();
    assert_eq!(ok.flow.step, Step::Leased);
    assert_eq!(
        otp_sent
            .step(Event::Otp { matched: true }, sent_at + l.otp_ttl, &l)
            .unwrap_err(),
        FlowError::OtpExpired
    );
    // An expired code is not counted as a wrong try, and a new one can be asked for.
    let resent = otp_sent.step(resend(2), sent_at + l.otp_ttl, &l).unwrap();
    assert_eq!(resent.effects, vec![Effect::SendOtp { send: 2 }]);
    // Resend: exactly at 30 s it is allowed.
    assert!(
        otp_sent
            .step(resend(2), sent_at + l.otp_resend_interval, &l)
            .is_ok()
    );
}

#[test]
fn five_wrong_codes_kill_the_flow() {
    let l = limits();
    let mut flow = at_otp_sent();
    for try_no in 1..=5u32 {
        let t = flow
            .step(
                Event::Otp { matched: false },
                T0 + Duration::seconds(10),
                &l,
            )
            .unwrap();
        assert_eq!(
            t.refusal,
            Some(FlowError::OtpMismatch {
                tries_left: 5 - try_no
            })
        );
        assert_eq!(t.effects, vec![Effect::OtpFailed]);
        flow = t.flow;
    }
    assert_eq!(flow.step, Step::Dead);
    assert!(flow.otp.is_none());
    for event in [Event::Otp { matched: true }, resend(2), factor(true, true)] {
        assert_eq!(
            flow.step(event, T0 + Duration::seconds(11), &l)
                .unwrap_err(),
            FlowError::Dead
        );
    }
}

#[test]
fn three_sends_per_flow_and_a_new_code_replaces_the_old() {
    let l = limits();
    let mut flow = at_otp_sent();
    // One wrong try on the first code; the second code starts with a fresh count.
    flow = flow
        .step(Event::Otp { matched: false }, T0 + Duration::seconds(3), &l)
        .unwrap()
        .flow;
    assert_eq!(flow.otp.as_ref().unwrap().tries, 1);
    for (send, secs) in [(2u32, 40i64), (3, 80)] {
        let at = T0 + Duration::seconds(secs);
        let t = flow.step(resend(send as u8), at, &l).unwrap();
        assert_eq!(t.effects, vec![Effect::SendOtp { send }]);
        flow = t.flow;
        assert_eq!(flow.sends, send, "counted before the courier is called");
        let otp = flow.otp.as_ref().unwrap();
        assert_eq!((otp.send, otp.hash, otp.tries), (send, hash(send as u8), 0));
        assert_eq!(otp.expires_at, at + l.otp_ttl);
    }
    assert_eq!(
        flow.step(resend(4), T0 + Duration::seconds(200), &l)
            .unwrap_err(),
        FlowError::SendsExhausted
    );
}

#[test]
fn the_real_code_check_binds_flow_and_send() {
    let keys = SecretKeys::from_master(&[5; 32]);
    let rng = ring::rand::SystemRandom::new();
    let flow = fresh();
    let code = otp::generate(&rng).unwrap();
    let first = Event::Factor {
        matched: true,
        code: Some(otp::hash(&keys, flow.id.0, flow.next_send(), &code)),
    };
    let delivered = flow.step(first, T0, &limits()).unwrap().flow;
    assert!(delivered.otp_matches(&keys, &code));
    assert!(!delivered.otp_matches(&keys, &SecretString::new("not it")));
    assert!(!fresh().otp_matches(&keys, &code), "no code sent yet");
}

#[test]
fn steps_have_stable_names() {
    for step in [
        Step::Visited,
        Step::FactorPassed,
        Step::OtpSent,
        Step::Leased,
        Step::Dead,
    ] {
        assert_eq!(Step::parse(step.as_str()), Some(step));
    }
    assert_eq!(Step::parse("other"), None);
}
