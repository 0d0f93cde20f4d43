//! Kubernetes Events for what a user must see, one per happening, as client-go's event recorder
//! does: the same reason and message about the same object again within [`FINISH`] is counted on
//! the Event already written (its `series`), and the counts are written at most once per
//! [`REFRESH`] by [`Recorder::run`], never once per reconcile. A node failing every few seconds
//! through an overload therefore costs one Event and a patch a minute, not a patch per retry.
//! Publishing is best effort: a failed Event is logged, never a reason to fail a reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use crate::Context;

/// A repeat after this long without one is a new happening, with an Event of its own.
pub const FINISH: Duration = Duration::from_secs(6 * 60);
/// How often the counts of repeated Events are written.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Publishes an Event about `object`.
pub async fn publish<K>(
    ctx: &Context,
    object: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    ctx.recorder
        .publish(&object.object_ref(&()), warning, reason, action, note)
        .await;
}

/// What makes two Events the same happening.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    warning: bool,
    reason: String,
    note: String,
}

impl Key {
    /// The happening `reason` with `note` about `regarding`.
    pub fn new(regarding: &ObjectReference, warning: bool, reason: &str, note: &str) -> Self {
        Self {
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            warning,
            reason: reason.into(),
            note: note.into(),
        }
    }
}

/// One written Event and how often its happening was seen.
#[derive(Debug, Clone)]
struct Series {
    namespace: String,
    name: String,
    count: i32,
    written: i32,
    last: Timestamp,
}

/// A count to write on an Event already written.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The Event's namespace.
    pub namespace: String,
    /// The Event's name.
    pub name: String,
    /// Times its happening was seen.
    pub count: i32,
    /// The last time.
    pub last: Timestamp,
}

/// The bookkeeping of [`Recorder`], without the API server: which happenings have an Event.
#[derive(Debug, Default)]
pub struct Aggregator {
    series: HashMap<Key, Series>,
}

impl Aggregator {
    /// Counts a happening seen at `now`. Returns false when an Event for it was written within
    /// [`FINISH`] (nothing to write now), true when a new Event is needed; the caller then
    /// writes it and calls [`Aggregator::written`] (or [`Aggregator::forget`] when it failed).
    pub fn observe(&mut self, key: &Key, now: Timestamp) -> bool {
        match self.series.get_mut(key) {
            Some(s) if now.duration_since(s.last) < finish() => {
                s.count += 1;
                s.last = now;
                false
            }
            _ => {
                // Reserved at once, so a concurrent repeat counts instead of writing a second.
                self.series.insert(
                    key.clone(),
                    Series {
                        namespace: String::new(),
                        name: String::new(),
                        count: 1,
                        written: 1,
                        last: now,
                    },
                );
                true
            }
        }
    }

    /// The Event for `key` was written as `namespace/name`.
    pub fn written(&mut self, key: &Key, namespace: &str, name: &str) {
        if let Some(s) = self.series.get_mut(key) {
            s.namespace = namespace.into();
            s.name = name.into();
        }
    }

    /// The Event for `key` could not be written: the next repeat tries again.
    pub fn forget(&mut self, key: &Key) {
        self.series.remove(key);
    }

    /// The counts not yet written, marked as written; happenings over for [`FINISH`] are
    /// forgotten after their last count.
    pub fn due(&mut self, now: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        for s in self.series.values_mut() {
            if s.count > s.written && !s.name.is_empty() {
                due.push(Due {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    count: s.count,
                    last: s.last,
                });
                s.written = s.count;
            }
        }
        self.series
            .retain(|_, s| now.duration_since(s.last) < finish() || s.name.is_empty());
        due
    }
}

fn finish() -> SignedDuration {
    SignedDuration::try_from(FINISH).expect("FINISH fits")
}

/// Writes Events (events.k8s.io/v1) as the controller, aggregated by [`Aggregator`].
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    aggregator: Mutex<Aggregator>,
}

impl Recorder {
    /// Events reported by `controller` (its `instance`: this process).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            aggregator: Default::default(),
        }
    }

    fn aggregator(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the happening `reason` about `regarding`: a new Event, or a count on the one
    /// written within [`FINISH`].
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let key = Key::new(regarding, warning, reason, &note);
        let now = Timestamp::now();
        if !self.aggregator().observe(&key, now) {
            return;
        }
        // Cluster-scoped objects (Clouds) get their Events in `default`, as kubectl looks.
        let namespace = regarding.namespace.clone().unwrap_or("default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => self.aggregator().written(&key, &namespace, &name),
            Err(e) => {
                self.aggregator().forget(&key);
                tracing::warn!(error = %e, reason, "could not publish event");
            }
        }
    }

    /// Writes the counts of repeated Events every [`REFRESH`], forever.
    pub async fn run(&self) {
        loop {
            tokio::time::sleep(REFRESH).await;
            self.write_counts().await;
        }
    }

    async fn write_counts(&self) {
        let due = self.aggregator().due(Timestamp::now());
        for d in due {
            let patch = Event {
                series: Some(EventSeries {
                    count: d.count,
                    last_observed_time: MicroTime(d.last),
                }),
                ..Default::default()
            };
            let api: Api<Event> = Api::namespaced(self.client.clone(), &d.namespace);
            if let Err(e) = api
                .patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(error = %e, event = %d.name, "could not count a repeated event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ServiceNode".into()),
            namespace: Some("a".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_happening_repeated_by_every_retry_is_one_event_and_one_count_a_refresh() {
        let mut agg = Aggregator::default();
        let key = Key::new(&node("n1"), true, "ProviderQuota", "quota exceeded");
        assert!(
            agg.observe(&key, at(0)),
            "the first sighting writes an Event"
        );
        agg.written(&key, "a", "n1.1");
        let writes = (1..=100).filter(|i| agg.observe(&key, at(*i))).count();
        assert_eq!(writes, 0, "100 retries within the window write nothing");
        assert_eq!(
            agg.due(at(101)),
            vec![Due {
                namespace: "a".into(),
                name: "n1.1".into(),
                count: 101,
                last: at(100)
            }]
        );
        assert!(agg.due(at(102)).is_empty(), "a count is written once");
    }

    #[test]
    fn other_objects_reasons_and_messages_are_other_events() {
        let mut agg = Aggregator::default();
        assert!(agg.observe(&Key::new(&node("n1"), true, "R", "m"), at(0)));
        assert!(agg.observe(&Key::new(&node("n2"), true, "R", "m"), at(0)));
        assert!(agg.observe(&Key::new(&node("n1"), true, "Other", "m"), at(0)));
        assert!(agg.observe(&Key::new(&node("n1"), true, "R", "new message"), at(0)));
    }

    #[test]
    fn after_the_window_a_repeat_is_a_new_event_and_a_failed_write_is_tried_again() {
        let mut agg = Aggregator::default();
        let key = Key::new(&node("n1"), false, "VmCreated", "VM 1");
        assert!(agg.observe(&key, at(0)));
        agg.written(&key, "a", "n1.1");
        assert!(
            agg.due(at(400)).is_empty(),
            "seen once: no repeat count to write"
        );
        assert!(
            agg.observe(&key, at(400)),
            "over 6 minutes later: a new Event"
        );
        agg.forget(&key);
        assert!(agg.observe(&key, at(401)), "the failed write is retried");
    }
}
