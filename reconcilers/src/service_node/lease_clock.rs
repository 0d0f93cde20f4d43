//! Heartbeats judged by the controller's own clock. An agent writes its Lease's `renewTime`
//! with its VM's clock; a VM whose clock runs an hour behind would look silent from its first
//! beat, and one an hour ahead would look alive for an hour after it died. So, as the
//! kubelet's node lifecycle controller does with node leases, the watch replaces each
//! `renewTime` by the moment this controller saw it change: a Lease is fresh when it changed
//! lately by the controller's clock, whatever the VM's says.
//!
//! A Lease first seen (the controller started, or the agent's first beat) counts as renewed
//! when seen: after a restart a silent agent is found out one heartbeat timeout later rather
//! than every node being called silent at once.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

/// The renewals seen, per Lease (namespace/name): the agent's `renewTime` and when this
/// controller saw it.
#[derive(Default)]
pub struct LeaseClock {
    seen: HashMap<String, (Option<Timestamp>, Timestamp)>,
    /// The Leases a relist returned so far: the others were deleted meanwhile.
    relisted: Option<HashSet<String>>,
}

impl LeaseClock {
    /// Rewrites the event's Lease to carry when this controller saw it renewed (at `now`).
    pub fn observe(&mut self, event: &mut Event<Lease>, now: Timestamp) {
        match event {
            Event::Apply(lease) => self.stamp(lease, now),
            Event::InitApply(lease) => {
                self.stamp(lease, now);
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(key(lease));
                }
            }
            Event::Delete(lease) => {
                self.seen.remove(&key(lease));
            }
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.seen.retain(|k, _| relisted.contains(k));
                }
            }
        }
    }

    fn stamp(&mut self, lease: &mut Lease, now: Timestamp) {
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let observed = match self.seen.get(&key(lease)) {
            Some((before, at)) if *before == renewed => *at,
            _ => now,
        };
        self.seen.insert(key(lease), (renewed, observed));
        let spec = lease.spec.as_mut().expect("checked above");
        spec.renew_time = renewed.map(|_| MicroTime(observed));
    }

    /// How many Leases it remembers.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn key(lease: &Lease) -> String {
    format!(
        "{}/{}",
        lease.namespace().unwrap_or_default(),
        lease.name_any()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn lease(name: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("t".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    fn seen(clock: &mut LeaseClock, event: Event<Lease>, now: Timestamp) -> Option<Timestamp> {
        let mut event = event;
        clock.observe(&mut event, now);
        match event {
            Event::Apply(l) | Event::InitApply(l) => l.spec?.renew_time.map(|t| t.0),
            _ => None,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_renewal_counts_when_the_controller_sees_it_whatever_the_vms_clock_says() {
        let mut clock = LeaseClock::default();
        // The VM's clock is an hour behind: its beats are fresh all the same.
        let behind = |s: i64| at(s - 3600);
        assert_eq!(
            seen(&mut clock, Event::Apply(lease("a", behind(0))), at(0)),
            Some(at(0))
        );
        assert_eq!(
            seen(&mut clock, Event::Apply(lease("a", behind(5))), at(5)),
            Some(at(5))
        );
        // An hour ahead, and then silent: stale as the controller's time goes by.
        let ahead = |s: i64| at(s + 3600);
        assert_eq!(
            seen(&mut clock, Event::Apply(lease("b", ahead(0))), at(0)),
            Some(at(0))
        );
        // The same renewal again (a relist, an unrelated change): still when first seen.
        assert_eq!(
            seen(&mut clock, Event::InitApply(lease("b", ahead(0))), at(30)),
            Some(at(0))
        );
    }

    #[test]
    fn leases_gone_while_the_watch_was_down_are_forgotten() {
        let mut clock = LeaseClock::default();
        seen(&mut clock, Event::Apply(lease("a", at(0))), at(0));
        seen(&mut clock, Event::Apply(lease("b", at(0))), at(0));
        assert_eq!(clock.len(), 2);
        seen(&mut clock, Event::Init, at(10));
        seen(&mut clock, Event::InitApply(lease("a", at(0))), at(10));
        seen(&mut clock, Event::InitDone, at(10));
        assert_eq!(clock.len(), 1, "b was deleted meanwhile");
        seen(&mut clock, Event::Delete(lease("a", at(0))), at(11));
        assert!(clock.is_empty());
    }
}
