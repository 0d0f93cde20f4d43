//! The role's own task: runs the startup script, then converges the role to each new spec,
//! polls it, drains it when the node is released, and stops it. Every step may take long (a code
//! install, a database init, a drain); while one runs the agent's loop keeps watching, reporting
//! and handling signals, and the heartbeat runs on a thread of its own ([`crate::heartbeat`]).
//! After each step the supervisor publishes what the node reports; a step still running after a
//! minute makes the node say what it is busy with, and one that has not returned after 30 minutes
//! makes it Failed (a hung call would otherwise leave its last report standing for ever).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::v1alpha1::{AgentState, ServiceNode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::roles::{self, Role, RoleEnv, RoleReport};

/// How often the role is polled for changes of its own (a script ended).
const POLL: Duration = Duration::from_millis(500);

/// How long the Service's startup script may run before the node fails with its output kept.
const STARTUP_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How a role's step is watched while it runs ([`watched`]).
#[derive(Debug, Clone, Copy)]
struct StepLimits {
    /// A step running this long makes the node say what it is busy with...
    busy_after: Duration,
    /// ...again this often (with how long so far)...
    every: Duration,
    /// ...and one running this long makes the node Failed: a step that never returns (a call
    /// that hangs) would otherwise leave the node reporting its last state forever, its
    /// heartbeat going on by itself.
    hung_after: Duration,
}

const STEP_LIMITS: StepLimits = StepLimits {
    busy_after: Duration::from_secs(60),
    every: Duration::from_secs(30),
    // As long as a startup script may run: a code install of a large archive is a step too.
    hung_after: STARTUP_SCRIPT_TIMEOUT,
};

/// What the node reports, for the spec generation it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub generation: Option<i64>,
    pub role: Option<String>,
    pub report: RoleReport,
}

/// Runs the role until `stop` turns true (or its sender goes), then drains and stops it.
pub async fn run(
    env: RoleEnv,
    mut specs: watch::Receiver<Option<Arc<ServiceNode>>>,
    reports: watch::Sender<Option<Published>>,
    mut stop: watch::Receiver<bool>,
) {
    let first = loop {
        if let Some(node) = specs.borrow_and_update().clone() {
            break node;
        }
        tokio::select! {
            changed = specs.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    };
    let generation = first.metadata.generation;
    let role_name = Some(first.spec.role.clone());
    let publish = |report: RoleReport, generation: Option<i64>, role: &Option<String>| {
        let now = Published {
            generation,
            role: role.clone(),
            report,
        };
        reports.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&now);
            *current = Some(now);
            changed
        });
    };
    if first.spec.startup_script.is_some() {
        publish(
            RoleReport {
                state: Some(AgentState::Starting),
                message: Some("running the startup script".into()),
                ..Default::default()
            },
            generation,
            &role_name,
        );
    }
    let startup_error = tokio::select! {
        result = run_startup_script(&first, &env.work_dir) => result.err(),
        _ = stop.changed() => return,
    };
    let mut role = roles::for_type(first.spec.service_type, &first.spec.role, env);
    let mut node = Some(first);
    let mut state = Supervised {
        generation,
        role_name,
        startup_error,
        drain_until: None,
    };
    let mut poll = tokio::time::interval(POLL);
    loop {
        if let Some(node) = node.take() {
            // A stop does not wait for a long step (a large install): the VM is going anyway,
            // and the drain and shutdown below still run.
            let doing = Doing {
                generation: node.metadata.generation,
                role: Some(node.spec.role.clone()),
            };
            let step = watched(
                state.apply(role.as_mut(), &node),
                "convergence to its spec",
                &doing,
                &reports,
                STEP_LIMITS,
            );
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = step => {}
            }
        }
        publish(
            state.report(role.as_ref()),
            state.generation,
            &state.role_name,
        );
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = specs.changed() => match changed {
                Ok(()) => node = specs.borrow_and_update().clone(),
                Err(_) => break,
            },
            _ = poll.tick() => {
                let doing = Doing {
                    generation: state.generation,
                    role: state.role_name.clone(),
                };
                watched(role.poll(), "look at its daemons", &doing, &reports, STEP_LIMITS).await
            }
        }
    }
    tracing::info!("stopping the role");
    role.drain().await;
    role.shutdown().await;
}

/// The spec a step works towards: a hung step fails the node for that generation (reported
/// for the one before, the controller would take it for a node still applying its spec).
struct Doing {
    generation: Option<i64>,
    role: Option<String>,
}

/// Awaits a role's step; while it runs past its limits the node's report says so ([`busy`]).
/// The step itself goes on: only the role could end it safely.
async fn watched(
    step: impl std::future::Future<Output = ()>,
    what: &str,
    doing: &Doing,
    reports: &watch::Sender<Option<Published>>,
    limits: StepLimits,
) {
    tokio::pin!(step);
    let started = Instant::now();
    let before = reports.borrow().clone();
    let mut tick = tokio::time::interval_at(started + limits.busy_after, limits.every);
    loop {
        tokio::select! {
            () = &mut step => return,
            _ = tick.tick() => {
                let now = busy(before.as_ref(), doing, what, started.elapsed(), limits);
                reports.send_replace(Some(now));
            }
        }
    }
}

/// The report of a node whose step has been running for `running`: as before (starting, when
/// nothing was reported yet), saying what it is busy with; Failed once past the limit, for the
/// spec the step works towards.
fn busy(
    before: Option<&Published>,
    doing: &Doing,
    what: &str,
    running: Duration,
    limits: StepLimits,
) -> Published {
    let mut now = before.cloned().unwrap_or_else(|| Published {
        generation: None,
        role: doing.role.clone(),
        report: RoleReport {
            state: Some(AgentState::Starting),
            message: Some("starting".into()),
            ..Default::default()
        },
    });
    let seconds = running.as_secs();
    if running >= limits.hung_after {
        now.generation = doing.generation;
        now.role = doing.role.clone();
        now.report.state = Some(AgentState::Failed);
        now.report.message = Some(format!(
            "the role's {what} has not returned after {seconds} s"
        ));
    } else {
        let message = now.report.message.clone().unwrap_or_default();
        now.report.message = Some(format!("{message} (busy with its {what} for {seconds} s)"));
    }
    now
}

/// What the supervisor keeps besides the role.
struct Supervised {
    generation: Option<i64>,
    role_name: Option<String>,
    startup_error: Option<String>,
    /// When a drain the node was released for may end (its work in flight had that long).
    drain_until: Option<Instant>,
}

impl Supervised {
    async fn apply(&mut self, role: &mut dyn Role, node: &ServiceNode) {
        role.apply(&node.spec).await;
        if let Some(drain) = node.spec.drain.as_ref().filter(|d| d.released)
            && self.drain_until.is_none()
        {
            tracing::info!(seconds = drain.seconds, "released: draining");
            role.drain().await;
            self.drain_until =
                Some(Instant::now() + Duration::from_secs(drain.seconds.max(0) as u64));
        }
        self.generation = node.metadata.generation;
        self.role_name = Some(node.spec.role.clone());
    }

    fn report(&self, role: &dyn Role) -> RoleReport {
        let mut now = role.report();
        if let Some(e) = &self.startup_error {
            now.state = Some(AgentState::Failed);
            now.message = Some(e.clone());
        } else if self.drain_until.is_some_and(|t| t <= Instant::now()) && role.drained() {
            now.state = Some(AgentState::Drained);
            now.message = Some("drained: the work in flight is done".into());
        }
        now
    }
}

/// Runs the Service's startup script once, before the role starts, with its output in
/// `<work>/logs/startup.log` (what `cpsctl logs` shows) and a time limit.
async fn run_startup_script(node: &ServiceNode, work_dir: &Path) -> Result<(), String> {
    let Some(script) = &node.spec.startup_script else {
        return Ok(());
    };
    let path = work_dir.join("startup.sh");
    std::fs::write(&path, script).map_err(|e| format!("write {}: {e}", path.display()))?;
    let logs = work_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
    let log_path = logs.join("startup.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    // In a process group of its own, so that a timeout stops what the script started too (and
    // the local cloud's power-off finds it).
    let mut child = tokio::process::Command::new("sh")
        .arg(&path)
        .current_dir(work_dir)
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run startup script: {e}"))?;
    let group = child.id();
    if let Some(pid) = group {
        crate::daemon::record_group(pid);
    }
    let status = match tokio::time::timeout(STARTUP_SCRIPT_TIMEOUT, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("run startup script: {e}"))?,
        Err(_) => {
            if let Some(pid) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            return Err(format!(
                "startup script still running after {} s: stopped (its output is in logs/startup.log)",
                STARTUP_SCRIPT_TIMEOUT.as_secs()
            ));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "startup script exited with {status} (its output is in logs/startup.log)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: StepLimits = StepLimits {
        busy_after: Duration::from_millis(50),
        every: Duration::from_millis(50),
        hung_after: Duration::from_millis(400),
    };

    fn ready() -> Published {
        Published {
            generation: Some(3),
            role: Some("node".into()),
            report: RoleReport {
                state: Some(AgentState::Ready),
                message: Some("serving".into()),
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn a_step_that_never_returns_is_told_then_fails_the_node() {
        let (reports, mut seen) = watch::channel(Some(ready()));
        let mut told = Vec::new();
        let doing = Doing {
            generation: Some(4),
            role: Some("node".into()),
        };
        let hung = watched(
            std::future::pending(),
            "look at its daemons",
            &doing,
            &reports,
            FAST,
        );
        let watching = async {
            while seen.changed().await.is_ok() {
                let now = seen.borrow_and_update().clone().expect("a report");
                told.push(now.report.clone());
                if now.report.state == Some(AgentState::Failed) {
                    assert_eq!(
                        now.generation,
                        Some(4),
                        "failed for the spec it works towards"
                    );
                    break;
                }
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                () = hung => panic!("a pending step returned"),
                () = watching => {}
            }
        })
        .await;
        assert!(outcome.is_ok(), "never Failed: {told:?}");
        let first = &told[0];
        assert_eq!(first.state, Some(AgentState::Ready), "{told:?}");
        assert!(
            first
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("serving (busy with its look at its daemons for")),
            "{told:?}"
        );
        let last = told.last().expect("a report");
        assert!(
            last.message
                .as_deref()
                .is_some_and(|m| m.starts_with("the role's look at its daemons has not returned")),
            "{told:?}"
        );
    }

    #[tokio::test]
    async fn a_quick_step_changes_nothing_of_the_report() {
        let (reports, seen) = watch::channel(Some(ready()));
        let doing = Doing {
            generation: Some(4),
            role: Some("node".into()),
        };
        watched(
            std::future::ready(()),
            "convergence to its spec",
            &doing,
            &reports,
            FAST,
        )
        .await;
        tokio::time::sleep(FAST.busy_after * 2).await;
        assert_eq!(*seen.borrow(), Some(ready()));
    }

    #[tokio::test]
    async fn a_first_step_that_hangs_is_reported_though_nothing_was_before() {
        let (reports, mut seen) = watch::channel(None);
        let doing = Doing {
            generation: Some(1),
            role: Some("node".into()),
        };
        let hung = watched(
            std::future::pending(),
            "convergence to its spec",
            &doing,
            &reports,
            FAST,
        );
        let first = tokio::select! {
            () = hung => panic!("a pending step returned"),
            changed = seen.changed() => {
                changed.unwrap();
                seen.borrow().clone().expect("a report")
            }
        };
        assert_eq!(first.report.state, Some(AgentState::Starting));
        assert!(
            first
                .report
                .message
                .is_some_and(|m| m.contains("busy with its convergence to its spec")),
        );
    }
}
