//! Micro-benchmarks of the grant domain's hot pure functions: link token hashing (every visit
//! and exchange looks a grant up by it) and second-factor verification.
//!
//! `cargo bench -p linklease-grant`. Figures are per call on one core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmark set-up: a failure is a bug.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use linklease_grant::factor::{self, FactorKind};
use linklease_grant::{GrantId, LinkToken, SecretKeys, SecretString};
use ring::rand::SystemRandom;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

fn link_token(c: &mut Criterion) {
    let keys = SecretKeys::from_master(&[7; 32]);
    let token = LinkToken::generate(&SystemRandom::new()).unwrap();
    let text = token.expose().to_owned();
    let mut group = c.benchmark_group("link_token");
    group.bench_function("hash", |b| b.iter(|| black_box(&token).hash(&keys)));
    group.bench_function("parse+hash", |b| {
        b.iter(|| LinkToken::parse(black_box(&text)).unwrap().hash(&keys))
    });
    group.finish();
}

fn factor_matches(c: &mut Criterion) {
    let keys = SecretKeys::from_master(&[3; 32]);
    let grant = GrantId(Uuid::from_u128(0x0193_a1b2_0000_7000_8000_0000_0000_0001));
    let dob = factor::verifier(&keys, grant, FactorKind::Dob, "1984-03-02");
    let pin = factor::verifier(&keys, grant, FactorKind::Pin, "19840302");
    let right = SecretString::new("1984-03-02");
    let wrong = SecretString::new("1984-03-03");
    let malformed = SecretString::new("02/03/1984");
    let right_pin = SecretString::new("19840302");
    let mut group = c.benchmark_group("factor::matches");
    group.bench_function("dob right", |b| {
        b.iter(|| factor::matches(&keys, grant, FactorKind::Dob, &dob, black_box(&right), NOW))
    });
    group.bench_function("dob wrong", |b| {
        b.iter(|| factor::matches(&keys, grant, FactorKind::Dob, &dob, black_box(&wrong), NOW))
    });
    group.bench_function("dob malformed", |b| {
        b.iter(|| {
            factor::matches(
                &keys,
                grant,
                FactorKind::Dob,
                &dob,
                black_box(&malformed),
                NOW,
            )
        })
    });
    group.bench_function("pin right", |b| {
        b.iter(|| {
            factor::matches(
                &keys,
                grant,
                FactorKind::Pin,
                &pin,
                black_box(&right_pin),
                NOW,
            )
        })
    });
    group.finish();
    c.bench_function("factor::verifier dob", |b| {
        b.iter(|| factor::verifier(&keys, grant, FactorKind::Dob, black_box("1984-03-02")))
    });
}

criterion_group! {
    name = benches;
    // Short runs: these are nanosecond-scale functions on a shared 2-core machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = link_token, factor_matches
}
criterion_main!(benches);
