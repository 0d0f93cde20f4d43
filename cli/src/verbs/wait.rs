//! wait: until a Service is Ready for its current spec, stopped, or gone.

use std::process::ExitCode;
use std::time::Duration;

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{Phase, Service, is_condition_true};

use crate::args::WaitFor;
use crate::connect::Session;

/// True when `service` (None: deleted) is what `condition` asks for.
pub fn reached(service: Option<&Service>, condition: WaitFor) -> bool {
    let Some(svc) = service else {
        return condition == WaitFor::Deleted;
    };
    let Some(status) = &svc.status else {
        return false;
    };
    let current = status.observed_generation == svc.metadata.generation;
    match condition {
        WaitFor::Ready => current && is_condition_true(&status.conditions, READY),
        WaitFor::Stopped => current && status.phase == Phase::Stopped,
        WaitFor::Deleted => false,
    }
}

pub async fn wait(
    s: &Session,
    service: &str,
    condition: WaitFor,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    if condition != WaitFor::Deleted {
        s.service(service).await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let svc = s.services().get_opt(service).await?;
        if reached(svc.as_ref(), condition) {
            println!("service/{service} condition met ({condition:?})");
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            let why = svc
                .and_then(|x| x.status)
                .and_then(|st| st.conditions.into_iter().find(|c| c.type_ == READY))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| {
                    "no status yet: is the controller running? `cpsctl doctor` checks".into()
                });
            eprintln!(
                "error: timed out after {}s waiting for service/{service} ({condition:?}); last: {why}",
                timeout.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
