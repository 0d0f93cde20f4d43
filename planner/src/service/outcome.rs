//! What the Service loop decides besides its node actions, as data: the status it publishes,
//! the Events that say what changed, a rollback of `spec.code.active`, and when to look again.
//! The reconcile only carries these out; `cpsctl plan` shows them; tests assert on them.

use std::time::Duration;

use conpaas_crds::labels::ANNOTATION_ROLLED_BACK_FROM;
use conpaas_crds::v1alpha1::{Phase, Service, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use super::autoscale::Scaling;
use super::model::{Action, Desired, ObservedNode, Problem};
use super::plan;
use super::status;

/// How soon to look again while nodes come and go. A node's change may wake the loop before
/// the node cache shows it (they are separate watches), and its removal wakes nothing that the
/// cache has seen: reading the cache again is cheap, and the last change is never missed.
pub const CONVERGING: Duration = Duration::from_secs(2);

/// A Service whose spec cannot be satisfied is looked at again this often (missing
/// Applications and Clouds are not watched).
const UNSATISFIED: Duration = Duration::from_secs(5);

/// A converged Service with nothing to wait for is looked at again this often.
const QUIET: Duration = Duration::from_secs(300);

/// `spec.code.active` set back: with `rollout.onFailure: Rollback`, a version that failed on a
/// node makes the Service activate the version active before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The version activated again.
    pub to: String,
    /// The version that failed (recorded so the Service is never rolled back to it).
    pub failed: String,
}

impl Rollback {
    /// The Event's note.
    pub fn note(&self) -> String {
        format!(
            "code version {} failed; activated {}, the version active before it",
            self.failed, self.to
        )
    }
}

/// An Event to publish about the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// What the controller did (`Reconcile`, `Rollout`, `Scale`).
    pub action: &'static str,
    pub note: String,
}

/// The status the Service gets from this look: built from the nodes as they are, with those
/// the plan re-specs counted as not yet settled (a node re-specced now is not ready for its new
/// spec until its agent applied it, so the Service is not called Ready on the old one).
pub fn status(
    service: &Service,
    desired: &Result<Desired, Problem>,
    nodes: &[ObservedNode],
    actions: &[Action],
    scaling: &Scaling,
    now: &Time,
) -> ServiceStatus {
    let respecced = |n: &ObservedNode| {
        actions
            .iter()
            .any(|a| matches!(a, Action::PatchNodeSpec { name, .. } if *name == n.name))
    };
    let nodes: Vec<ObservedNode> = nodes
        .iter()
        .map(|n| ObservedNode {
            settled: n.settled && !respecced(n),
            ..n.clone()
        })
        .collect();
    let previous = service.status.clone().unwrap_or_default();
    let mut status = status::build(&previous, service.meta().generation, desired, &nodes, now);
    status::set_scale(&mut status, &service.name_any(), service.spec.r#type);
    status.autoscaling = scaling.roles.clone();
    status
}

/// The rollback this look makes, if any: never back to a version the Service was rolled back
/// from (when both fail, the rollout stops instead of switching between them for ever).
pub fn rollback(
    service: &Service,
    desired: &Result<Desired, Problem>,
    nodes: &[ObservedNode],
) -> Option<Rollback> {
    let desired = desired.as_ref().ok().filter(|d| !d.paused)?;
    let previous = service
        .status
        .as_ref()
        .and_then(|s| s.previous_code_version.as_deref());
    let versions: Vec<&str> = service
        .spec
        .code
        .iter()
        .flat_map(|c| c.versions.iter().map(|v| v.name.as_str()))
        .collect();
    let to = plan::rollback_to(desired, nodes, previous, &versions)?;
    let rolled_back_from = service.annotations().get(ANNOTATION_ROLLED_BACK_FROM);
    if rolled_back_from.map(String::as_str) == Some(to) {
        return None;
    }
    let failed = desired.config.code.as_ref()?.version.clone();
    Some(Rollback {
        to: to.to_string(),
        failed,
    })
}

/// The Events of this look: the autoscaler's changes, the rollback, and, when the status
/// changes, a new phase (or, for a Service that cannot be satisfied, a new reason: the problem
/// changed, say from a missing Application to a missing Cloud) and a newly failed rollout.
pub fn events(
    previous: &ServiceStatus,
    status: &ServiceStatus,
    unsatisfied: bool,
    scaling: &Scaling,
    rollback: Option<&Rollback>,
) -> Vec<Note> {
    let mut notes: Vec<Note> = scaling
        .changes
        .iter()
        .map(|change| Note {
            warning: false,
            reason: "Autoscaled".into(),
            action: "Scale",
            note: change.clone(),
        })
        .collect();
    notes.extend(rollback.map(|r| Note {
        warning: true,
        reason: "RolledBack".into(),
        action: "Rollout",
        note: r.note(),
    }));
    if status == previous {
        return notes;
    }
    let reason = |s: &ServiceStatus| s.conditions.first().map(|c| c.reason.clone());
    let new_problem = unsatisfied && reason(status) != reason(previous);
    if (status.phase != previous.phase || new_problem)
        && let Some(first) = status.conditions.first()
    {
        notes.push(Note {
            warning: unsatisfied,
            reason: first.reason.clone(),
            action: "Reconcile",
            note: format!("{}: {}", status.phase.as_str(), first.message),
        });
    }
    if let Some(failed) = newly_failed_rollout(previous, status) {
        notes.push(Note {
            warning: true,
            reason: "RolloutFailed".into(),
            action: "Rollout",
            note: failed,
        });
    }
    notes
}

/// The message of a Progressing condition that turned `RolloutFailed` with this status.
fn newly_failed_rollout(previous: &ServiceStatus, status: &ServiceStatus) -> Option<String> {
    let failed = |s: &ServiceStatus| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::PROGRESSING,
        )
        .filter(|c| c.reason == "RolloutFailed")
        .map(|c| c.message.clone())
    };
    failed(status).filter(|now| failed(previous).as_ref() != Some(now))
}

/// When to look again: soon while nodes come and go or the spec cannot be satisfied, when an
/// unhealthy node's confirmation or an autoscaling window ends, else after a while.
pub fn requeue(
    unsatisfied: bool,
    status: &ServiceStatus,
    next_health_check: Option<Duration>,
    scaling: &Scaling,
) -> Duration {
    let converging = matches!(
        status.phase,
        Phase::Prologue | Phase::Adapting | Phase::Epilogue
    );
    let next = if unsatisfied {
        UNSATISFIED
    } else if converging {
        CONVERGING
    } else {
        next_health_check.unwrap_or(QUIET)
    };
    scaling
        .next_look
        .map_or(next, |at| next.min(at.max(Duration::from_millis(200))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::ServiceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn with_phase(phase: Phase, progressing: Option<(&str, &str)>) -> ServiceStatus {
        let mut status = ServiceStatus {
            phase,
            ..Default::default()
        };
        status.conditions.push(Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Starting".into(),
            message: "nodes start".into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        });
        if let Some((reason, message)) = progressing {
            status.conditions.push(Condition {
                type_: conpaas_crds::labels::conditions::PROGRESSING.into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            });
        }
        status
    }

    fn reasons(notes: &[Note]) -> Vec<&str> {
        notes.iter().map(|n| n.reason.as_str()).collect()
    }

    #[test]
    fn events_say_what_changed_once() {
        let scaling = Scaling::default();
        let before = with_phase(Phase::Running, None);
        let same = events(&before, &before, false, &scaling, None);
        assert!(same.is_empty(), "nothing changed: no Event");
        let adapting = with_phase(Phase::Adapting, None);
        assert_eq!(
            reasons(&events(&before, &adapting, false, &scaling, None)),
            ["Starting"]
        );
        // Unsatisfied for another reason, in the same phase: the new problem is told.
        let mut other_problem = before.clone();
        other_problem.conditions[0].reason = "CloudNotFound".into();
        assert!(events(&before, &other_problem, false, &scaling, None).is_empty());
        assert_eq!(
            reasons(&events(&before, &other_problem, true, &scaling, None)),
            ["CloudNotFound"]
        );
        let failed = with_phase(Phase::Running, Some(("RolloutFailed", "v2 failed")));
        assert_eq!(
            reasons(&events(&before, &failed, false, &scaling, None)),
            ["RolloutFailed"]
        );
        assert!(
            events(&failed, &failed, false, &scaling, None).is_empty(),
            "a failed rollout is told once"
        );
        let rollback = Rollback {
            to: "v1".into(),
            failed: "v2".into(),
        };
        let notes = events(&before, &before, false, &scaling, Some(&rollback));
        assert_eq!(reasons(&notes), ["RolledBack"]);
        assert!(notes[0].warning && notes[0].note.contains("activated v1"));
    }

    #[test]
    fn a_look_comes_soon_while_converging_or_unsatisfied_and_at_the_next_window() {
        let mut scaling = Scaling::default();
        let running = with_phase(Phase::Running, None);
        let adapting = with_phase(Phase::Adapting, None);
        assert_eq!(requeue(false, &running, None, &scaling), QUIET);
        assert_eq!(requeue(true, &running, None, &scaling), UNSATISFIED);
        assert_eq!(requeue(false, &adapting, None, &scaling), CONVERGING);
        let health = Some(Duration::from_secs(7));
        assert_eq!(
            requeue(false, &running, health, &scaling),
            Duration::from_secs(7)
        );
        scaling.next_look = Some(Duration::from_secs(1));
        assert_eq!(
            requeue(false, &running, health, &scaling),
            Duration::from_secs(1)
        );
    }
}
