//! Waiting on conditions: a check polled until it holds or a deadline passes. The deadline is a
//! bound against hangs, not a timing assertion.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;

/// Polls `check` every 100 ms until it returns true; fails after `limit` naming `what`.
pub async fn until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out after {limit:?} waiting for {what}; last error: {e:#}"),
                None => bail!("timed out after {limit:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
