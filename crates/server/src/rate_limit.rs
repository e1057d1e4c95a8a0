//! Rate limits, as token buckets refilled continuously and kept in memory per instance (behind
//! a load balancer each instance allows its own share; the per-grant lockout of spec §6 is kept
//! in the database and holds across instances).
//!
//! - The consumer routes (`/l/`, `/flow`) are limited per client address ([`RateLimiter::check`]).
//! - The partner API (`/v1/exchange…`) is limited per partner client ([`PartnerLimits`]): all of
//!   a partner's users come from its server's address, so an address budget would make them
//!   share one person's allowance. Authentication attempts are limited per address as well, and
//!   only the failed ones use that budget up, so guessing client secrets stays bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use linklease_grant::ClientId;

use crate::error::ApiError;

/// Requests per minute per address unless configured otherwise.
pub const DEFAULT_PER_MINUTE: u32 = 60;
/// Requests per minute per partner client unless configured otherwise.
pub const DEFAULT_PARTNER_PER_MINUTE: u32 = 600;
/// Buckets kept before full ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// Token buckets by key (a client address unless said otherwise).
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Copy> RateLimiter<K> {
    /// Allows bursts of `per_minute` and `per_minute` requests per minute after that.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::default(),
        }
    }

    /// The configured requests per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one token for `key`, or answers `too_many_requests` with the wait in seconds.
    /// Atomic: of requests racing for the last tokens, only as many pass as there are tokens.
    pub fn take(&self, key: K) -> Result<(), ApiError> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_second).ceil();
            // `wait` is at most 60 / per_minute seconds: it fits.
            Err(ApiError::too_many(wait as u32))
        }
    }

    /// Returns a token taken for `key` (the bucket never holds more than its capacity).
    pub fn give_back(&self, key: K) {
        let capacity = f64::from(self.per_minute);
        if let Ok(mut buckets) = self.buckets.lock()
            && let Some((tokens, _)) = buckets.get_mut(&key)
        {
            *tokens = (*tokens + 1.0).min(capacity);
        }
    }
}

impl RateLimiter<IpAddr> {
    /// Takes one token for `ip`, or answers `too_many_requests` with the wait in seconds.
    /// Requests with no known address share one bucket.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.take(ip.unwrap_or(NO_ADDRESS))
    }
}

/// The bucket of requests whose address is unknown.
const NO_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The partner API's limits: a budget per client, and a budget per address of authentication
/// attempts that only failed ones use up.
#[derive(Debug)]
pub struct PartnerLimits {
    per_client: RateLimiter<ClientId>,
    attempts: RateLimiter<IpAddr>,
}

impl PartnerLimits {
    /// `per_client` requests per minute per client; `per_address` failed authentications per
    /// minute per address.
    pub fn new(per_client: u32, per_address: u32) -> Self {
        Self {
            per_client: RateLimiter::new(per_client),
            attempts: RateLimiter::new(per_address),
        }
    }

    /// Requests per minute per client.
    pub fn per_client(&self) -> u32 {
        self.per_client.per_minute()
    }

    /// Before the credentials are looked at: takes an attempt from the address's budget, so
    /// that an address whose budget is spent gets `too_many_requests` whatever it sends (a
    /// right guess included). Taken, not just looked at, so that concurrent guesses cannot all
    /// pass the last token.
    pub fn attempt(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        self.attempts.check(ip)
    }

    /// After the credentials were right: gives the attempt back to the address and takes one
    /// request from `client`'s budget.
    pub fn authenticated(&self, ip: Option<IpAddr>, client: ClientId) -> Result<(), ApiError> {
        self.attempts.give_back(ip.unwrap_or(NO_ADDRESS));
        self.per_client.take(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_per_address() {
        let limiter = RateLimiter::new(3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let refused = limiter.check(a).unwrap_err();
        assert_eq!(refused.retry_after, Some(20));
        assert!(
            limiter.check(b).is_ok(),
            "another address has its own bucket"
        );
    }

    #[test]
    fn partner_requests_use_the_client_budget_and_failures_the_address_budget() {
        let limits = PartnerLimits::new(5, 2);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        let client = ClientId(uuid::Uuid::from_u128(7));
        for _ in 0..5 {
            limits.attempt(ip).unwrap();
            limits.authenticated(ip, client).unwrap();
        }
        limits.attempt(ip).unwrap();
        assert!(
            limits.authenticated(ip, client).is_err(),
            "client budget spent"
        );
        // Two failures spend the address's attempts; a third attempt is refused.
        limits.attempt(ip).unwrap();
        limits.attempt(ip).unwrap();
        assert!(limits.attempt(ip).is_err());
    }
}
