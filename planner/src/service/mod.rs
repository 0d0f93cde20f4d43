//! The Service loop's pure middle and its reads: observe (the API server only) -> validate ->
//! plan -> status. The controller acts on the plan; `cpsctl plan` prints it.

pub mod autoscale;
pub mod model;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod status;
pub mod validate;

use conpaas_crds::labels::ANNOTATION_PAUSED;
use conpaas_crds::v1alpha1::Service;
use kube::ResourceExt;

use crate::Error;

/// What the Service loop would do now, without doing it: `cpsctl plan` prints this, and the
/// loop acts on it.
pub struct Preview {
    /// Everything read.
    pub observed: observe::Observed,
    /// The validated desired state, or why the Service cannot be satisfied.
    pub desired: Result<plan::Desired, validate::Problem>,
    /// The node actions that move the nodes towards `desired` (none when it is an error).
    pub actions: Vec<plan::Action>,
    /// The autoscaler's decisions for the roles of `spec.autoscaling`.
    pub scaling: autoscale::Scaling,
    /// `spec.code.active` set back to the version before one that failed, if it is.
    pub rollback: Option<outcome::Rollback>,
    /// The status to publish.
    pub status: conpaas_crds::v1alpha1::ServiceStatus,
    /// The Events that say what changed.
    pub events: Vec<outcome::Note>,
    /// When to look again.
    pub requeue: std::time::Duration,
}

/// Observes `service` and plans its node actions. Reads only; writes nothing.
pub async fn preview(
    client: &kube::Client,
    service: &Service,
    heartbeats: observe::Heartbeats<'_>,
) -> Result<Preview, Error> {
    let observed = observe::observe(client, service, heartbeats).await?;
    Ok(decide(service, observed))
}

/// Validates and plans from an observation. Pure.
pub fn decide(service: &Service, mut observed: observe::Observed) -> Preview {
    let scaling = autoscale::decide(
        &service.spec.autoscaling,
        service
            .status
            .as_ref()
            .map_or(&[][..], |s| s.autoscaling.as_slice()),
        &observed.nodes,
        &observed.tenancy.budget(service),
        observed.now,
    );
    let desired = validate::validate(
        &service.spec,
        validate::Inputs {
            service: &service.name_any(),
            application: observed.application.as_ref().map(|a| &a.spec),
            clouds: &observed.clouds,
            siblings: &observed.siblings,
            filesystems: &observed.filesystems,
            code: std::mem::replace(&mut observed.code, Ok(None)),
            links: observed.links.clone(),
            saved: service
                .status
                .as_ref()
                .and_then(|s| s.saved_data.as_ref())
                .map(|d| d.sha256.clone()),
            tenancy: &observed.tenancy,
            scaling: &scaling,
            paused: service
                .annotations()
                .get(ANNOTATION_PAUSED)
                .is_some_and(|v| v == "true"),
        },
    );
    let actions = match &desired {
        Ok(desired) => plan::plan(desired, &observed.nodes),
        Err(_) if observed.tenancy.credits_exhausted.is_some() => {
            plan::stop_unpaid(&observed.nodes)
        }
        Err(_) => Vec::new(),
    };
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(observed.now);
    let status = outcome::status(service, &desired, &observed.nodes, &actions, &scaling, &now);
    let rollback = outcome::rollback(service, &desired, &observed.nodes);
    let previous = service.status.clone().unwrap_or_default();
    let unsatisfied = desired.is_err();
    let events = outcome::events(&previous, &status, unsatisfied, &scaling, rollback.as_ref());
    let requeue = outcome::requeue(unsatisfied, &status, observed.next_health_check, &scaling);
    Preview {
        observed,
        desired,
        actions,
        scaling,
        rollback,
        status,
        events,
        requeue,
    }
}
