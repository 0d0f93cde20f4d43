//! The periodic look of a role that manages a cluster of its own (kvstore, filesystem): one look
//! at a time, in a task of its own (a slot move or a brick removal may take minutes while the node
//! keeps reporting), one every [`EVERY`]; what the last look found is what the node reports,
//! unless its daemon failed or a save for a stop is under way.

use std::future::Future;
use std::time::Duration;

use conpaas_crds::v1alpha1::AgentState;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::RoleReport;
use super::stop_save::StopSave;

/// How often a look starts.
const EVERY: Duration = Duration::from_secs(2);

/// What one look found.
#[derive(Debug, Clone, Default)]
pub struct Found<X = ()> {
    pub ready: bool,
    pub message: String,
    /// The nodes holding the cluster's data; `None` when the look could not tell (the last
    /// known stands: an empty list would release a leaving node that still holds data).
    pub routes_to: Option<Vec<String>>,
    /// What else the role keeps from a look for the next one.
    pub more: X,
}

pub struct Looks<X = ()> {
    task: Option<JoinHandle<Found<X>>>,
    next: Instant,
    /// What the last look found.
    pub found: Found<X>,
}

impl<X: Default + Send + 'static> Looks<X> {
    /// No look yet: the node says it starts `daemon`.
    pub fn new(daemon: &str) -> Self {
        Self {
            task: None,
            next: Instant::now(),
            found: Found {
                message: format!("starting {daemon}"),
                ..Default::default()
            },
        }
    }

    /// The next look starts as soon as none runs (a new spec).
    pub fn soon(&mut self) {
        self.next = Instant::now();
    }

    /// Takes what a look that ended found; whether one had.
    pub async fn collect(&mut self) -> bool {
        if !self.task.as_ref().is_some_and(JoinHandle::is_finished) {
            return false;
        }
        let task = self.task.take().expect("checked above");
        let Ok(mut found) = task.await else {
            return false;
        };
        if found.routes_to.is_none() {
            found.routes_to = self.found.routes_to.take();
        }
        self.found = found;
        true
    }

    /// Whether a look may start: none runs, its time has come, no save is under way.
    pub fn due(&self, stop_save: &StopSave) -> bool {
        self.task.is_none() && self.next <= Instant::now() && !stop_save.running()
    }

    /// Starts `look`; the next one is due a period later.
    pub fn start(&mut self, look: impl Future<Output = Found<X>> + Send + 'static) {
        self.task = Some(tokio::spawn(look));
        self.skip();
    }

    /// No look this time (the daemon does not answer yet): the next is due a period later.
    pub fn skip(&mut self) {
        self.next = Instant::now() + EVERY;
    }

    /// The node's report: a save's state first, then the role's error, then what it found.
    pub fn report(&self, stop_save: &StopSave, error: Option<&String>) -> RoleReport {
        let (state, message) = if let Some(state) = stop_save.state() {
            state
        } else if let Some(e) = error {
            (AgentState::Failed, e.clone())
        } else if self.found.ready {
            (AgentState::Ready, self.found.message.clone())
        } else {
            (AgentState::Starting, self.found.message.clone())
        };
        RoleReport {
            state: Some(state),
            message: Some(message),
            routes_to: self.found.routes_to.clone(),
            saved: stop_save.saved(),
            save_failure: stop_save.failure(),
            ..Default::default()
        }
    }

    /// Ends a look under way (the node stops).
    pub fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_look_that_cannot_tell_who_holds_data_keeps_the_last_known() {
        let stop_save = StopSave::new("the keys");
        let mut looks: Looks = Looks::new("redis-server");
        assert!(looks.due(&stop_save));
        let holders = Some(vec!["kv-node-0".to_string(), "kv-node-1".to_string()]);
        looks.start(std::future::ready(Found {
            ready: true,
            message: "cluster ok".into(),
            routes_to: holders.clone(),
            more: (),
        }));
        assert!(!looks.due(&stop_save), "one look at a time");
        while !looks.collect().await {
            tokio::task::yield_now().await;
        }
        let report = looks.report(&stop_save, None);
        assert_eq!(report.state, Some(AgentState::Ready));
        assert_eq!(report.routes_to, holders);
        looks.soon();
        looks.start(std::future::ready(Found {
            ready: false,
            message: "redis-cli: connection refused".into(),
            routes_to: None,
            more: (),
        }));
        while !looks.collect().await {
            tokio::task::yield_now().await;
        }
        let report = looks.report(&stop_save, None);
        assert_eq!(report.state, Some(AgentState::Starting));
        assert_eq!(
            report.routes_to, holders,
            "an unknown list is not an empty one"
        );
        let failed = looks.report(&stop_save, Some(&"redis-server exited".to_string()));
        assert_eq!(failed.state, Some(AgentState::Failed));
    }
}
