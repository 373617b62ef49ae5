//! Rate limiting of failed authentication: after too many failures in a
//! window, a key (a client address, an account) is refused until the window
//! ends, even with the right credentials, so guessing stays slow.
//!
//! Per process and in memory: processes side by side each allow the limit,
//! which bounds guessing to that many times the limit. The map is bounded:
//! at most [`MAX_KEYS`] keys are tracked; beyond that, expired entries and
//! then the oldest are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys tracked at once.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failures per key in fixed windows.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<String, Window>>,
}

impl FailureLimiter {
    /// Allow `max_failures` failures per key in each `window`.
    pub fn new(max_failures: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max_failures: max_failures.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding the lock leaves consistent data behind.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `key` must wait, if it is blocked at `now`.
    pub fn blocked(&self, key: &str, now: Instant) -> Option<Duration> {
        let entries = self.entries();
        let window = entries.get(key)?;
        let ends = window.started + self.window;
        (window.failures >= self.max_failures && ends > now).then(|| ends - now)
    }

    /// Count a failure of `key` at `now`.
    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut entries = self.entries();
        if !entries.contains_key(key) && entries.len() >= MAX_KEYS {
            let window = self.window;
            entries.retain(|_, w| w.started + window > now);
            if entries.len() >= MAX_KEYS
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(key.to_owned()).or_insert(Window {
            started: now,
            failures: 0,
        });
        if entry.started + self.window <= now {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Forget the failures of `key` (after a success).
    pub fn forget(&self, key: &str) {
        self.entries().remove(key);
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limits on failed authentication of an instance.
#[derive(Debug)]
pub struct AuthLimits {
    /// Per client address: logins and token use alike.
    pub clients: FailureLimiter,
    /// Per account: password logins.
    pub accounts: FailureLimiter,
}

impl AuthLimits {
    /// `per_client` failures per client address and half as many per
    /// account in each `window`.
    pub fn new(per_client: u32, window: Duration) -> AuthLimits {
        AuthLimits {
            clients: FailureLimiter::new(per_client, window),
            accounts: FailureLimiter::new(per_client.div_ceil(2), window),
        }
    }
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits::new(20, Duration::from_secs(15 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.blocked("ip:1", start), None, "failure {i}");
            limiter.record_failure("ip:1", start + Duration::from_secs(i));
        }
        let wait = limiter
            .blocked("ip:1", start + Duration::from_secs(10))
            .expect("blocked");
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(limiter.blocked("ip:2", start), None, "keys are separate");
        assert_eq!(
            limiter.blocked("ip:1", start + Duration::from_secs(60)),
            None
        );
        // A new window starts counting afresh.
        limiter.record_failure("ip:1", start + Duration::from_secs(61));
        assert_eq!(
            limiter.blocked("ip:1", start + Duration::from_secs(62)),
            None
        );
        limiter.forget("ip:1");
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            limiter.record_failure(&format!("ip:{i}"), start + Duration::from_micros(i as u64));
        }
        assert_eq!(limiter.len(), MAX_KEYS);
        assert!(
            limiter
                .blocked(&format!("ip:{}", MAX_KEYS + 9), start)
                .is_some()
        );
    }
}
