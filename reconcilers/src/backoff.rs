//! Per-object exponential backoff for failed reconciles: a flapping object slows down alone,
//! and one success resets it. Each wait is stretched by a random part of up to half of it, so
//! objects that failed together (an API server overload) do not all come back in the same
//! instant and overload it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failure counts per object key.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let wait = Self::BASE.saturating_mul(1u32 << (*n - 1).min(20));
        wait.mul_f64(1.0 + 0.5 * random_fraction()).min(Self::MAX)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A number in [0, 1), different on every call.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // Every RandomState is keyed afresh; hashing nothing with it yields a random number.
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(wait: Duration, nominal: Duration) {
        assert!(
            wait >= nominal && wait <= nominal.mul_f64(1.5),
            "{wait:?} is not within {nominal:?} and half again"
        );
    }

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets_on_success() {
        let b = Backoff::default();
        within(b.failed("a"), Duration::from_millis(500));
        within(b.failed("a"), Duration::from_secs(1));
        within(b.failed("a"), Duration::from_secs(2));
        within(b.failed("other"), Duration::from_millis(500));
        for _ in 0..30 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), Duration::from_secs(300));
        b.succeeded("a");
        within(b.failed("a"), Duration::from_millis(500));
    }

    #[test]
    fn objects_failing_together_come_back_spread_out() {
        let b = Backoff::default();
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|i| b.failed(&format!("node-{i}"))).collect();
        assert!(
            waits.len() > 40,
            "50 first failures got only {} distinct waits",
            waits.len()
        );
    }
}
