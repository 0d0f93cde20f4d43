//! The Service's status: phase, per-role counts, conditions, history. Built by a pure function
//! from what was observed, and written by server-side apply only when it changed.

use conpaas_crds::labels::conditions::{
    DEGRADED, PAUSED, PROGRESSING, READY, RECONCILING, STALLED,
};
use conpaas_crds::labels::{LABEL_ROLE, LABEL_SERVICE};
use conpaas_crds::types::Access;
use conpaas_crds::v1alpha1::{
    DrainReason, Phase, PhaseChange, RoleStatus, SavedData, ServiceStatus, ServiceType,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::model::Problem;
use super::model::{Desired, NodeFailure, ObservedNode};
use super::plan::{
    DATA_AT_RISK, SAVE_FAILED, data_at_risk_message, kept_for_their_data, remediation_allowed,
    restoring, rollout_failure, save_blocked,
};
use crate::conditions::{Desired as Cond, merge};

/// How many phase changes the history keeps.
pub const HISTORY_LIMIT: usize = 20;

/// Computes the new status from the previous one, the validation outcome and the nodes.
pub fn build(
    previous: &ServiceStatus,
    generation: Option<i64>,
    desired: &Result<Desired, Problem>,
    nodes: &[ObservedNode],
    now: &Time,
) -> ServiceStatus {
    let roles = role_counts(desired, nodes);
    let phase = phase(previous.phase, desired, &roles, nodes);
    let live = nodes.iter().filter(|n| !n.deleting).count();
    let unhealthy = nodes
        .iter()
        .filter(|n| (n.suspect || n.unhealthy.is_some()) && !n.deleting)
        .count();
    let ready_text = roles
        .iter()
        .map(|r| format!("{} {}/{}", r.name, r.ready, r.desired))
        .collect::<Vec<_>>()
        .join(", ");

    let (ready, reason, message) = match (phase, desired) {
        (_, Err(problem)) => (false, problem.reason.to_string(), problem.message.clone()),
        (Phase::Running, _) => (
            true,
            "Running".into(),
            format!("all nodes ready: {ready_text}"),
        ),
        (Phase::Stopped, _) => (true, "Stopped".into(), "the service is stopped".into()),
        (Phase::Epilogue, _) => (
            false,
            "Stopping".into(),
            format!("removing {} nodes", nodes.len()),
        ),
        (p, _) => (false, title(p), format!("waiting for nodes: {ready_text}")),
    };
    // Asked to run but held stopped (the tenant's credits ran out): not Ready, and why.
    let held = desired.as_ref().ok().and_then(|d| d.held.as_ref());
    let (ready, reason, message) = match held {
        Some(h) => (false, h.reason.to_string(), h.message.clone()),
        None => (ready, reason, message),
    };
    let paused = desired.as_ref().is_ok_and(|d| d.paused);
    let failures: Vec<(&str, &NodeFailure)> = nodes
        .iter()
        .filter(|n| !n.deleting)
        .filter_map(|n| Some((n.name.as_str(), n.failure.as_ref()?)))
        .collect();
    // kstatus: Stalled when only a change of spec (or of what it names) can help; Reconciling
    // while converging otherwise.
    let stalled = match desired {
        Err(problem) => Cond::new(STALLED, true, problem.reason, problem.message.clone()),
        Ok(d) if let Some(h) = &d.held => Cond::new(STALLED, true, h.reason, h.message.clone()),
        Ok(_) => match failures.iter().find(|(_, f)| f.stalled) {
            Some((node, failure)) => Cond::new(
                STALLED,
                true,
                failure.reason.clone(),
                failed_nodes_message(node, failure, 1),
            ),
            None => Cond::new(STALLED, false, "AsExpected", ""),
        },
    };
    let reconciling = if !ready && !stalled.status && !paused {
        Cond::new(RECONCILING, true, reason.clone(), message.clone())
    } else {
        Cond::new(RECONCILING, false, "Idle", "")
    };
    let progressing =
        !paused && matches!(phase, Phase::Prologue | Phase::Adapting | Phase::Epilogue);
    let rollout = match desired {
        Ok(d) if !paused => rollout_condition(d, nodes),
        _ => None,
    };
    let conditions = merge(
        &previous.conditions,
        vec![
            Cond::new(READY, ready, reason.clone(), message.clone()),
            rollout.unwrap_or_else(|| {
                Cond::new(
                    PROGRESSING,
                    progressing,
                    if progressing {
                        title(phase)
                    } else {
                        "Idle".into()
                    },
                    "",
                )
            }),
            match desired {
                Err(problem) => Cond::new(DEGRADED, true, problem.reason, problem.message.clone()),
                Ok(d) if let Some(h) = &d.held => {
                    Cond::new(DEGRADED, true, h.reason, h.message.clone())
                }
                Ok(d) if let Some(why) = save_blocked(d, nodes) => {
                    Cond::new(DEGRADED, true, SAVE_FAILED, why)
                }
                Ok(d) if d.running && !kept_for_their_data(d, nodes).is_empty() => Cond::new(
                    DEGRADED,
                    true,
                    DATA_AT_RISK,
                    data_at_risk_message(&kept_for_their_data(d, nodes)),
                ),
                Ok(d)
                    if unhealthy > 0
                        && !remediation_allowed(live, unhealthy, d.max_unhealthy_percent) =>
                {
                    Cond::new(
                        DEGRADED,
                        true,
                        REMEDIATION_HELD,
                        format!(
                            "{unhealthy} of {live} nodes are unhealthy, more than {}%: none is replaced until health returns",
                            d.max_unhealthy_percent
                        ),
                    )
                }
                Ok(_) if let Some((node, failure)) = failures.first() => Cond::new(
                    DEGRADED,
                    true,
                    failure.reason.clone(),
                    failed_nodes_message(node, failure, failures.len()),
                ),
                Ok(_) if unhealthy > 0 => Cond::new(
                    DEGRADED,
                    true,
                    "NodesUnhealthy",
                    format!("{unhealthy} nodes are unhealthy and being replaced"),
                ),
                Ok(_) => Cond::new(DEGRADED, false, "AsExpected", ""),
            },
            if paused {
                Cond::new(
                    PAUSED,
                    true,
                    "Paused",
                    "the conpaas.io/paused annotation stops all reconciling; remove it to resume",
                )
            } else {
                Cond::new(PAUSED, false, "NotPaused", "")
            },
            reconciling,
            stalled,
        ],
        generation,
        now,
    );

    let mut history = previous.history.clone();
    if history.last().map(|h| h.phase) != Some(phase) {
        let reason = conditions[0].reason.clone();
        history.push(PhaseChange {
            phase,
            time: now.clone(),
            reason: Some(reason),
        });
        let excess = history.len().saturating_sub(HISTORY_LIMIT);
        history.drain(..excess);
    }

    let active_code_version = desired
        .as_ref()
        .ok()
        .and_then(|d| d.config.code.as_ref().map(|c| c.version.clone()));
    // Only a switch from one version to another makes a previous one; a spec that is invalid
    // for a while (no active version) does not.
    let previous_code_version = match (&previous.active_code_version, &active_code_version) {
        (Some(old), Some(new)) if old != new => Some(old.clone()),
        _ => previous.previous_code_version.clone(),
    };

    // The end of an outage restarts the confirmation window of the nodes still unhealthy: they
    // come back one by one, and the last would otherwise be replaced the moment the others did.
    let remediation_resumed_at =
        if remediation_held(&previous.conditions) && !remediation_held(&conditions) {
            Some(now.clone())
        } else {
            previous.remediation_resumed_at.clone()
        };

    ServiceStatus {
        phase,
        url: desired.as_ref().ok().and_then(|d| {
            access_point(
                d,
                d.service_type.descriptor().access.as_ref()?,
                nodes,
                false,
            )
        }),
        // None while the data saved at the last stop goes back in: a linked node would write
        // into a volume or database that the restore then overwrites.
        endpoint: desired.as_ref().ok().and_then(|d| {
            if nodes.iter().any(|n| !n.deleting && restoring(n)) {
                return None;
            }
            access_point(
                d,
                d.service_type.descriptor().endpoint.as_ref()?,
                nodes,
                true,
            )
        }),
        credentials_version: credentials_version(previous, nodes),
        saved_data: saved_data(previous, nodes, now),
        ready: (!roles.is_empty()).then_some(ready_text),
        remediation_resumed_at,
        roles,
        active_code_version,
        previous_code_version,
        observed_generation: generation,
        conditions,
        history,
        replicas: None,
        selector: None,
        autoscaling: previous.autoscaling.clone(),
    }
}

/// The credentials version every staying node that reports one accepts (mysql nodes), else the
/// one recorded before: linked services switch only to credentials every node takes.
fn credentials_version(previous: &ServiceStatus, nodes: &[ObservedNode]) -> Option<String> {
    let versions: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter(|n| !n.deleting && n.spec.drain.is_none())
        .filter_map(|n| n.credentials_version.as_deref())
        .collect();
    match versions.into_iter().collect::<Vec<_>>()[..] {
        [one] => Some(one.to_string()),
        _ => previous.credentials_version.clone(),
    }
}

/// The data a node saved draining for a stop, once it reports it; else what was saved before.
fn saved_data(previous: &ServiceStatus, nodes: &[ObservedNode], now: &Time) -> Option<SavedData> {
    let saver = nodes.iter().find_map(|n| {
        let stopping = n.spec.drain.as_ref()?.reason == DrainReason::ServiceStopped;
        stopping.then_some((n.name.as_str(), n.saved.as_deref()?))
    });
    match (saver, &previous.saved_data) {
        (Some((_, sha)), Some(before)) if before.sha256 == sha => previous.saved_data.clone(),
        (Some((node, sha)), _) => Some(SavedData {
            sha256: sha.to_string(),
            node: node.to_string(),
            time: now.clone(),
        }),
        (None, _) => previous.saved_data.clone(),
    }
}

/// Where clients reach the service: on the first node (the first `seeds` nodes, by commas) with
/// an address of the first access role that has one (with `serving_first`, the first that
/// serves: a link must not follow a replacement or a new glb that is still starting; a URL
/// people keep stays on the first node).
fn access_point(
    desired: &Desired,
    access: &Access,
    nodes: &[ObservedNode],
    serving_first: bool,
) -> Option<String> {
    let mut candidates: Vec<_> = nodes
        .iter()
        .filter(|n| !n.deleting && n.spec.drain.is_none())
        .filter_map(|n| {
            let preference = access.roles.iter().position(|r| *r == n.spec.role)?;
            let ordinal = super::plan::ordinal(&desired.service, n)?;
            Some((
                serving_first && !n.agent_ready,
                preference,
                ordinal,
                n.address.as_deref()?,
            ))
        })
        .collect();
    candidates.sort();
    let urls: Vec<String> = candidates
        .into_iter()
        .take(access.seeds.max(1))
        .map(|(_, _, _, address)| access.url(address))
        .collect();
    (!urls.is_empty()).then(|| urls.join(","))
}

/// Whether these conditions say that replacing unhealthy nodes is held for an outage.
pub fn remediation_held(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == DEGRADED && c.status == "True" && c.reason == REMEDIATION_HELD)
}

const REMEDIATION_HELD: &str = "RemediationHeld";

/// Fills what the scale subresource reads: the default role's current node count and the label
/// selector of its ServiceNodes.
pub fn set_scale(status: &mut ServiceStatus, service: &str, ty: ServiceType) {
    let role = ty.descriptor().default_role;
    status.replicas = Some(
        status
            .roles
            .iter()
            .find(|r| r.name == role)
            .map_or(0, |r| r.current),
    );
    status.selector = Some(format!("{LABEL_SERVICE}={service},{LABEL_ROLE}={role}"));
}

fn role_counts(desired: &Result<Desired, Problem>, nodes: &[ObservedNode]) -> Vec<RoleStatus> {
    let Ok(desired) = desired else {
        return Vec::new();
    };
    desired
        .roles
        .iter()
        .map(|role| {
            let of_role = || {
                nodes
                    .iter()
                    .filter(|n| n.spec.role == role.name && !n.deleting)
            };
            RoleStatus {
                name: role.name.clone(),
                desired: if desired.running { role.count } else { 0 },
                current: of_role().count() as i32,
                // Ready for its current spec; a leaving node still counts as there, no longer
                // as serving.
                ready: of_role()
                    .filter(|n| n.ready && n.settled && n.spec.drain.is_none())
                    .count() as i32,
                updated: of_role().filter(|n| runs_target(desired, n)).count() as i32,
            }
        })
        .collect()
}

/// Whether `node` has the active code version and its agent reports running it (nothing to
/// run counts when no version is active).
fn runs_target(desired: &Desired, node: &ObservedNode) -> bool {
    match &desired.config.code {
        None => node.spec.code.is_none(),
        Some(code) => {
            node.spec.code.as_ref() == Some(code)
                && node.running_code.as_deref() == Some(code.version.as_str())
        }
    }
}

/// The Progressing condition while a code version rolls out: True with how far it got, or False
/// with `RolloutFailed` naming the node and its agent's message. None when no rollout runs.
fn rollout_condition(desired: &Desired, nodes: &[ObservedNode]) -> Option<Cond> {
    let code = desired.config.code.as_ref()?;
    let live: Vec<&ObservedNode> = nodes.iter().filter(|n| !n.deleting).collect();
    if let Some((node, message)) = rollout_failure(desired, &live) {
        let then = if desired.config.rollout.rollback {
            "rolling back to the previous version"
        } else {
            "the rollout stopped; the other nodes keep the version they run"
        };
        return Some(Cond::new(
            PROGRESSING,
            false,
            "RolloutFailed",
            format!(
                "code version {} failed on node {node}: {message}; {then}",
                code.version
            ),
        ));
    }
    let updated = live.iter().filter(|n| runs_target(desired, n)).count();
    (updated < live.len()
        && live
            .iter()
            .any(|n| n.spec.code.is_some() || n.running_code.is_some()))
    .then(|| {
        Cond::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!(
                "code version {}: {updated}/{} nodes run it",
                code.version,
                live.len()
            ),
        )
    })
}

/// The ConPaaS phase: PROLOGUE while starting, ADAPTING while changing a running service,
/// EPILOGUE while stopping.
fn phase(
    previous: Phase,
    desired: &Result<Desired, Problem>,
    roles: &[RoleStatus],
    nodes: &[ObservedNode],
) -> Phase {
    let Ok(desired) = desired else {
        return Phase::Error;
    };
    if !desired.running {
        return if nodes.is_empty() {
            Phase::Stopped
        } else {
            Phase::Epilogue
        };
    }
    let converged = nodes.iter().all(|n| !n.deleting)
        && roles
            .iter()
            .all(|r| r.current == r.desired && r.ready == r.desired);
    match (converged, previous) {
        (true, _) => Phase::Running,
        (false, Phase::Running | Phase::Adapting) => Phase::Adapting,
        (false, _) => Phase::Prologue,
    }
}

/// `node x: <its message>`, and how many more failed.
fn failed_nodes_message(node: &str, failure: &NodeFailure, failed: usize) -> String {
    let more = match failed {
        0 | 1 => String::new(),
        2 => " (and 1 more node)".into(),
        n => format!(" (and {} more nodes)", n - 1),
    };
    format!("node {node}: {}{more}", failure.message)
}

fn title(phase: Phase) -> String {
    let s = phase.as_str();
    format!("{}{}", &s[..1], s[1..].to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::{DesiredRole, NodeConfig};
    use k8s_openapi::jiff::Timestamp;

    fn now(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn desired(count: i32, running: bool) -> Result<Desired, Problem> {
        Ok(Desired {
            service: "s".into(),
            application: "a".into(),
            service_type: ServiceType::Helloworld,
            running,
            held: None,
            leaving_first: vec![],
            roles: vec![DesiredRole {
                name: "node".into(),
                count,
                cloud: "local".into(),
                instance_type: None,
                volume: None,
            }],
            config: NodeConfig::default(),
            max_unhealthy_percent: 40,
            paused: false,
            drain: Default::default(),
            saved_on_stop: None,
            data_copies: conpaas_crds::types::DataCopies::None,
            restore: None,
        })
    }

    fn nodes(n: usize, ready: usize) -> Vec<ObservedNode> {
        (0..n)
            .map(|i| ObservedNode {
                ready: i < ready,
                ..crate::fixtures::serving_node(
                    &format!("s-node-{i}"),
                    crate::fixtures::node_spec(&format!("t{i}")),
                )
            })
            .collect()
    }

    fn condition<'a>(s: &'a ServiceStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    fn failing(mut n: Vec<ObservedNode>, reason: &str, stalled: bool) -> Vec<ObservedNode> {
        for node in n.iter_mut().skip(1) {
            node.failure = Some(NodeFailure {
                reason: reason.into(),
                message: "create VM on cloud aws: quota exceeded: 20 instances".into(),
                stalled,
            });
        }
        n
    }

    #[test]
    fn a_service_held_stopped_by_its_credits_says_so_and_is_not_ready() {
        let mut held = desired(2, false).unwrap();
        held.held = Some(Problem::new("CreditsExhausted", "the credits ran out"));
        let status = build(
            &Default::default(),
            Some(1),
            &Ok(held),
            &nodes(0, 0),
            &now(10),
        );
        assert_eq!(status.phase, Phase::Stopped);
        let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(
            (find(READY).status.as_str(), find(READY).reason.as_str()),
            ("False", "CreditsExhausted")
        );
        assert_eq!(find(DEGRADED).status, "True");
        assert_eq!(find(DEGRADED).message, "the credits ran out");
    }

    #[test]
    fn a_failing_node_is_named_and_a_dead_end_is_stalled_for_kstatus() {
        let at = now(1);
        // Converging: Reconciling, not Stalled.
        let s = build(
            &ServiceStatus::default(),
            Some(1),
            &desired(3, true),
            &nodes(3, 1),
            &at,
        );
        assert_eq!(condition(&s, RECONCILING).0, "True");
        assert_eq!(condition(&s, STALLED).0, "False");
        // A cloud refusal that may pass: Degraded names the node, still Reconciling.
        let n = failing(nodes(3, 1), "ProviderQuotaExceeded", false);
        let s = build(&s, Some(1), &desired(3, true), &n, &at);
        let (status, reason, message) = condition(&s, DEGRADED);
        assert_eq!((status, reason), ("True", "ProviderQuotaExceeded"));
        assert_eq!(
            message,
            "node s-node-1: create VM on cloud aws: quota exceeded: 20 instances (and 1 more node)"
        );
        assert_eq!(condition(&s, RECONCILING).0, "True");
        assert_eq!(condition(&s, STALLED).0, "False");
        // A refusal that repeats: Stalled, no longer Reconciling.
        let n = failing(nodes(3, 1), "ProviderUnauthorized", true);
        let s = build(&s, Some(1), &desired(3, true), &n, &at);
        assert_eq!(condition(&s, STALLED).0, "True");
        assert_eq!(condition(&s, STALLED).1, "ProviderUnauthorized");
        assert_eq!(condition(&s, RECONCILING).0, "False");
        // An unsatisfiable spec: Stalled with the validation's reason.
        let problem = Err(Problem::new("CloudNotFound", "spec.roles[node]: no Cloud"));
        let s = build(&s, Some(2), &problem, &[], &at);
        assert_eq!(condition(&s, STALLED).1, "CloudNotFound");
        assert_eq!(condition(&s, RECONCILING).0, "False");
        // Ready: neither.
        let s = build(&s, Some(3), &desired(3, true), &nodes(3, 3), &at);
        assert_eq!(condition(&s, READY).0, "True");
        assert_eq!(
            (condition(&s, STALLED).0, condition(&s, RECONCILING).0),
            ("False", "False")
        );
        assert_eq!(condition(&s, DEGRADED).0, "False");
    }

    #[test]
    fn the_conpaas_life_cycle() {
        let mut s = ServiceStatus::default();
        // (validation outcome, nodes, expected phase, expected Ready)
        type Step = (Result<Desired, Problem>, Vec<ObservedNode>, Phase, bool);
        let steps: Vec<Step> = vec![
            (desired(3, true), nodes(0, 0), Phase::Prologue, false),
            (desired(3, true), nodes(3, 1), Phase::Prologue, false),
            (desired(3, true), nodes(3, 3), Phase::Running, true),
            (desired(5, true), nodes(3, 3), Phase::Adapting, false),
            (desired(5, true), nodes(5, 5), Phase::Running, true),
            (desired(5, false), nodes(5, 5), Phase::Epilogue, false),
            (desired(5, false), nodes(0, 0), Phase::Stopped, true),
            (desired(5, true), nodes(2, 0), Phase::Prologue, false),
            (
                Err(Problem::new(
                    "CloudNotFound",
                    "spec.roles[node]: Cloud \"x\" does not exist",
                )),
                nodes(0, 0),
                Phase::Error,
                false,
            ),
        ];
        for (i, (d, n, want, ready)) in steps.into_iter().enumerate() {
            s = build(&s, Some(1), &d, &n, &now(i as i64));
            assert_eq!(s.phase, want, "step {i}");
            assert_eq!(s.conditions[0].status == "True", ready, "step {i}: Ready");
        }
        assert_eq!(s.conditions[0].reason, "CloudNotFound");
        assert_eq!(
            s.conditions[2].status, "True",
            "an unsatisfiable service is Degraded"
        );
        let phases: Vec<Phase> = s.history.iter().map(|h| h.phase).collect();
        assert_eq!(
            phases,
            vec![
                Phase::Prologue,
                Phase::Running,
                Phase::Adapting,
                Phase::Running,
                Phase::Epilogue,
                Phase::Stopped,
                Phase::Prologue,
                Phase::Error
            ]
        );
    }

    #[test]
    fn ready_summary_and_counts_per_role() {
        let s = build(
            &ServiceStatus::default(),
            Some(4),
            &desired(3, true),
            &nodes(3, 2),
            &now(0),
        );
        assert_eq!(s.ready.as_deref(), Some("node 2/3"));
        assert_eq!(
            s.roles[0],
            RoleStatus {
                name: "node".into(),
                desired: 3,
                current: 3,
                ready: 2,
                updated: 3,
            }
        );
        assert_eq!(s.observed_generation, Some(4));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn the_endpoint_is_a_serving_glb_else_the_first_mysql_node() {
        let d = desired(1, true).map(|mut d| {
            d.service_type = ServiceType::Mysql;
            d.roles = ["mysql", "glb"]
                .map(|r| DesiredRole {
                    name: r.into(),
                    count: 1,
                    cloud: "local".into(),
                    instance_type: None,
                    volume: None,
                })
                .to_vec();
            d
        });
        let node = |role: &str, address: &str, agent_ready: bool| {
            let mut n = nodes(1, 1).remove(0);
            n.name = format!("s-{role}-0");
            n.spec.role = role.into();
            n.address = Some(address.into());
            n.agent_ready = agent_ready;
            n
        };
        let endpoint = |nodes: &[ObservedNode]| {
            build(&ServiceStatus::default(), Some(1), &d, nodes, &now(0)).endpoint
        };
        let mysql = node("mysql", "10.0.0.1", true);
        assert_eq!(
            endpoint(std::slice::from_ref(&mysql)).as_deref(),
            Some("10.0.0.1:3306")
        );
        let starting_glb = node("glb", "10.0.0.9", false);
        assert_eq!(
            endpoint(&[mysql.clone(), starting_glb]).as_deref(),
            Some("10.0.0.1:3306"),
            "links do not follow a glb that does not serve yet"
        );
        let glb = node("glb", "10.0.0.9", true);
        assert_eq!(endpoint(&[mysql, glb]).as_deref(), Some("10.0.0.9:3306"));

        // While the data saved at the last stop goes back in, no link is given an address;
        // once the restoring node was Ready, they are.
        let mut restoring = node("mysql", "10.0.0.1", false);
        restoring.spec.restore = Some(crate::service::validate::saved_data("abc".into()));
        restoring.was_ready = false;
        assert_eq!(endpoint(std::slice::from_ref(&restoring)), None);
        restoring.was_ready = true;
        restoring.agent_ready = true;
        assert_eq!(
            endpoint(std::slice::from_ref(&restoring)).as_deref(),
            Some("10.0.0.1:3306")
        );
    }

    #[test]
    fn linked_services_get_credentials_only_once_every_node_accepts_them() {
        let d = desired(3, true);
        let accepted = |versions: [Option<&str>; 3], previous: Option<&str>| {
            let mut n = nodes(3, 3);
            for (node, v) in n.iter_mut().zip(versions) {
                node.credentials_version = v.map(str::to_string);
            }
            let previous = ServiceStatus {
                credentials_version: previous.map(str::to_string),
                ..Default::default()
            };
            build(&previous, Some(1), &d, &n, &now(0)).credentials_version
        };
        let all_new = [Some("7"), Some("7"), Some("7")];
        assert_eq!(accepted(all_new, Some("5")).as_deref(), Some("7"));
        let one_behind = [Some("7"), Some("5"), Some("7")];
        assert_eq!(accepted(one_behind, Some("5")).as_deref(), Some("5"));
        // A node still starting says nothing yet.
        let one_starting = [Some("7"), None, Some("7")];
        assert_eq!(accepted(one_starting, Some("5")).as_deref(), Some("7"));
        assert_eq!(
            accepted([None, None, None], Some("5")).as_deref(),
            Some("5")
        );
    }

    #[test]
    fn an_unchanged_world_gives_an_identical_status() {
        let first = build(
            &ServiceStatus::default(),
            Some(1),
            &desired(3, true),
            &nodes(3, 3),
            &now(0),
        );
        let again = build(&first, Some(1), &desired(3, true), &nodes(3, 3), &now(99));
        assert_eq!(first, again, "no write when nothing changed");
    }

    #[test]
    fn the_version_active_before_is_kept_for_a_rollback() {
        let with_code = |version: Option<&str>| {
            desired(1, true).map(|mut d| {
                d.config.code = version.map(|v| conpaas_crds::v1alpha1::NodeCode {
                    version: v.into(),
                    ..Default::default()
                });
                d
            })
        };
        let mut s = ServiceStatus::default();
        let mut seen = Vec::new();
        for step in [Some("v1"), Some("v2"), None, Some("v2"), Some("v1")] {
            s = build(&s, Some(1), &with_code(step), &nodes(1, 1), &now(0));
            seen.push((
                s.active_code_version.clone(),
                s.previous_code_version.clone(),
            ));
        }
        let v = |x: &str| Some(x.to_string());
        assert_eq!(
            seen,
            vec![
                (v("v1"), None),
                (v("v2"), v("v1")),
                (None, v("v1")),
                (v("v2"), v("v1")),
                (v("v1"), v("v2")),
            ]
        );
    }

    #[test]
    fn the_end_of_an_outage_is_recorded_once() {
        let suspects = |n: usize| {
            let mut all = nodes(3, 3 - n);
            for node in all.iter_mut().take(n) {
                node.suspect = true;
            }
            all
        };
        let mut s = ServiceStatus::default();
        let mut seen = Vec::new();
        for (t, unhealthy) in [(0, 0), (10, 3), (20, 3), (30, 1), (40, 0), (50, 3)] {
            s = build(
                &s,
                Some(1),
                &desired(3, true),
                &suspects(unhealthy),
                &now(t),
            );
            seen.push((
                remediation_held(&s.conditions),
                s.remediation_resumed_at.clone(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (false, None),
                (true, None),
                (true, None),
                (false, Some(now(30))),
                (false, Some(now(30))),
                (true, Some(now(30))),
            ]
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut s = ServiceStatus::default();
        for i in 0..50 {
            let d = desired(1, true);
            s = build(&s, Some(1), &d, &nodes(1, (i % 2) as usize), &now(i));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
    }
}
