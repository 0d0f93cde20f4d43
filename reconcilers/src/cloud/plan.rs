//! What the Cloud loop does next: its finalizer, the orphans to terminate, its Ready condition
//! and node count. Pure.

use std::time::{Duration, SystemTime};

use conpaas_cloud::Vm;
use conpaas_crds::labels::conditions::READY;

use super::sweep::{Claim, orphans};
use crate::conditions::Desired;

/// What the loop knows about one Cloud.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The Cloud is being deleted.
    pub deleting: bool,
    /// It carries the nodes finalizer.
    pub has_finalizer: bool,
    /// `spec.local`, `spec.ec2` or `spec.opennebula`.
    pub provider: Option<String>,
    /// ServiceNodes on it, deleted ones included (they still need it to terminate their VMs).
    pub holders: usize,
    /// ServiceNodes on it that are not being deleted.
    pub nodes: usize,
    /// Why no driver could be built for it, if none could.
    pub driver_problem: Option<String>,
    /// Our VMs as its listing shows them, or the failure of the listing (with the provider's
    /// message); `None` when it was not listed.
    pub listing: Option<Result<Vec<Vm>, String>>,
    /// Every ServiceNode's claim on VMs.
    pub claims: Vec<Claim>,
}

/// One step of the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum CloudAction {
    /// Add the finalizer that keeps the Cloud while nodes need it.
    AddFinalizer,
    /// Remove it: no node needs the Cloud any more.
    DropFinalizer,
    /// Terminate a VM no ServiceNode claims, and say so in an Event.
    TerminateOrphan(Vm),
}

/// The plan for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudPlan {
    /// Executed in order.
    pub actions: Vec<CloudAction>,
    /// The Ready condition; `None` when the Cloud is about to go.
    pub ready: Option<Desired>,
    /// When to look again.
    pub next: Option<Duration>,
}

/// Decides the Cloud's next steps. `grace` is how old an unclaimed VM must be to be swept.
pub fn plan(f: &Facts, now: SystemTime, grace: Duration) -> CloudPlan {
    if f.deleting {
        if f.holders == 0 {
            let actions = if f.has_finalizer {
                vec![CloudAction::DropFinalizer]
            } else {
                vec![]
            };
            return CloudPlan {
                actions,
                ready: None,
                next: None,
            };
        }
        return CloudPlan {
            actions: vec![],
            ready: Some(Desired::new(
                READY,
                false,
                "Deleting",
                format!(
                    "waiting for {} nodes to terminate their VMs before the Cloud goes",
                    f.holders
                ),
            )),
            next: Some(Duration::from_secs(2)),
        };
    }
    let mut actions = Vec::new();
    if !f.has_finalizer {
        actions.push(CloudAction::AddFinalizer);
    }
    let provider = f.provider.as_deref().unwrap_or("?");
    // The sweep's listing is also the check that the cloud answers and takes our credentials.
    let ready = match (&f.driver_problem, &f.listing) {
        (Some(why), _) => Desired::new(READY, false, "DriverUnavailable", why.clone()),
        (None, Some(Err(why))) => Desired::new(READY, false, "CloudUnavailable", why.clone()),
        (None, Some(Ok(vms))) => {
            actions.extend(
                orphans(vms, &f.claims, now, grace)
                    .into_iter()
                    .map(|vm| CloudAction::TerminateOrphan(vm.clone())),
            );
            Desired::new(
                READY,
                true,
                "DriverReady",
                format!("the {provider} driver is ready"),
            )
        }
        (None, None) => Desired::new(
            READY,
            true,
            "DriverReady",
            format!("the {provider} driver is ready"),
        ),
    };
    CloudPlan {
        actions,
        ready: Some(ready),
        next: Some(Duration::from_secs(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stray(token: &str) -> Vm {
        super::super::sweep::tests::vm("ns", "gone-node-0", token, 1000)
    }

    fn facts() -> Facts {
        Facts {
            has_finalizer: true,
            provider: Some("memory".into()),
            ..Default::default()
        }
    }

    #[test]
    fn plans_by_situation() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let grace = Duration::from_secs(120);
        // (situation, facts, actions, Ready reason and status)
        type Case = (
            &'static str,
            Facts,
            Vec<CloudAction>,
            Option<(&'static str, bool)>,
        );
        let cases: Vec<Case> = vec![
            (
                "new Cloud: finalizer, listing fine",
                Facts {
                    has_finalizer: false,
                    listing: Some(Ok(vec![])),
                    ..facts()
                },
                vec![CloudAction::AddFinalizer],
                Some(("DriverReady", true)),
            ),
            (
                "an unclaimed old VM is swept",
                Facts {
                    listing: Some(Ok(vec![stray("t1")])),
                    ..facts()
                },
                vec![CloudAction::TerminateOrphan(stray("t1"))],
                Some(("DriverReady", true)),
            ),
            (
                "a refused listing shows the provider's message and sweeps nothing",
                Facts {
                    listing: Some(Err("list VMs: unauthorized: AuthFailure".into())),
                    ..facts()
                },
                vec![],
                Some(("CloudUnavailable", false)),
            ),
            (
                "no driver",
                Facts {
                    driver_problem: Some("the ec2 backend is not compiled in".into()),
                    ..facts()
                },
                vec![],
                Some(("DriverUnavailable", false)),
            ),
            (
                "deleted while nodes still use it: wait",
                Facts {
                    deleting: true,
                    holders: 2,
                    ..facts()
                },
                vec![],
                Some(("Deleting", false)),
            ),
            (
                "deleted and unused: let it go",
                Facts {
                    deleting: true,
                    ..facts()
                },
                vec![CloudAction::DropFinalizer],
                None,
            ),
        ];
        for (what, facts, actions, ready) in cases {
            let p = plan(&facts, now, grace);
            assert_eq!(p.actions, actions, "{what}");
            assert_eq!(
                p.ready.as_ref().map(|r| (r.reason.as_str(), r.status)),
                ready,
                "{what}"
            );
        }
    }
}
