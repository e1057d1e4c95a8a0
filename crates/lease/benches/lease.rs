//! Micro-benchmarks of the lease domain's hot pure functions: one-time codes (generate, hash,
//! check), lease tokens (sign, verify with a key set) and submission validation.
//!
//! `cargo bench -p linklease-lease`. Figures are per call on one core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmark set-up: a failure is a bug.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use linklease_lease::grant::{GrantId, LeaseId, Permissions, SecretKeys, SecretString};
use linklease_lease::submission::{self, SubmissionRequest};
use linklease_lease::token::{self, LeaseClaims, Scope};
use linklease_lease::{FlowLimits, KeySet, SigningKey, otp};
use ring::rand::SystemRandom;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

fn otp_codes(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let keys = SecretKeys::from_master(&[9; 32]);
    let flow = Uuid::from_u128(0x0193_a1b2_0000_7000_8000_0000_0000_00f1);
    let code = SecretString::new("012345");
    let stored = otp::hash(&keys, flow, 1, &code);
    let wrong = SecretString::new("012346");
    let spaced = SecretString::new(" 012 345 ");
    let mut group = c.benchmark_group("otp");
    group.bench_function("generate", |b| b.iter(|| otp::generate(&rng).unwrap()));
    group.bench_function("hash", |b| {
        b.iter(|| otp::hash(&keys, flow, 1, black_box(&code)))
    });
    group.bench_function("generate+hash", |b| {
        b.iter(|| otp::hash(&keys, flow, 1, &otp::generate(&rng).unwrap()))
    });
    group.bench_function("matches right", |b| {
        b.iter(|| otp::matches(&keys, flow, 1, &stored, black_box(&code)))
    });
    group.bench_function("matches wrong", |b| {
        b.iter(|| otp::matches(&keys, flow, 1, &stored, black_box(&wrong)))
    });
    group.bench_function("matches spaced", |b| {
        b.iter(|| otp::matches(&keys, flow, 1, &stored, black_box(&spaced)))
    });
    group.finish();
}

fn lease_tokens(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let limits = FlowLimits::default();
    // A realistic set: the signer and two retired keys still inside their window.
    let old1 = SigningKey::generate(T0 - time::Duration::minutes(50), &rng).unwrap();
    let old2 = SigningKey::generate(T0 - time::Duration::minutes(40), &rng).unwrap();
    let mut keys = KeySet::new(vec![old1]).unwrap();
    keys.rotate(old2, T0 - time::Duration::minutes(30), &limits);
    keys.rotate(
        SigningKey::generate(T0 - time::Duration::minutes(20), &rng).unwrap(),
        T0 - time::Duration::minutes(20),
        &limits,
    );
    let claims = LeaseClaims::new(
        GrantId(Uuid::from_u128(0x0193_a1b2_0000_7000_8000_0000_0000_0001)),
        LeaseId(Uuid::from_u128(0x0193_a1b2_0000_7000_8000_0000_0000_00aa)),
        T0,
        T0 + time::Duration::minutes(15),
        vec![Scope::Read, Scope::Write],
    );
    let signed = token::sign(&claims, keys.signer()).unwrap();
    let text = signed.expose().to_owned();
    let now = T0 + time::Duration::minutes(1);
    assert!(token::verify(&text, &keys, now, &limits).is_ok());
    let mut forged = text.clone();
    forged.pop();
    forged.push(if text.ends_with('A') { 'B' } else { 'A' });

    let mut group = c.benchmark_group("lease_token");
    group.bench_function("sign", |b| {
        b.iter(|| token::sign(black_box(&claims), keys.signer()).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| token::verify(black_box(&text), &keys, now, &limits).unwrap())
    });
    group.bench_function("verify forged signature", |b| {
        b.iter(|| token::verify(black_box(&forged), &keys, now, &limits).is_err())
    });
    group.finish();
}

fn submissions(c: &mut Criterion) {
    // The README's example grant.
    let permissions: Permissions = serde_json::from_value(json!({
        "read": true,
        "write_fields": {"result_ack": {"type": "boolean"},
                         "note": {"type": "string", "max_length": 200}},
        "create": {"kind": "contact", "max": 10,
                   "fields": {"name": {"type": "string", "max_length": 80},
                              "phone": {"type": "string"}}}
    }))
    .unwrap();
    let small: SubmissionRequest = serde_json::from_value(json!({
        "fields": {"result_ack": true},
        "idempotency_key": "4f1c2a"
    }))
    .unwrap();
    let example: SubmissionRequest = serde_json::from_value(json!({
        "fields": {"result_ack": true, "note": "Seen, thank you."},
        "creates": [{"name": "Ana", "phone": "+15550100"}],
        "idempotency_key": "4f1c2a"
    }))
    .unwrap();
    let creates: Vec<serde_json::Value> = (0..10)
        .map(|i| json!({"name": format!("Contact number {i}"), "phone": format!("+1555010{i}")}))
        .collect();
    let full: SubmissionRequest = serde_json::from_value(json!({
        "fields": {"result_ack": true, "note": "x".repeat(200)},
        "creates": creates,
        "idempotency_key": "4f1c2a"
    }))
    .unwrap();
    let refused: SubmissionRequest = serde_json::from_value(json!({
        "fields": {"result_ack": "yes", "other": 1}
    }))
    .unwrap();
    let mut group = c.benchmark_group("submission::validate");
    group.bench_function("one field", |b| {
        b.iter(|| submission::validate(&permissions, black_box(&small), 0).unwrap())
    });
    group.bench_function("README example", |b| {
        b.iter(|| submission::validate(&permissions, black_box(&example), 0).unwrap())
    });
    group.bench_function("10 child records", |b| {
        b.iter(|| submission::validate(&permissions, black_box(&full), 0).unwrap())
    });
    group.bench_function("refused", |b| {
        b.iter(|| submission::validate(&permissions, black_box(&refused), 0).is_err())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: microsecond-scale functions on a shared 2-core machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = otp_codes, lease_tokens, submissions
}
criterion_main!(benches);
