//! What the ServiceNode loop does next, decided from what was observed. Pure: the VM calls and
//! API writes are the executor's ([`super::act`]).

use std::time::Duration;

use conpaas_cloud::{Vm, VmState};

use crate::conditions::Desired;

/// What the loop knows about one node and its VMs.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The node is being deleted.
    pub deleting: bool,
    /// Its Service is paused.
    pub paused: bool,
    /// It carries the VM finalizer.
    pub has_finalizer: bool,
    /// Its VM is to be left running when it goes (`deletionPolicy: Orphan`).
    pub orphan_vm: bool,
    /// Its spec changed since the controller last acted on it.
    pub generation_changed: bool,
    /// The cloud's ID of its VM, once recorded.
    pub provider_id: Option<String>,
    /// A create was journaled (`status.createRequestedAt`).
    pub journaled: bool,
    /// Its token, the VM's idempotency key.
    pub token: String,
    /// Why its VM can be neither created nor terminated now (no Cloud, no driver).
    pub blocked: Option<Desired>,
    /// Its charge in the namespace's credit ledger is not closed yet.
    pub charge_open: bool,
    /// Its status records when its VMs were confirmed gone (`terminatedAt`): the ledger closes
    /// its charge only then.
    pub gone_recorded: bool,
    /// Its namespace is metered and no Service owns it any more (deleted with its nodes
    /// orphaned): it would run on, charged, but stopped by nothing when the credits run out.
    pub abandoned: bool,
    /// VMs the cloud shows with the node's tags or its recorded ID, in any state (terminated ones
    /// may still be listed; the plan ignores them). Looked up only when they decide something:
    /// while deleting, and before creating after a journaled create.
    pub vms: Vec<Vm>,
}

impl Facts {
    /// The node's VMs that are not terminated.
    fn live(&self) -> impl Iterator<Item = &Vm> {
        self.vms.iter().filter(|vm| vm.state != VmState::Terminated)
    }
}

/// One step of the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Add the VM finalizer.
    AddFinalizer,
    /// Make the agent's ServiceAccount, Role, RoleBinding and Lease match the node.
    EnsureCredentials,
    /// Record `status.createRequestedAt` before the cloud call.
    JournalCreate,
    /// Create the VM with the node's token and record its provider ID at once.
    CreateVm,
    /// Record a VM an earlier run created (found by tags and token).
    AdoptVm(Vm),
    /// Terminate these VMs (by the cloud's ID).
    TerminateVms(Vec<String>),
    /// Mark these VMs `conpaas.io/orphaned` and leave them running.
    TagOrphaned(Vec<String>),
    /// Tell the user the node's VM is gone for good.
    ReportDeleted(String),
    /// Delete the agent's credentials.
    RemoveCredentials,
    /// Remove the VM finalizer: the node may go.
    DropFinalizer,
    /// Delete the node itself (its VM goes with it), saying why.
    DeleteNode(String),
}

/// What the status step writes after the actions.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusUpdate {
    /// Nothing: the actions wrote what was needed, or the node is going.
    Unchanged,
    /// The VM as observed, with the agent's heartbeat.
    Observed,
    /// The VM cannot be managed now, and why.
    Blocked(Desired),
    /// A deleted node's VMs are confirmed gone: recorded, so that the ledger stops charging it.
    Gone,
}

/// When to look again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Only when the node (or its Cloud) changes.
    AwaitChange,
    /// After this long.
    After(Duration),
    /// At the node's resync pace (within half its heartbeat timeout).
    Resync,
}

/// The plan for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// Executed in order; the first failure stops the rest.
    pub actions: Vec<NodeAction>,
    /// Then the status.
    pub status: StatusUpdate,
    /// Then when to come back.
    pub next: Next,
}

impl NodePlan {
    fn new(actions: Vec<NodeAction>, status: StatusUpdate, next: Next) -> Self {
        Self {
            actions,
            status,
            next,
        }
    }
}

/// The cloud's VM ID inside a provider ID such as `local:///<id>`.
pub fn vm_id(provider_id: &str) -> &str {
    provider_id.rsplit('/').next().unwrap_or(provider_id)
}

/// Decides the node's next steps.
pub fn plan(f: &Facts) -> NodePlan {
    use NodeAction::*;
    if let Some(problem) = &f.blocked {
        // Without a driver the VM can be neither created nor terminated: say so and wait.
        return NodePlan::new(
            vec![],
            StatusUpdate::Blocked(problem.clone()),
            Next::After(Duration::from_secs(5)),
        );
    }
    if f.paused && (f.deleting || f.provider_id.is_none()) {
        // Paused: no VM is created or terminated until the Service resumes.
        return NodePlan::new(
            vec![],
            StatusUpdate::Unchanged,
            Next::After(Duration::from_secs(10)),
        );
    }
    if f.deleting {
        return plan_release(f);
    }
    if f.abandoned {
        return NodePlan::new(
            vec![DeleteNode(
                "no Service of its metered namespace owns it any more: deleted with its VM".into(),
            )],
            StatusUpdate::Unchanged,
            Next::AwaitChange,
        );
    }
    let mut actions = Vec::new();
    if !f.has_finalizer {
        actions.push(AddFinalizer);
    }
    if f.provider_id.is_some() {
        if f.generation_changed {
            actions.push(EnsureCredentials);
        }
        return NodePlan::new(actions, StatusUpdate::Observed, Next::Resync);
    }
    // No VM recorded. A create journaled by an earlier run may have happened: adopt what the
    // cloud shows with the node's token before creating anything.
    let earlier = f.live().find(|vm| vm.token == f.token);
    match (f.journaled, earlier) {
        (true, Some(vm)) => actions.push(AdoptVm(vm.clone())),
        (true, None) => actions.extend([EnsureCredentials, CreateVm]),
        (false, _) => actions.extend([JournalCreate, EnsureCredentials, CreateVm]),
    }
    NodePlan::new(
        actions,
        StatusUpdate::Unchanged,
        Next::After(Duration::from_secs(1)),
    )
}

/// A node being deleted: its VMs are terminated (or orphaned) and confirmed gone by ID and by
/// tag before the finalizer goes.
fn plan_release(f: &Facts) -> NodePlan {
    use NodeAction::*;
    if !f.has_finalizer {
        return NodePlan::new(vec![], StatusUpdate::Unchanged, Next::AwaitChange);
    }
    let mut live: Vec<String> = f.live().map(|vm| vm.id.clone()).collect();
    live.sort();
    live.dedup();
    if f.orphan_vm {
        let mut ids = live;
        ids.extend(f.provider_id.as_deref().map(|p| vm_id(p).to_string()));
        ids.sort();
        ids.dedup();
        let mut actions = Vec::new();
        if !ids.is_empty() {
            actions.push(TagOrphaned(ids));
        }
        actions.extend([RemoveCredentials, DropFinalizer]);
        return NodePlan::new(actions, StatusUpdate::Unchanged, Next::AwaitChange);
    }
    if !live.is_empty() {
        return NodePlan::new(
            vec![TerminateVms(live)],
            StatusUpdate::Unchanged,
            Next::After(Duration::from_secs(1)),
        );
    }
    if f.charge_open {
        // The VM is gone; the credits loop closes the node's charge (once the status says so:
        // a VM is charged until it is gone, not until its deletion was asked) before the node
        // may go.
        let status = match f.gone_recorded {
            true => StatusUpdate::Unchanged,
            false => StatusUpdate::Gone,
        };
        return NodePlan::new(vec![], status, Next::After(Duration::from_secs(1)));
    }
    let mut actions = Vec::new();
    if let Some(p) = &f.provider_id {
        actions.push(ReportDeleted(p.clone()));
    }
    actions.extend([RemoveCredentials, DropFinalizer]);
    NodePlan::new(actions, StatusUpdate::Unchanged, Next::AwaitChange)
}

#[cfg(test)]
mod tests {
    use super::NodeAction::*;
    use super::*;

    fn vm(id: &str, token: &str, state: VmState) -> Vm {
        Vm {
            id: id.into(),
            provider_id: format!("memory:///{id}"),
            token: token.into(),
            state,
            address: None,
            tags: Default::default(),
            created_at: std::time::UNIX_EPOCH,
        }
    }

    fn facts() -> Facts {
        Facts {
            has_finalizer: true,
            token: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plans_by_situation() {
        let recorded = Some("memory:///vm-1".to_string());
        let cases: Vec<(&str, Facts, Vec<NodeAction>, Next)> = vec![
            (
                "new node: finalizer, journal, credentials, create",
                Facts {
                    has_finalizer: false,
                    ..facts()
                },
                vec![AddFinalizer, JournalCreate, EnsureCredentials, CreateVm],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "journaled, the VM exists with our token: adopt it",
                Facts {
                    journaled: true,
                    vms: vec![
                        vm("other", "x", VmState::Running),
                        vm("vm-1", "t", VmState::Pending),
                    ],
                    ..facts()
                },
                vec![AdoptVm(vm("vm-1", "t", VmState::Pending))],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "journaled, only a terminated VM with our token: create, never adopt it",
                Facts {
                    journaled: true,
                    vms: vec![vm("vm-0", "t", VmState::Terminated)],
                    ..facts()
                },
                vec![EnsureCredentials, CreateVm],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "journaled, nothing found: create (the token keeps it single)",
                Facts {
                    journaled: true,
                    vms: vec![vm("other", "x", VmState::Running)],
                    ..facts()
                },
                vec![EnsureCredentials, CreateVm],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "running node, spec unchanged: only observe",
                Facts {
                    provider_id: recorded.clone(),
                    ..facts()
                },
                vec![],
                Next::Resync,
            ),
            (
                "running node, new spec: credentials follow it",
                Facts {
                    provider_id: recorded.clone(),
                    generation_changed: true,
                    ..facts()
                },
                vec![EnsureCredentials],
                Next::Resync,
            ),
            (
                "deleting with a live VM: terminate, then confirm",
                Facts {
                    deleting: true,
                    provider_id: recorded.clone(),
                    vms: vec![
                        vm("vm-1", "t", VmState::Running),
                        vm("vm-1", "t", VmState::Running),
                    ],
                    ..facts()
                },
                vec![TerminateVms(vec!["vm-1".into()])],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "deleting, the VM is gone by ID and by tag: release",
                Facts {
                    deleting: true,
                    provider_id: recorded.clone(),
                    vms: vec![vm("vm-1", "t", VmState::Terminated)],
                    ..facts()
                },
                vec![
                    ReportDeleted("memory:///vm-1".into()),
                    RemoveCredentials,
                    DropFinalizer,
                ],
                Next::AwaitChange,
            ),
            (
                "deleting, the VM is gone but its credit charge is open: wait for the ledger",
                Facts {
                    deleting: true,
                    provider_id: recorded.clone(),
                    charge_open: true,
                    gone_recorded: true,
                    ..facts()
                },
                vec![],
                Next::After(Duration::from_secs(1)),
            ),
            (
                "abandoned by its Service in a metered namespace: delete it",
                Facts {
                    provider_id: recorded.clone(),
                    abandoned: true,
                    ..facts()
                },
                vec![DeleteNode(
                    "no Service of its metered namespace owns it any more: deleted with its VM"
                        .into(),
                )],
                Next::AwaitChange,
            ),
            (
                "deleting with deletionPolicy Orphan: tag, keep running, release",
                Facts {
                    deleting: true,
                    orphan_vm: true,
                    provider_id: recorded.clone(),
                    vms: vec![vm("vm-2", "t", VmState::Running)],
                    ..facts()
                },
                vec![
                    TagOrphaned(vec!["vm-1".into(), "vm-2".into()]),
                    RemoveCredentials,
                    DropFinalizer,
                ],
                Next::AwaitChange,
            ),
            (
                "deleted, finalizer already gone: nothing",
                Facts {
                    deleting: true,
                    has_finalizer: false,
                    ..facts()
                },
                vec![],
                Next::AwaitChange,
            ),
            (
                "paused before its VM exists: nothing is created",
                Facts {
                    paused: true,
                    ..facts()
                },
                vec![],
                Next::After(Duration::from_secs(10)),
            ),
            (
                "paused while deleting: nothing is terminated",
                Facts {
                    paused: true,
                    deleting: true,
                    provider_id: recorded.clone(),
                    vms: vec![vm("vm-1", "t", VmState::Running)],
                    ..facts()
                },
                vec![],
                Next::After(Duration::from_secs(10)),
            ),
        ];
        for (what, facts, actions, next) in cases {
            let p = plan(&facts);
            assert_eq!(p.actions, actions, "{what}");
            assert_eq!(p.next, next, "{what}");
        }
    }

    #[test]
    fn a_node_without_a_driver_is_blocked_even_while_deleting() {
        let problem = Desired::new("Ready", false, "CloudNotFound", "no Cloud");
        let p = plan(&Facts {
            deleting: true,
            blocked: Some(problem.clone()),
            vms: vec![vm("vm-1", "t", VmState::Running)],
            ..facts()
        });
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.status, StatusUpdate::Blocked(problem));
    }

    #[test]
    fn a_deleted_nodes_vm_is_recorded_gone_once_confirmed_and_not_before() {
        let deleting = Facts {
            deleting: true,
            provider_id: Some("memory:///vm-1".into()),
            charge_open: true,
            vms: vec![vm("vm-1", "t", VmState::Running)],
            ..facts()
        };
        // Still running (a termination the cloud refuses): charged on, nothing recorded.
        assert_eq!(plan(&deleting).status, StatusUpdate::Unchanged);
        let gone = Facts {
            vms: vec![vm("vm-1", "t", VmState::Terminated)],
            ..deleting
        };
        assert_eq!(plan(&gone).status, StatusUpdate::Gone);
        let recorded = Facts {
            gone_recorded: true,
            ..gone
        };
        assert_eq!(plan(&recorded).status, StatusUpdate::Unchanged);
    }

    #[test]
    fn a_paused_running_node_is_still_observed() {
        let p = plan(&Facts {
            paused: true,
            provider_id: Some("memory:///vm-1".into()),
            ..facts()
        });
        assert_eq!((p.status, p.next), (StatusUpdate::Observed, Next::Resync));
    }
}
