//! Saving a Service's data for a stop, on the node the controller picked (the first of the
//! type's `saved_on_stop` role, drained with the reason `ServiceStopped`): the save runs as a
//! task of its own while the node keeps reporting. One that fails (the artifact store refusing,
//! a daemon not answering) is tried again after a growing wait, for as long as the stop asks,
//! and the node reports why (`status.agent.saveFailure`): the controller keeps every node
//! until a save is stored, and says so on the Service.

use std::future::Future;
use std::time::{Duration, Instant};

use conpaas_crds::v1alpha1::{AgentState, DrainReason, ServiceNodeSpec};
use tokio::task::JoinHandle;

/// The wait before the first retry; it doubles up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(5);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// The failed tries of a save and when the next is due.
#[derive(Default)]
pub struct Retries {
    failures: u32,
    last: Option<String>,
    again_at: Option<Instant>,
}

impl Retries {
    /// A try failed with `error`: the next one waits longer.
    pub fn failed(&mut self, error: String) {
        self.failures += 1;
        let wait = FIRST_WAIT
            .saturating_mul(1 << (self.failures - 1).min(8))
            .min(LONGEST_WAIT);
        tracing::warn!(%error, attempt = self.failures, retry_in = ?wait, "saving for the stop failed");
        self.last = Some(error);
        self.again_at = Some(Instant::now() + wait);
    }

    /// Whether a try may start now: none failed yet, or the wait after the last one is over.
    pub fn due(&self) -> bool {
        self.again_at.is_none_or(|at| at <= Instant::now())
    }

    /// Whether a failed try waits for its retry.
    pub fn waiting(&self) -> bool {
        self.last.is_some()
    }

    /// Why the last try failed, for `status.agent.saveFailure`.
    pub fn last_failure(&self) -> Option<String> {
        self.last.clone()
    }

    /// What the node says while it waits to try again.
    pub fn message(&self, what: &str) -> String {
        let left = self
            .again_at
            .map(|at| at.saturating_duration_since(Instant::now()).as_secs())
            .unwrap_or(0);
        format!(
            "saving {what} for the stop failed {} times, last: {}; trying again in {left} s",
            self.failures,
            self.last.as_deref().unwrap_or("?")
        )
    }
}

pub struct StopSave {
    /// What is saved, for messages ("the keys", "the volumes").
    what: &'static str,
    task: Option<JoinHandle<Result<String, String>>>,
    /// The saved data's SHA-256.
    saved: Option<String>,
    retries: Retries,
}

impl StopSave {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            task: None,
            saved: None,
            retries: Retries::default(),
        }
    }

    /// Whether `spec` asks this node to save for a stop.
    pub fn asked(spec: &ServiceNodeSpec) -> bool {
        spec.drain
            .as_ref()
            .is_some_and(|d| d.reason == DrainReason::ServiceStopped)
    }

    /// Whether a save should start: asked, none running or done, and a failed one's wait over.
    pub fn due(&self, spec: &ServiceNodeSpec) -> bool {
        Self::asked(spec) && self.task.is_none() && self.saved.is_none() && self.retries.due()
    }

    /// Whether a failed save's retry is due (the role then starts it as it started the first).
    pub fn retry_due(&self, spec: &ServiceNodeSpec) -> bool {
        self.retries.waiting() && self.due(spec)
    }

    /// Runs `save` (its result: the saved data's SHA-256) as a task of its own.
    pub fn start(&mut self, save: impl Future<Output = Result<String, String>> + Send + 'static) {
        tracing::info!("the Service stops: saving {}", self.what);
        self.task = Some(tokio::spawn(save));
    }

    /// Takes the result of a save that ended.
    pub async fn poll(&mut self) {
        if !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            return;
        }
        let task = self.task.take().expect("checked above");
        match task.await {
            Ok(Ok(sha256)) => self.saved = Some(sha256),
            Ok(Err(e)) => self.retries.failed(e),
            Err(e) => self.retries.failed(format!("the save broke off: {e}")),
        }
    }

    pub fn running(&self) -> bool {
        self.task.is_some()
    }

    /// The saved data's SHA-256, once saved.
    pub fn saved(&self) -> Option<String> {
        self.saved.clone()
    }

    /// Why the last try failed, while no save is stored.
    pub fn failure(&self) -> Option<String> {
        self.saved
            .is_none()
            .then(|| self.retries.last_failure())
            .flatten()
    }

    /// What the node reports while saving, or while a failed save waits for its retry.
    pub fn state(&self) -> Option<(AgentState, String)> {
        if self.running() {
            Some((
                AgentState::Starting,
                format!("saving {} for the stop", self.what),
            ))
        } else if self.saved.is_none() && self.retries.waiting() {
            Some((AgentState::Starting, self.retries.message(self.what)))
        } else {
            None
        }
    }

    /// Whether the node may go: no save running, and the one a stop asks for is done.
    pub fn drained(&self, spec: Option<&ServiceNodeSpec>) -> bool {
        !self.running() && (!spec.is_some_and(Self::asked) || self.saved.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_waits_longer_each_time_and_says_why() {
        let mut retries = Retries::default();
        assert!(retries.due() && !retries.waiting());
        retries.failed("the store refused: 413".into());
        assert!(retries.waiting() && !retries.due(), "waits 5 s");
        let first = retries.again_at.unwrap();
        retries.failed("the store refused: 413".into());
        assert!(retries.again_at.unwrap() > first + Duration::from_secs(4));
        assert_eq!(
            retries.last_failure().as_deref(),
            Some("the store refused: 413")
        );
        assert!(retries.message("the keys").starts_with(
            "saving the keys for the stop failed 2 times, last: the store refused: 413"
        ));
        for _ in 0..20 {
            retries.failed("again".into());
        }
        let wait = retries.again_at.unwrap() - Instant::now();
        assert!(wait <= LONGEST_WAIT, "{wait:?}");
    }
}
