//! Saving a Service's data for a stop, on the node the controller picked (the first of the
//! type's `saved_on_stop` role, drained with the reason `ServiceStopped`): the save runs as a
//! task of its own while the node keeps reporting, and one that fails leaves the node Failed,
//! never Drained, so the controller hands the save to another node.

use std::future::Future;

use conpaas_crds::v1alpha1::{AgentState, DrainReason, ServiceNodeSpec};
use tokio::task::JoinHandle;

pub struct StopSave {
    /// What is saved, for messages ("the keys", "the volumes").
    what: &'static str,
    task: Option<JoinHandle<Result<String, String>>>,
    /// The saved data's SHA-256.
    saved: Option<String>,
    error: Option<String>,
}

impl StopSave {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            task: None,
            saved: None,
            error: None,
        }
    }

    /// Whether `spec` asks this node to save for a stop.
    pub fn asked(spec: &ServiceNodeSpec) -> bool {
        spec.drain
            .as_ref()
            .is_some_and(|d| d.reason == DrainReason::ServiceStopped)
    }

    /// Whether a save should start: asked, and none running or done.
    pub fn due(&self, spec: &ServiceNodeSpec) -> bool {
        Self::asked(spec) && self.task.is_none() && self.saved.is_none()
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
            Ok(Err(e)) => self.error = Some(format!("saving {} for the stop: {e}", self.what)),
            Err(e) => self.error = Some(format!("saving {} broke off: {e}", self.what)),
        }
    }

    pub fn running(&self) -> bool {
        self.task.is_some()
    }

    /// The saved data's SHA-256, once saved.
    pub fn saved(&self) -> Option<String> {
        self.saved.clone()
    }

    /// What the node reports while saving, or after a save failed.
    pub fn state(&self) -> Option<(AgentState, String)> {
        if let Some(e) = &self.error {
            Some((AgentState::Failed, e.clone()))
        } else {
            self.running().then(|| {
                (
                    AgentState::Starting,
                    format!("saving {} for the stop", self.what),
                )
            })
        }
    }

    /// Whether the node may go: no save running, and the one a stop asks for is done.
    pub fn drained(&self, spec: Option<&ServiceNodeSpec>) -> bool {
        !self.running() && (!spec.is_some_and(Self::asked) || self.saved.is_some())
    }
}
