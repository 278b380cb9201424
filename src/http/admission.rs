//! Per-IP connection-attempt rate limiting (`--per-ip-rate`, `--per-ip-burst`): a token
//! bucket per client address. It is consulted once per accepted connection — never per
//! message — so one mutex-guarded map shared by the shards is cheap enough and keeps the
//! limit exact for an address whose connections the kernel spreads over several shards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before idle (full) ones are swept, bounding the map under a flood of
/// distinct addresses.
const SWEEP_AT: usize = 65_536;

/// One address's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts available now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

/// The per-IP buckets.
#[derive(Debug)]
pub struct RateLimiter {
    /// Refill rate, attempts per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// Buckets by client address.
    buckets: HashMap<IpAddr, Bucket, ahash::RandomState>,
}

impl RateLimiter {
    /// A limiter refilled at `rate` per second with room for `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::default(),
        }
    }

    /// Take one attempt for `ip` at `now`; false when its bucket is empty.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= SWEEP_AT {
            self.sweep(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drop buckets that have refilled completely: they hold no information.
    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }
}

/// Take one attempt from the shared limiter (a poisoned lock still limits).
pub fn allow(limiter: &Mutex<RateLimiter>, ip: IpAddr, now: Instant) -> bool {
    match limiter.lock() {
        Ok(mut l) => l.try_take(ip, now),
        Err(poisoned) => poisoned.into_inner().try_take(ip, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let mut l = RateLimiter::new(2.0, 3.0);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        assert!(l.try_take(ip, t0));
        assert!(l.try_take(ip, t0));
        assert!(l.try_take(ip, t0));
        assert!(!l.try_take(ip, t0));
        assert!(l.try_take(ip, t0 + Duration::from_millis(500)));
        assert!(!l.try_take(ip, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn addresses_are_independent() {
        let mut l = RateLimiter::new(1.0, 1.0);
        let t0 = Instant::now();
        assert!(l.try_take([10, 0, 0, 1].into(), t0));
        assert!(!l.try_take([10, 0, 0, 1].into(), t0));
        assert!(l.try_take([10, 0, 0, 2].into(), t0));
    }
}
