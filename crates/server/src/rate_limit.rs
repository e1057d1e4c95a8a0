//! Per-address rate limits on the consumer routes (`/l/`, `/flow`, `/v1/exchange`): a token
//! bucket per client address, refilled continuously. Kept in memory per instance: behind a load
//! balancer each instance allows its own share, which bounds guessing together with the
//! per-grant lockout (spec §6) that is kept in the database and holds across instances.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

/// Requests per minute per address unless configured otherwise.
pub const DEFAULT_PER_MINUTE: u32 = 60;
/// Buckets kept before full ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// Token buckets by address.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// Allows bursts of `per_minute` and `per_minute` requests per minute after that.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `ip`, or answers `too_many_requests` with the wait in seconds.
    /// Requests with no known address share one bucket.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let ip = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
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
        let (tokens, at) = buckets.entry(ip).or_insert((capacity, now));
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
}
