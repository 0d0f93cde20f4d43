//! The pure middle of the Service loop: from what the Service asks for and the ServiceNodes that
//! exist, the list of node actions that moves one towards the other. No I/O; table-tested.
//!
//! Rules, per role:
//! - unhealthy nodes (VM failed or gone, heartbeat stale) are deleted and replaced under the
//!   same role (a generic master is replaced, never dropped) — unless more than the Service's
//!   `maxUnhealthyPercent` of its nodes are unhealthy at once, when nothing is replaced;
//! - nodes whose placement (cloud, instance type) no longer matches are replaced;
//! - surplus nodes go not-ready first, then newest (highest ordinal) first;
//! - a ready node that leaves (surplus, moved, role removed) is drained when its type drains:
//!   dropped from every member list, released once each ready router (php `proxy`) reports it
//!   routes to it no more, and deleted when its agent reports `Drained`;
//! - missing nodes are created with the lowest ordinals no existing node uses, so a retry after
//!   a stale read creates the same names again and the API server refuses the duplicates;
//! - nodes whose configuration (code, settings, script, members) differs are re-specced;
//! - a stopped Service deletes every node.

use std::collections::{BTreeMap, BTreeSet};

use conpaas_crds::v1alpha1::{
    DrainReason, FilesystemNodeSpec, GenericSpec, Member, NodeCode, NodeDrain, NodeLink,
    NodeVolume, ServiceNodeSpec, ServiceType,
};

/// What the Service asks for, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Service name.
    pub service: String,
    /// Application name.
    pub application: String,
    /// Service type.
    pub service_type: ServiceType,
    /// False when the Service is Stopped, or held stopped.
    pub running: bool,
    /// Why a Service asked to run is stopped anyway (its tenant's credits ran out).
    pub held: Option<super::validate::Problem>,
    /// Nodes to remove before any other when a role shrinks (the autoscaler's choice).
    pub leaving_first: Vec<String>,
    /// Every role of the type with its count and placement.
    pub roles: Vec<DesiredRole>,
    /// Configuration every node gets.
    pub config: NodeConfig,
    /// Above this share of unhealthy nodes, none is replaced.
    pub max_unhealthy_percent: i32,
    /// The Service is paused: nodes are only told so.
    pub paused: bool,
    /// How leaving nodes are drained.
    pub drain: DrainPolicy,
    /// The role whose first serving node saves the data when the Service stops.
    pub saved_on_stop: Option<&'static str>,
    /// The data saved at the last stop, as that role's nodes restore it (the Service's status
    /// records it; a stop deletes the nodes once it names what the saver reports).
    pub restore: Option<NodeCode>,
}

/// How a leaving node is drained.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrainPolicy {
    /// How long it may finish its work in flight once released.
    pub seconds: i32,
    /// Roles that route to the others and must stop routing to it first.
    pub routers: &'static [&'static str],
}

impl DrainPolicy {
    /// Whether leaving nodes are drained at all.
    pub fn drains(&self) -> bool {
        self.seconds > 0 || !self.routers.is_empty()
    }
}

/// One role's count and placement.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredRole {
    /// Role name.
    pub name: String,
    /// Node count.
    pub count: i32,
    /// Cloud name.
    pub cloud: String,
    /// Instance type, if set.
    pub instance_type: Option<String>,
    /// Each node's own data volume, if any.
    pub volume: Option<NodeVolume>,
}

/// The part of a node's spec every node of the Service shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConfig {
    /// Active code version, resolved with its digest.
    pub code: Option<NodeCode>,
    /// Settings.
    pub settings: BTreeMap<String, String>,
    /// Startup script.
    pub startup_script: Option<String>,
    /// Whether nodes get the member list (types whose nodes know each other).
    pub with_members: bool,
    /// Heartbeat timeout of the nodes' agents.
    pub heartbeat_timeout_seconds: i32,
    /// The Service's `spec.generic` section.
    pub generic: Option<GenericSpec>,
    /// A filesystem's volumes and clients.
    pub filesystem: Option<FilesystemNodeSpec>,
    /// How a new code version reaches the nodes.
    pub rollout: RolloutPolicy,
    /// The linked services, as nodes reach them.
    pub links: Vec<NodeLink>,
}

/// How a new code version reaches the nodes of each role.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// Nodes of a role that may be switching versions (or not Ready) at once.
    pub max_unavailable: usize,
    /// A version that fails on a node makes the Service activate the previous one.
    pub rollback: bool,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            rollback: false,
        }
    }
}

/// A ServiceNode as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNode {
    /// What its agent measures for the autoscaler (`status.agent.metrics`).
    pub metrics: std::collections::BTreeMap<String, i64>,
    /// Object name.
    pub name: String,
    /// Its spec.
    pub spec: ServiceNodeSpec,
    /// Being deleted already.
    pub deleting: bool,
    /// Why it is unhealthy (VM failed or gone, heartbeat stale) for long enough: replace it.
    pub unhealthy: Option<&'static str>,
    /// Unhealthy right now, confirmed or not: counts against the share of unhealthy nodes.
    pub suspect: bool,
    /// Ready condition is True (it serves, maybe still on its previous spec).
    pub ready: bool,
    /// Its Ready condition describes its current spec (not one from before the last change).
    pub settled: bool,
    /// VM address, once known.
    pub address: Option<String>,
    /// The code version its agent reports running.
    pub running_code: Option<String>,
    /// The code version its agent reports it failed to switch to.
    pub failed_code: Option<String>,
    /// Its agent's last report says the role is Ready. Written with `running_code` in one
    /// report, so unlike the node's Ready condition (which the node loop derives later) it is
    /// never older than the version it goes with.
    pub agent_ready: bool,
    /// Its agent reports the role failed, with this message, in a report about the node's
    /// current spec (so not a failure left over from the version it had before).
    pub agent_failure: Option<String>,
    /// Why the node failed (its cloud refused, its agent failed), as its Ready condition says.
    pub failure: Option<NodeFailure>,
    /// A router's report of the members its running configuration routes to.
    pub routes_to: Option<Vec<String>>,
    /// Its agent reports the drain it was released for is done.
    pub drained: bool,
    /// mysql: the version of the credentials Secret its agent accepts.
    pub credentials_version: Option<String>,
    /// The SHA-256 of the data its agent saved, draining for a stop.
    pub saved: Option<String>,
}

/// A node's failure as its Ready condition reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFailure {
    /// The Ready reason, e.g. `ProviderQuotaExceeded` or `AgentFailed`.
    pub reason: String,
    /// Its message: the provider's or the agent's own words.
    pub message: String,
    /// Nothing changes until someone changes the spec or the Cloud.
    pub stalled: bool,
}

/// A step the executor performs on ServiceNode objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a ServiceNode (the executor adds the token).
    CreateNode {
        /// Object name.
        name: String,
        /// Spec without a token.
        spec: ServiceNodeSpec,
    },
    /// Delete a ServiceNode (its finalizer terminates the VM).
    DeleteNode {
        /// Object name.
        name: String,
        /// Why, PascalCase.
        reason: &'static str,
    },
    /// Replace a node's spec with this one (same token, role and placement).
    PatchNodeSpec {
        /// Object name.
        name: String,
        /// The full new spec.
        spec: ServiceNodeSpec,
    },
}

/// Plans the node actions that move `nodes` towards `desired`.
pub fn plan(desired: &Desired, nodes: &[ObservedNode]) -> Vec<Action> {
    if desired.paused {
        // Nothing is created, deleted or re-specced, and each node learns it is paused.
        return nodes
            .iter()
            .filter(|n| !n.deleting && !n.spec.paused)
            .map(|n| Action::PatchNodeSpec {
                name: n.name.clone(),
                spec: ServiceNodeSpec {
                    paused: true,
                    ..n.spec.clone()
                },
            })
            .collect();
    }
    // A paused node's VM is never terminated: a node deleted after the resume, or deleted while
    // paused, first learns that the Service runs again, or it would keep its VM forever.
    let mut actions = Vec::new();
    for action in plan_running(desired, nodes) {
        if let Action::DeleteNode { name, .. } = &action {
            actions.extend(
                nodes
                    .iter()
                    .find(|n| &n.name == name && n.spec.paused)
                    .map(unpaused),
            );
        }
        actions.push(action);
    }
    actions.extend(
        nodes
            .iter()
            .filter(|n| n.deleting && n.spec.paused)
            .map(unpaused),
    );
    actions
}

/// The nodes of a Service that cannot be satisfied while its tenant's credits ran out: every
/// one goes (a paused one first learns that it may), so no VM runs unpaid whatever the spec
/// says.
pub fn stop_unpaid(nodes: &[ObservedNode]) -> Vec<Action> {
    let mut actions: Vec<Action> = nodes
        .iter()
        .filter(|n| n.spec.paused)
        .map(unpaused)
        .collect();
    actions.extend(
        nodes
            .iter()
            .filter(|n| !n.deleting)
            .map(|n| Action::DeleteNode {
                name: n.name.clone(),
                reason: "CreditsExhausted",
            }),
    );
    actions
}

/// Tells a paused node that its Service runs again.
fn unpaused(node: &ObservedNode) -> Action {
    Action::PatchNodeSpec {
        name: node.name.clone(),
        spec: ServiceNodeSpec {
            paused: false,
            ..node.spec.clone()
        },
    }
}

/// The node actions of a Service that is not paused.
fn plan_running(desired: &Desired, nodes: &[ObservedNode]) -> Vec<Action> {
    let service = desired.service.as_str();
    let mut actions = Vec::new();
    let all_live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();

    if !desired.running {
        return plan_stop(desired, &all_live);
    }

    let unhealthy = all_live
        .iter()
        .filter(|n| n.suspect || n.unhealthy.is_some())
        .count();
    let remediate = remediation_allowed(all_live.len(), unhealthy, desired.max_unhealthy_percent);
    let (leaving, live): (Vec<&ObservedNode>, Vec<&ObservedNode>) =
        all_live.iter().partition(|n| n.spec.drain.is_some());
    actions.extend(drain_steps(desired, &leaving, &live));
    let mut keep: Vec<&ObservedNode> = Vec::new();
    for node in &live {
        let Some(role) = desired.roles.iter().find(|r| r.name == node.spec.role) else {
            actions.push(leave(desired, node, DrainReason::RoleRemoved));
            continue;
        };
        if let (Some(reason), true) = (node.unhealthy, remediate) {
            actions.push(Action::DeleteNode {
                name: node.name.clone(),
                reason,
            });
        } else if node.spec.cloud != role.cloud
            || node.spec.instance_type != role.instance_type
            || node.spec.volume != role.volume
        {
            actions.push(leave(desired, node, DrainReason::PlacementChanged));
        } else {
            keep.push(node);
        }
    }

    for role in &desired.roles {
        let mut healthy: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .collect();
        let want = role.count.max(0) as usize;
        if healthy.len() > want {
            // Not-ready nodes go first, then the autoscaler's choice, then the newest.
            healthy.sort_by_key(|n| {
                (
                    n.ready,
                    !desired.leaving_first.contains(&n.name),
                    std::cmp::Reverse(ordinal(service, n)),
                )
            });
            for node in healthy.drain(..healthy.len() - want) {
                actions.push(leave(desired, node, DrainReason::ScaledDown));
                keep.retain(|k| k.name != node.name);
            }
        }
    }

    let members: Vec<Member> = if desired.config.with_members {
        let mut m: Vec<Member> = keep
            .iter()
            .filter_map(|n| {
                n.address.as_ref().map(|a| Member {
                    name: n.name.clone(),
                    role: n.spec.role.clone(),
                    address: a.clone(),
                    ready: n.agent_ready || serves_previous_version(n),
                })
            })
            .collect();
        m.sort();
        m
    } else {
        Vec::new()
    };

    // Only routers learn which members are ready: a readiness change (a backend switching code)
    // re-specs the routers alone, not every node of the Service.
    let unrouted: Vec<Member> = members
        .iter()
        .map(|m| Member {
            ready: false,
            ..m.clone()
        })
        .collect();
    let members_of = |role: &str| {
        if desired.drain.routers.contains(&role) {
            members.clone()
        } else {
            unrouted.clone()
        }
    };

    // After a version failed on a node, new nodes start with the version the others still run
    // (the last good one), not the failed one.
    let failed = rollout_failure(desired, &keep).is_some();
    let last_good = keep
        .iter()
        .find(|n| n.spec.code != desired.config.code && n.agent_failure.is_none())
        .map(|n| n.spec.code.clone());
    for role in &desired.roles {
        let have = keep.iter().filter(|n| n.spec.role == role.name).count();
        let want = role.count.max(0) as usize;
        let used: BTreeSet<u32> = nodes
            .iter()
            .filter(|n| n.spec.role == role.name)
            .filter_map(|n| ordinal(service, n))
            .collect();
        let mut free = (0u32..).filter(|i| !used.contains(i));
        for _ in have..want {
            let i = free.next().expect("ordinals are unbounded");
            let mut spec = node_spec(desired, role, String::new(), &members_of(&role.name));
            if let (true, Some(code)) = (failed, &last_good) {
                spec.code = code.clone();
            }
            actions.push(Action::CreateNode {
                name: node_name(service, &role.name, i),
                spec,
            });
        }
    }

    let switching = code_switches(desired, &keep);
    let relinking = link_switches(desired, &keep, &switching);
    for node in &keep {
        let role = desired
            .roles
            .iter()
            .find(|r| r.name == node.spec.role)
            .expect("kept nodes have a role");
        let mut spec = node_spec(
            desired,
            role,
            node.spec.token.clone(),
            &members_of(&role.name),
        );
        if !switching.contains(&node.name.as_str()) {
            // Its turn has not come: everything else changes now, the code later.
            spec.code = node.spec.code.clone();
        }
        if !relinking.contains(&node.name.as_str()) {
            spec.links = node.spec.links.clone();
        }
        if spec != node.spec {
            actions.push(Action::PatchNodeSpec {
                name: node.name.clone(),
                spec,
            });
        }
    }
    actions
}

/// A stop: every node is deleted, once the saver (the first serving node of the type's
/// `saved_on_stop` role) saved the data and the Service's status records it. A saver that fails
/// or goes silent hands over to the next serving node; with none left, nothing is saved.
fn plan_stop(desired: &Desired, live: &[&ObservedNode]) -> Vec<Action> {
    let delete_all = || {
        live.iter()
            .map(|n| Action::DeleteNode {
                name: n.name.clone(),
                reason: DrainReason::ServiceStopped.as_str(),
            })
            .collect()
    };
    let Some(role) = desired.saved_on_stop else {
        return delete_all();
    };
    let usable = |n: &&&ObservedNode| {
        n.spec.role == role && !n.suspect && n.unhealthy.is_none() && n.agent_failure.is_none()
    };
    let saving = |n: &ObservedNode| {
        n.spec
            .drain
            .as_ref()
            .is_some_and(|d| d.reason == DrainReason::ServiceStopped)
    };
    let mut candidates: Vec<&&ObservedNode> = live.iter().filter(usable).collect();
    candidates.sort_by_key(|n| (!saving(n), !n.agent_ready, ordinal(&desired.service, n)));
    let Some(saver) = candidates.first().filter(|n| saving(n) || n.agent_ready) else {
        return delete_all();
    };
    if saver.saved.is_some() && saver.saved == desired.restore.as_ref().map(|r| r.sha256.clone()) {
        return delete_all();
    }
    if saving(saver) {
        // Saving, or saved and waiting for the status to record it.
        return Vec::new();
    }
    vec![Action::PatchNodeSpec {
        name: saver.name.clone(),
        spec: ServiceNodeSpec {
            drain: Some(NodeDrain {
                reason: DrainReason::ServiceStopped,
                released: true,
                seconds: desired.drain.seconds,
            }),
            ..saver.spec.clone()
        },
    }]
}

/// How `node` leaves for `reason`: a node that serves starts its drain when its type drains;
/// any other is deleted at once.
fn leave(desired: &Desired, node: &ObservedNode, reason: DrainReason) -> Action {
    let serving = node.agent_ready && !node.suspect && node.unhealthy.is_none();
    if !(serving && desired.drain.drains()) {
        return Action::DeleteNode {
            name: node.name.clone(),
            reason: reason.as_str(),
        };
    }
    Action::PatchNodeSpec {
        name: node.name.clone(),
        spec: ServiceNodeSpec {
            drain: Some(NodeDrain {
                reason,
                released: false,
                seconds: desired.drain.seconds,
            }),
            ..node.spec.clone()
        },
    }
}

/// The next step of each leaving node: released once every ready router stopped routing to it,
/// deleted once its agent reports the drain done, or at once when it stopped serving anyway
/// (it failed, or its agent went silent).
fn drain_steps(
    desired: &Desired,
    leaving: &[&ObservedNode],
    staying: &[&ObservedNode],
) -> Vec<Action> {
    let routers: Vec<&ObservedNode> = staying
        .iter()
        .copied()
        .filter(|n| desired.drain.routers.contains(&n.spec.role.as_str()))
        .filter(|n| n.agent_ready && !n.suspect)
        .collect();
    let mut actions = Vec::new();
    for node in leaving {
        let drain = node.spec.drain.as_ref().expect("leaving nodes drain");
        let reason = drain.reason.as_str();
        // Confirmed unhealthy, not a blip: until released, routers may still send it requests.
        // A node still serving its previous code version is drained like a healthy one.
        let gone = node.unhealthy.is_some()
            || (node.agent_failure.is_some() && !serves_previous_version(node));
        if node.drained || gone {
            actions.push(Action::DeleteNode {
                name: node.name.clone(),
                reason,
            });
            continue;
        }
        // A leaving router (a storage node holding bricks) is released by its peers' word
        // alone: with no peer ready to say its data moved, it stays.
        let leaving_router = desired.drain.routers.contains(&node.spec.role.as_str());
        let unrouted = !(leaving_router && routers.is_empty())
            && routers.iter().all(|r| {
                r.routes_to
                    .as_ref()
                    .is_some_and(|to| !to.contains(&node.name))
            });
        if !drain.released && unrouted {
            let mut spec = node.spec.clone();
            spec.drain = Some(NodeDrain {
                released: true,
                ..drain.clone()
            });
            actions.push(Action::PatchNodeSpec {
                name: node.name.clone(),
                spec,
            });
        }
    }
    actions
}

/// A node whose switch to a new code version failed while it reports an older one running (php
/// and java keep serving it): routers keep sending it requests, rather than losing a tier to a
/// version that would not install.
fn serves_previous_version(node: &ObservedNode) -> bool {
    // A daemon that died is another failure, and that node serves nothing.
    node.agent_failure.is_some()
        && node.failed_code.is_some()
        && node.running_code.is_some()
        && node.running_code.as_deref() != node.spec.code.as_ref().map(|c| c.version.as_str())
}

/// The kept nodes that get the active code version now. Per role, at most
/// `rollout.maxUnavailable` nodes are switching or not Ready at once: a node counts as switching
/// until its agent reports the version running and the node is Ready. Nodes that run no code
/// yet, and nodes that are not Ready anyway, switch at once; the others go highest ordinal first
/// (the lowest, which serves the Service's address, last). A version that failed on a node
/// ([`rollout_failure`]) goes to no further node.
pub fn code_switches<'a>(desired: &Desired, keep: &[&'a ObservedNode]) -> Vec<&'a str> {
    let target = &desired.config.code;
    let stale = |n: &&&ObservedNode| n.spec.code != *target;
    let Some(version) = target.as_ref().map(|c| c.version.as_str()) else {
        // No active version: every node drops its code at once.
        return keep.iter().filter(stale).map(|n| n.name.as_str()).collect();
    };
    if rollout_failure(desired, keep).is_some() {
        return Vec::new();
    }
    let mut switching = Vec::new();
    for role in &desired.roles {
        let of_role: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .collect();
        let unavailable = of_role
            .iter()
            .filter(|n| {
                !n.ready
                    || (!stale(n) && (n.running_code.as_deref() != Some(version) || !n.agent_ready))
            })
            .count();
        let mut budget = desired
            .config
            .rollout
            .max_unavailable
            .saturating_sub(unavailable);
        let mut waiting: Vec<&ObservedNode> =
            of_role.iter().copied().filter(|n| stale(&n)).collect();
        waiting.sort_by_key(|n| {
            (
                n.spec.code.is_some() && n.ready,
                std::cmp::Reverse(ordinal(&desired.service, n)),
            )
        });
        for node in waiting {
            let free = node.spec.code.is_none() || !node.ready;
            if free || budget > 0 {
                budget -= usize::from(!free);
                switching.push(node.name.as_str());
            }
        }
    }
    switching
}

/// The kept nodes that take the Service's new links (a linked endpoint or password) now: all at
/// once, but in roles whose daemons restart for it (java backends) one serving node at a time
/// (`rollout.maxUnavailable`), the next once the others serve again, so the routers always have
/// the rest. A node that serves nothing yet loses nothing by restarting.
pub fn link_switches<'a>(
    desired: &Desired,
    keep: &[&'a ObservedNode],
    code_switching: &[&str],
) -> Vec<&'a str> {
    let restarting = desired.service_type.descriptor().restart_on_link_change;
    let stale = |n: &ObservedNode| n.spec.links != desired.config.links;
    let mut switching = Vec::new();
    for role in &desired.roles {
        let of_role: Vec<&ObservedNode> = keep
            .iter()
            .copied()
            .filter(|n| n.spec.role == role.name)
            .collect();
        let mut waiting: Vec<&ObservedNode> =
            of_role.iter().copied().filter(|n| stale(n)).collect();
        if !restarting.contains(&role.name.as_str()) {
            switching.extend(waiting.iter().map(|n| n.name.as_str()));
            continue;
        }
        // A node switching code now is as unavailable: the two rollouts share one budget.
        let unavailable = of_role
            .iter()
            .filter(|n| !n.settled || !n.agent_ready || code_switching.contains(&n.name.as_str()))
            .count();
        let mut budget = desired
            .config
            .rollout
            .max_unavailable
            .saturating_sub(unavailable);
        waiting.sort_by_key(|n| std::cmp::Reverse(ordinal(&desired.service, n)));
        for node in waiting {
            if !node.agent_ready {
                switching.push(node.name.as_str());
            } else if budget > 0 {
                budget -= 1;
                switching.push(node.name.as_str());
            }
        }
    }
    switching
}

/// The version to activate by itself because the active one failed on a node and the Service
/// asks to roll back (`rollout.onFailure: Rollback`): the version active before, while it is
/// still one of the Service's versions.
pub fn rollback_to<'a>(
    desired: &Desired,
    nodes: &[ObservedNode],
    previous: Option<&'a str>,
    versions: &[&str],
) -> Option<&'a str> {
    let live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();
    let active = desired.config.code.as_ref()?;
    let previous = previous.filter(|p| *p != active.version && versions.contains(p))?;
    (desired.config.rollout.rollback && rollout_failure(desired, &live).is_some())
        .then_some(previous)
}

/// The first node on which the active version failed: it was given the version and its agent
/// reports the role failed (the archive could not be installed, or the role's health check,
/// generic's `init.sh`, failed). Its name and the agent's message.
pub fn rollout_failure<'a>(
    desired: &Desired,
    nodes: &[&'a ObservedNode],
) -> Option<(&'a str, &'a str)> {
    let target = desired.config.code.as_ref()?;
    nodes.iter().find_map(|n| {
        let failure = n.agent_failure.as_deref()?;
        (n.spec.code.as_ref() == Some(target)).then_some((n.name.as_str(), failure))
    })
}

/// Whether unhealthy nodes may be replaced: when at most `percent` of the live nodes are
/// unhealthy, and always when only one is (so a one-node service heals).
pub fn remediation_allowed(live: usize, unhealthy: usize, percent: i32) -> bool {
    unhealthy <= 1 || unhealthy * 100 <= live * percent.max(0) as usize
}

/// `<service>-<role>-<ordinal>`.
pub fn node_name(service: &str, role: &str, ordinal: u32) -> String {
    format!("{service}-{role}-{ordinal}")
}

pub(crate) fn ordinal(service: &str, node: &ObservedNode) -> Option<u32> {
    node.name
        .strip_prefix(&format!("{service}-{}-", node.spec.role))?
        .parse()
        .ok()
}

fn node_spec(
    desired: &Desired,
    role: &DesiredRole,
    token: String,
    members: &[Member],
) -> ServiceNodeSpec {
    ServiceNodeSpec {
        application: desired.application.clone(),
        service: desired.service.clone(),
        service_type: desired.service_type,
        role: role.name.clone(),
        cloud: role.cloud.clone(),
        instance_type: role.instance_type.clone(),
        volume: role.volume.clone(),
        token,
        code: desired.config.code.clone(),
        settings: desired.config.settings.clone(),
        startup_script: desired.config.startup_script.clone(),
        heartbeat_timeout_seconds: desired.config.heartbeat_timeout_seconds,
        paused: false,
        members: members.to_vec(),
        generic: desired.config.generic.clone(),
        filesystem: desired.config.filesystem.clone(),
        links: desired.config.links.clone(),
        drain: None,
        restore: desired
            .restore
            .clone()
            .filter(|_| desired.saved_on_stop == Some(role.name.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(ty: ServiceType, running: bool, roles: &[(&str, i32)]) -> Desired {
        Desired {
            service: "svc".into(),
            application: "app".into(),
            service_type: ty,
            running,
            held: None,
            leaving_first: vec![],
            roles: roles
                .iter()
                .map(|(name, count)| DesiredRole {
                    name: name.to_string(),
                    count: *count,
                    cloud: "local".into(),
                    instance_type: None,
                    volume: None,
                })
                .collect(),
            config: NodeConfig {
                with_members: ty.descriptor().members,
                ..Default::default()
            },
            max_unhealthy_percent: 40,
            paused: false,
            drain: DrainPolicy {
                seconds: ty.descriptor().drain_seconds,
                routers: ty.descriptor().routers,
            },
            saved_on_stop: ty.descriptor().saved_on_stop,
            restore: None,
        }
    }

    /// A node as the planner would have created it, already converged.
    fn node(d: &Desired, role: &str, ordinal: u32) -> ObservedNode {
        let r = d
            .roles
            .iter()
            .find(|r| r.name == role)
            .cloned()
            .unwrap_or(DesiredRole {
                name: role.into(),
                count: 0,
                cloud: "local".into(),
                instance_type: None,
                volume: None,
            });
        crate::fixtures::serving_node(
            &node_name("svc", role, ordinal),
            node_spec(d, &r, format!("token-{role}-{ordinal}"), &[]),
        )
    }

    fn created(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateNode { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(actions: &[Action]) -> Vec<(String, &'static str)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteNode { name, reason } => Some((name.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    /// `n` ready nodes of role `node` running version `old`, and a Service that activated `new`.
    fn rolling(n: u32, max_unavailable: usize) -> (Desired, Vec<ObservedNode>) {
        let code = |version: &str| NodeCode {
            version: version.into(),
            ..Default::default()
        };
        let mut d = desired(ServiceType::Helloworld, true, &[("node", n as i32)]);
        d.config.code = Some(code("old"));
        let nodes: Vec<ObservedNode> = (0..n)
            .map(|i| ObservedNode {
                running_code: Some("old".into()),
                ..node(&d, "node", i)
            })
            .collect();
        d.config.code = Some(code("new"));
        d.config.rollout.max_unavailable = max_unavailable;
        (d, nodes)
    }

    /// The nodes given the active version, by name.
    fn switched(d: &Desired, nodes: &[ObservedNode]) -> Vec<String> {
        let mut names: Vec<String> = plan(d, nodes)
            .into_iter()
            .filter_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if spec.code == d.config.code => Some(name),
                _ => None,
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_service_without_credits_loses_every_node_even_paused_or_unsatisfiable() {
        let d = desired(ServiceType::Helloworld, true, &[("node", 2)]);
        let mut nodes: Vec<ObservedNode> = (0..3).map(|i| node(&d, "node", i)).collect();
        nodes[0].spec.paused = true;
        nodes[2].deleting = true;
        let actions = stop_unpaid(&nodes);
        let deleted: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteNode { name, reason } => {
                    assert_eq!(*reason, "CreditsExhausted");
                    Some(name.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec!["svc-node-0", "svc-node-1"]);
        assert!(
            matches!(&actions[0], Action::PatchNodeSpec { name, spec } if name == "svc-node-0" && !spec.paused),
            "a paused node learns first that it may go: {actions:?}"
        );
    }

    #[test]
    fn a_new_version_rolls_out_max_unavailable_nodes_at_a_time_highest_ordinal_first() {
        let (d, mut nodes) = rolling(4, 1);
        assert_eq!(switched(&d, &nodes), vec!["svc-node-3"]);
        // Given the version but not running it yet: nobody else switches.
        nodes[3].spec.code = d.config.code.clone();
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        // Running it while its Ready condition is from before the switch: still switching.
        nodes[3].running_code = Some("new".into());
        nodes[3].agent_ready = false;
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        // Running it and Ready: the next one.
        nodes[3].agent_ready = true;
        assert_eq!(switched(&d, &nodes), vec!["svc-node-2"]);
        // A node not Ready for another reason uses up the budget...
        nodes[0].ready = false;
        // ...but switches itself, as it serves nothing anyway.
        assert_eq!(switched(&d, &nodes), vec!["svc-node-0"]);
        let (d, nodes) = rolling(4, 2);
        assert_eq!(switched(&d, &nodes), vec!["svc-node-2", "svc-node-3"]);
    }

    #[test]
    fn nodes_without_code_get_the_first_version_at_once() {
        let (mut d, mut nodes) = rolling(3, 1);
        for n in &mut nodes {
            n.spec.code = None;
            n.running_code = None;
        }
        assert_eq!(switched(&d, &nodes).len(), 3);
        // Deactivating drops the code everywhere at once too.
        let (_, nodes) = rolling(3, 1);
        d.config.code = None;
        assert_eq!(switched(&d, &nodes).len(), 3);
    }

    #[test]
    fn a_version_that_fails_on_a_node_goes_no_further_and_rolls_back_when_asked() {
        let (mut d, mut nodes) = rolling(3, 1);
        nodes[2].spec.code = d.config.code.clone();
        nodes[2].ready = false;
        nodes[2].agent_failure = Some("init.sh exited with 3".into());
        assert_eq!(switched(&d, &nodes), Vec::<String>::new());
        let live: Vec<&ObservedNode> = nodes.iter().collect();
        assert_eq!(
            rollout_failure(&d, &live),
            Some(("svc-node-2", "init.sh exited with 3"))
        );
        // A node added meanwhile starts with the version the others still run.
        let mut more = d.clone();
        more.roles[0].count = 4;
        let created: Vec<Option<NodeCode>> = plan(&more, &nodes)
            .into_iter()
            .filter_map(|a| match a {
                Action::CreateNode { spec, .. } => Some(spec.code),
                _ => None,
            })
            .collect();
        assert_eq!(created, vec![nodes[0].spec.code.clone()]);
        let versions = ["old", "new"];
        assert_eq!(
            rollback_to(&d, &nodes, Some("old"), &versions),
            None,
            "Stop"
        );
        d.config.rollout.rollback = true;
        assert_eq!(rollback_to(&d, &nodes, Some("old"), &versions), Some("old"));
        assert_eq!(rollback_to(&d, &nodes, Some("gone"), &versions), None);
        assert_eq!(rollback_to(&d, &nodes, None, &versions), None);
    }

    /// What `plan` does to each node: `drain`, `release`, `delete:<reason>`, `spec` (re-specced).
    fn steps(d: &Desired, nodes: &[ObservedNode]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = plan(d, nodes)
            .into_iter()
            .map(|a| match a {
                Action::DeleteNode { name, reason } => (name, format!("delete:{reason}")),
                Action::CreateNode { name, .. } => (name, "create".into()),
                Action::PatchNodeSpec { name, spec } => {
                    let what = match spec.drain {
                        Some(NodeDrain { released: true, .. }) => "release",
                        Some(_) => "drain",
                        None => "spec",
                    };
                    (name, what.into())
                }
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_link_change_restarts_java_backends_one_at_a_time_and_php_backends_at_once() {
        let link = |version: &str| NodeLink {
            prefix: "DB".into(),
            service: "db".into(),
            secret_version: Some(version.into()),
            ..Default::default()
        };
        let relinked = |ty: ServiceType, settle: &dyn Fn(&mut ObservedNode)| {
            let mut d = desired(ty, true, &[("proxy", 1), ("backend", 3)]);
            d.config.links = vec![link("1")];
            let mut nodes: Vec<ObservedNode> = (0..3).map(|i| node(&d, "backend", i)).collect();
            nodes.push(node(&d, "proxy", 0));
            d.config.links = vec![link("2")];
            nodes.iter_mut().for_each(settle);
            let mut names: Vec<String> = plan(&d, &nodes)
                .into_iter()
                .filter_map(|a| match a {
                    Action::PatchNodeSpec { name, spec } if spec.links == d.config.links => {
                        Some(name)
                    }
                    _ => None,
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            relinked(ServiceType::Java, &|_| {}),
            ["svc-backend-2", "svc-proxy-0"],
            "one java backend (the highest ordinal), and the proxy at once"
        );
        assert_eq!(
            relinked(ServiceType::Java, &|n| n.settled =
                n.name != "svc-backend-1"),
            ["svc-proxy-0"],
            "none while a backend restarts"
        );
        assert_eq!(
            relinked(ServiceType::Php, &|_| {}),
            [
                "svc-backend-0",
                "svc-backend-1",
                "svc-backend-2",
                "svc-proxy-0"
            ]
        );
    }

    #[test]
    fn a_stopping_mysql_service_saves_its_data_before_any_node_goes() {
        let mut d = desired(ServiceType::Mysql, false, &[("mysql", 2), ("glb", 1)]);
        let mut nodes = vec![
            node(&d, "mysql", 0),
            node(&d, "mysql", 1),
            node(&d, "glb", 0),
        ];
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // The first mysql node is told to save (a released drain for the stop); no node goes.
        assert_eq!(steps(&d, &nodes), vec![pair("svc-mysql-0", "release")]);
        let stopping = Some(NodeDrain {
            reason: DrainReason::ServiceStopped,
            released: true,
            seconds: 1,
        });
        nodes[0].spec.drain = stopping.clone();
        nodes[0].agent_ready = false;
        assert_eq!(steps(&d, &nodes), vec![], "saving");
        nodes[0].saved = Some("abc".into());
        assert_eq!(steps(&d, &nodes), vec![], "saved, not yet in the status");
        d.restore = Some(NodeCode {
            version: "saved-data".into(),
            config_map: None,
            url: None,
            artifact: true,
            sha256: "abc".into(),
        });
        assert_eq!(
            steps(&d, &nodes),
            ["svc-glb-0", "svc-mysql-0", "svc-mysql-1"]
                .map(|n| pair(n, "delete:ServiceStopped"))
                .to_vec(),
            "recorded: every node goes"
        );
        // A saver that failed hands over to the next serving node.
        nodes[0].saved = None;
        nodes[0].agent_failure = Some("dump the database: refused".into());
        assert_eq!(steps(&d, &nodes), vec![pair("svc-mysql-1", "release")]);
        // With no node left to save, the stop goes on without it.
        nodes[1].agent_ready = false;
        nodes[1].suspect = true;
        assert_eq!(steps(&d, &nodes).len(), 3);
    }

    #[test]
    fn a_backend_that_failed_to_switch_code_stays_routed_on_the_version_it_runs() {
        let d = desired(ServiceType::Php, true, &[("proxy", 1), ("backend", 1)]);
        let mut nodes: Vec<ObservedNode> = [node(&d, "proxy", 0), node(&d, "backend", 0)]
            .into_iter()
            .enumerate()
            .map(|(i, mut n)| {
                n.address = Some(format!("10.0.0.{i}"));
                n.spec.code = Some(NodeCode {
                    version: "v2".into(),
                    ..Default::default()
                });
                n
            })
            .collect();
        let backend_ready = |nodes: &[ObservedNode]| {
            plan(&d, nodes).into_iter().find_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if name == "svc-proxy-0" => spec
                    .members
                    .iter()
                    .find(|m| m.role == "backend")
                    .map(|m| m.ready),
                _ => None,
            })
        };
        nodes[1].agent_ready = false;
        nodes[1].agent_failure = Some("code version v2: sha256 differs".into());
        nodes[1].failed_code = Some("v2".into());
        nodes[1].running_code = Some("v1".into());
        assert_eq!(backend_ready(&nodes), Some(true), "v1 still serves");
        nodes[1].agent_failure = Some("php-fpm is not running".into());
        nodes[1].failed_code = None;
        assert_eq!(
            backend_ready(&nodes),
            Some(false),
            "a dead daemon serves nothing"
        );
        nodes[1].agent_failure = Some("code version v2: sha256 differs".into());
        nodes[1].failed_code = Some("v2".into());
        nodes[1].running_code = Some("v2".into());
        assert_eq!(backend_ready(&nodes), Some(false), "failed on what it runs");
    }

    #[test]
    fn a_leaving_storage_node_is_released_only_on_a_ready_peers_word() {
        let d = desired(ServiceType::Filesystem, true, &[("storage", 1)]);
        let mut nodes = vec![node(&d, "storage", 0), node(&d, "storage", 1)];
        nodes[1].spec.drain = Some(NodeDrain {
            reason: DrainReason::ScaledDown,
            released: false,
            seconds: 1,
        });
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // The peer still holds its bricks, or cannot tell: it stays.
        nodes[0].routes_to = Some(vec!["svc-storage-0".into(), "svc-storage-1".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].routes_to = None;
        assert_eq!(steps(&d, &nodes), vec![]);
        // No peer ready to say its data moved: it stays (no router is no word).
        nodes[0].agent_ready = false;
        nodes[0].routes_to = Some(vec!["svc-storage-0".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].agent_ready = true;
        assert_eq!(steps(&d, &nodes), vec![pair("svc-storage-1", "release")]);
    }

    #[test]
    fn a_leaving_node_is_drained_released_by_every_router_then_deleted() {
        let d = desired(ServiceType::Php, true, &[("proxy", 1), ("backend", 1)]);
        let with_address = |mut n: ObservedNode, a: &str| {
            n.address = Some(a.into());
            n
        };
        let mut nodes = vec![
            with_address(node(&d, "proxy", 0), "10.0.0.1"),
            with_address(node(&d, "backend", 0), "10.0.0.2"),
            with_address(node(&d, "backend", 1), "10.0.0.3"),
        ];
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        // Scaled down: the surplus backend drains and leaves every member list.
        let got = steps(&d, &nodes);
        assert!(got.contains(&pair("svc-backend-1", "drain")), "{got:?}");
        let members: Vec<String> = plan(&d, &nodes)
            .into_iter()
            .find_map(|a| match a {
                Action::PatchNodeSpec { name, spec } if name == "svc-proxy-0" => {
                    Some(spec.members.into_iter().map(|m| m.name).collect())
                }
                _ => None,
            })
            .expect("the proxy learns the members");
        assert_eq!(members, vec!["svc-backend-0", "svc-proxy-0"]);
        let drain = |released: bool| NodeDrain {
            reason: DrainReason::ScaledDown,
            released,
            seconds: 10,
        };
        nodes[2].spec.drain = Some(drain(false));
        // The others take the member lists they are given.
        for action in plan(&d, &nodes) {
            if let Action::PatchNodeSpec { name, spec } = action
                && spec.drain.is_none()
                && let Some(n) = nodes.iter_mut().find(|n| n.name == name)
            {
                n.spec = spec;
            }
        }
        // Only the router learns which members are ready.
        assert!(nodes[0].spec.members.iter().all(|m| m.ready));
        assert!(nodes[1].spec.members.iter().all(|m| !m.ready));
        // The proxy still routes to it, or has not said: it waits.
        nodes[0].routes_to = None;
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[0].routes_to = Some(vec!["svc-backend-0".into(), "svc-backend-1".into()]);
        assert_eq!(steps(&d, &nodes), vec![]);
        // The proxy routes to it no more: released.
        nodes[0].routes_to = Some(vec!["svc-backend-0".into()]);
        assert_eq!(steps(&d, &nodes), vec![pair("svc-backend-1", "release")]);
        // A router that is itself unhealthy is not waited for.
        let mut silent = nodes.clone();
        silent[0].routes_to = None;
        silent[0].suspect = true;
        assert_eq!(steps(&d, &silent), vec![pair("svc-backend-1", "release")]);
        // Its agent says the drain is done: deleted, with the reason it left for.
        nodes[2].spec.drain = Some(drain(true));
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[2].drained = true;
        assert_eq!(
            steps(&d, &nodes),
            vec![pair("svc-backend-1", "delete:ScaledDown")]
        );
        // A leaving node that stops serving on its own is deleted at once; a blip is waited out.
        nodes[2].drained = false;
        nodes[2].suspect = true;
        assert_eq!(steps(&d, &nodes), vec![]);
        nodes[2].unhealthy = Some("HeartbeatStale");
        assert_eq!(
            steps(&d, &nodes),
            vec![pair("svc-backend-1", "delete:ScaledDown")]
        );
        // A surplus node that serves nothing is not drained; nor one of a type that does not drain.
        let mut idle = nodes[..2].to_vec();
        idle.push(with_address(node(&d, "backend", 1), "10.0.0.3"));
        idle[2].agent_ready = false;
        assert!(steps(&d, &idle).contains(&pair("svc-backend-1", "delete:ScaledDown")));
        let hw = desired(ServiceType::Helloworld, true, &[("node", 1)]);
        let two: Vec<ObservedNode> = (0..2).map(|i| node(&hw, "node", i)).collect();
        assert_eq!(
            steps(&hw, &two),
            vec![pair("svc-node-1", "delete:ScaledDown")]
        );
    }

    #[test]
    fn table() {
        use ServiceType::{Generic, Helloworld};
        struct Case {
            name: &'static str,
            desired: Desired,
            nodes: Vec<ObservedNode>,
            create: Vec<&'static str>,
            delete: Vec<(&'static str, &'static str)>,
        }
        let hw3 = desired(Helloworld, true, &[("node", 3)]);
        let hw5 = desired(Helloworld, true, &[("node", 5)]);
        let hw2 = desired(Helloworld, true, &[("node", 2)]);
        let hw_stopped = desired(Helloworld, false, &[("node", 3)]);
        let generic = desired(Generic, true, &[("master", 1), ("node", 2)]);
        let generic0 = desired(Generic, true, &[("master", 1), ("node", 0)]);

        let cases = vec![
            Case {
                name: "scale up from nothing",
                desired: hw3.clone(),
                nodes: vec![],
                create: vec!["svc-node-0", "svc-node-1", "svc-node-2"],
                delete: vec![],
            },
            Case {
                name: "converged does nothing",
                desired: hw3.clone(),
                nodes: (0..3).map(|i| node(&hw3, "node", i)).collect(),
                create: vec![],
                delete: vec![],
            },
            Case {
                name: "scale up fills the lowest free ordinals",
                desired: hw5.clone(),
                nodes: vec![
                    node(&hw5, "node", 0),
                    node(&hw5, "node", 2),
                    node(&hw5, "node", 3),
                ],
                create: vec!["svc-node-1", "svc-node-4"],
                delete: vec![],
            },
            Case {
                name: "scale down removes the newest",
                desired: hw2.clone(),
                nodes: (0..5).map(|i| node(&hw2, "node", i)).collect(),
                create: vec![],
                delete: vec![
                    ("svc-node-4", "ScaledDown"),
                    ("svc-node-3", "ScaledDown"),
                    ("svc-node-2", "ScaledDown"),
                ],
            },
            Case {
                name: "scale down removes not-ready nodes first",
                desired: hw2.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw2, "node", i)).collect();
                    n[0].ready = false;
                    n
                },
                create: vec![],
                delete: vec![("svc-node-0", "ScaledDown")],
            },
            Case {
                name: "stop deletes every node",
                desired: hw_stopped.clone(),
                nodes: (0..3).map(|i| node(&hw_stopped, "node", i)).collect(),
                create: vec![],
                delete: vec![
                    ("svc-node-0", "ServiceStopped"),
                    ("svc-node-1", "ServiceStopped"),
                    ("svc-node-2", "ServiceStopped"),
                ],
            },
            Case {
                name: "start while the stop's nodes are still going: new names, no collision",
                desired: hw3.clone(),
                nodes: (0..3)
                    .map(|i| ObservedNode {
                        deleting: true,
                        ..node(&hw3, "node", i)
                    })
                    .collect(),
                create: vec!["svc-node-3", "svc-node-4", "svc-node-5"],
                delete: vec![],
            },
            Case {
                name: "a failed VM is replaced under a new ordinal",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[1].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![("svc-node-1", "VmFailed")],
            },
            Case {
                name: "a node being deleted keeps its ordinal reserved",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[0].deleting = true;
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![],
            },
            Case {
                name: "a failed master is replaced in place",
                desired: generic.clone(),
                nodes: {
                    let mut n = vec![
                        node(&generic, "master", 0),
                        node(&generic, "node", 0),
                        node(&generic, "node", 1),
                    ];
                    n[0].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-master-1"],
                delete: vec![("svc-master-0", "VmFailed")],
            },
            Case {
                name: "scaling nodes to zero never removes the master",
                desired: generic0.clone(),
                nodes: vec![
                    node(&generic0, "master", 0),
                    node(&generic0, "node", 0),
                    node(&generic0, "node", 1),
                ],
                create: vec![],
                delete: vec![("svc-node-1", "ScaledDown"), ("svc-node-0", "ScaledDown")],
            },
            Case {
                name: "a stale heartbeat replaces the node",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[2].unhealthy = Some("HeartbeatStale");
                    n
                },
                create: vec!["svc-node-3"],
                delete: vec![("svc-node-2", "HeartbeatStale")],
            },
            Case {
                name: "an outage (most nodes unhealthy) replaces nothing",
                desired: hw3.clone(),
                nodes: {
                    let mut n: Vec<_> = (0..3).map(|i| node(&hw3, "node", i)).collect();
                    n[0].unhealthy = Some("HeartbeatStale");
                    n[1].unhealthy = Some("HeartbeatStale");
                    n
                },
                create: vec![],
                delete: vec![],
            },
            Case {
                name: "a one-node service still heals",
                desired: desired(Helloworld, true, &[("node", 1)]),
                nodes: {
                    let mut n = vec![node(&hw3, "node", 0)];
                    n[0].unhealthy = Some("VmFailed");
                    n
                },
                create: vec!["svc-node-1"],
                delete: vec![("svc-node-0", "VmFailed")],
            },
            Case {
                name: "a changed placement replaces the node",
                desired: {
                    let mut d = hw3.clone();
                    d.roles[0].cloud = "other".into();
                    d
                },
                nodes: vec![node(&hw3, "node", 0)],
                create: vec!["svc-node-1", "svc-node-2", "svc-node-3"],
                delete: vec![("svc-node-0", "PlacementChanged")],
            },
        ];
        for case in cases {
            let actions = plan(&case.desired, &case.nodes);
            assert_eq!(created(&actions), case.create, "{}: creates", case.name);
            let want: Vec<(String, &str)> = case
                .delete
                .iter()
                .map(|(n, r)| (n.to_string(), *r))
                .collect();
            assert_eq!(deleted(&actions), want, "{}: deletes", case.name);
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::PatchNodeSpec { .. })),
                "{}: no spec patches",
                case.name
            );
        }
    }

    #[test]
    fn changed_settings_repatch_every_node_with_its_own_token() {
        let mut d = desired(ServiceType::Helloworld, true, &[("node", 2)]);
        let nodes: Vec<_> = (0..2).map(|i| node(&d, "node", i)).collect();
        d.config.settings.insert("greeting".into(), "Hi".into());
        let actions = plan(&d, &nodes);
        assert_eq!(actions.len(), 2);
        for (action, node) in actions.iter().zip(&nodes) {
            let Action::PatchNodeSpec { name, spec } = action else {
                panic!("expected a patch, got {action:?}")
            };
            assert_eq!(name, &node.name);
            assert_eq!(spec.token, node.spec.token, "the token never changes");
            assert_eq!(
                spec.settings.get("greeting").map(String::as_str),
                Some("Hi")
            );
        }
    }

    #[test]
    fn generic_nodes_learn_the_members_with_addresses() {
        let d = desired(ServiceType::Generic, true, &[("master", 1), ("node", 1)]);
        let mut nodes = vec![node(&d, "master", 0), node(&d, "node", 0)];
        nodes[0].address = Some("127.0.1.1".into());
        nodes[1].address = Some("127.0.1.2".into());
        let actions = plan(&d, &nodes);
        assert_eq!(
            actions.len(),
            2,
            "both nodes get the new member list: {actions:?}"
        );
        let Action::PatchNodeSpec { spec, .. } = &actions[0] else {
            panic!()
        };
        let roles: Vec<(&str, &str)> = spec
            .members
            .iter()
            .map(|m| (m.role.as_str(), m.address.as_str()))
            .collect();
        assert_eq!(roles, vec![("master", "127.0.1.1"), ("node", "127.0.1.2")]);
    }

    #[test]
    fn remediation_is_bounded_by_the_share_of_unhealthy_nodes() {
        assert!(remediation_allowed(1, 1, 40), "one node always heals");
        assert!(remediation_allowed(10, 4, 40));
        assert!(!remediation_allowed(10, 5, 40));
        assert!(!remediation_allowed(3, 2, 40));
        assert!(remediation_allowed(3, 0, 0));
        assert!(remediation_allowed(3, 3, 100), "100% replaces every node");
    }

    #[test]
    fn a_paused_service_only_tells_its_nodes_it_is_paused() {
        let mut d = desired(ServiceType::Helloworld, true, &[("node", 5)]);
        d.paused = true;
        let mut nodes: Vec<_> = (0..3).map(|i| node(&d, "node", i)).collect();
        nodes[0].unhealthy = Some("VmFailed");
        let actions = plan(&d, &nodes);
        assert_eq!(actions.len(), 3, "no create, no replacement: {actions:?}");
        for action in &actions {
            let Action::PatchNodeSpec { spec, .. } = action else {
                panic!("{action:?}")
            };
            assert!(spec.paused);
        }
        let paused: Vec<_> = nodes
            .into_iter()
            .map(|mut n| {
                n.spec.paused = true;
                n
            })
            .collect();
        assert!(plan(&d, &paused).is_empty(), "paused nodes are left alone");
    }

    #[test]
    fn a_resumed_service_unpauses_a_node_before_deleting_it() {
        let d = desired(ServiceType::Helloworld, true, &[("node", 1)]);
        let mut dead = node(&d, "node", 1);
        dead.spec.paused = true;
        dead.unhealthy = Some("HeartbeatStale");
        let mut going = node(&d, "node", 2);
        going.spec.paused = true;
        going.deleting = true;
        let actions = plan(&d, &[node(&d, "node", 0), dead, going]);
        let steps: Vec<(&str, &str, bool)> = actions
            .iter()
            .map(|a| match a {
                Action::PatchNodeSpec { name, spec } => ("patch", name.as_str(), spec.paused),
                Action::DeleteNode { name, .. } => ("delete", name.as_str(), false),
                Action::CreateNode { name, .. } => ("create", name.as_str(), false),
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                ("patch", "svc-node-1", false),
                ("delete", "svc-node-1", false),
                ("patch", "svc-node-2", false),
            ]
        );
    }

    #[test]
    fn a_stale_read_plans_the_same_names_again() {
        // A reconcile that acted, then one that read the nodes before the first one's creates
        // showed up: it plans names the first one already created (which the API refuses as
        // existing), never new ones that would be a second VM for the same slot.
        let d = desired(ServiceType::Helloworld, true, &[("node", 3)]);
        let first = created(&plan(&d, &[node(&d, "node", 0)]));
        assert_eq!(first, vec!["svc-node-1", "svc-node-2"]);
        let stale = created(&plan(&d, &[node(&d, "node", 0), node(&d, "node", 2)]));
        assert_eq!(stale, vec!["svc-node-1"]);
        assert!(stale.iter().all(|n| first.contains(n)));
    }
}
