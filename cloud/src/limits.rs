//! A client-side rate limit per Cloud and operation, so one busy Cloud (a scale-up of hundreds
//! of nodes) stays under its provider's API limits instead of being throttled by it.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Calls per second allowed for each operation (`create`, `describe`, `delete`, `tag`) of one
/// Cloud, with bursts up to the same number.
pub struct Limits(DefaultKeyedRateLimiter<&'static str>);

impl Limits {
    /// `calls_per_second` per operation; 0 is taken as 1.
    pub fn new(calls_per_second: u32) -> Self {
        let rate = NonZeroU32::new(calls_per_second).unwrap_or(NonZeroU32::MIN);
        Limits(RateLimiter::keyed(Quota::per_second(rate)))
    }

    /// Waits until `operation` may be called.
    pub async fn wait(&self, operation: &'static str) {
        self.0.until_key_ready(&operation).await;
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_are_limited_separately() {
        let limits = Limits::new(2);
        limits.wait("create").await;
        limits.wait("create").await;
        // Asked without waiting: the burst of creates is spent, the deletes' is whole (a limiter
        // shared by every operation would refuse the delete too).
        assert!(
            limits.0.check_key(&"create").is_err(),
            "a third create waits"
        );
        assert!(
            limits.0.check_key(&"delete").is_ok(),
            "deletes have their own budget"
        );
        assert!(limits.0.check_key(&"delete").is_ok());
        assert!(
            limits.0.check_key(&"delete").is_err(),
            "and their own limit"
        );
    }
}
