//! The Application loop: aggregate the Services' phases into status; on deletion, delete the
//! Services and keep the finalizer until they (and so their VMs) are gone.
//!
//! Network: the API server only.

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::labels::FINALIZER_SERVICES;
use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{
    Application, ApplicationStatus, Service, ServicePhaseSummary, is_condition_true,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use crate::conditions::{Desired, merge};
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::{Context, finalizers, status_apply};

/// Reconciles one Application.
#[tracing::instrument(skip_all, fields(kind = "Application", namespace = app.namespace().unwrap_or_default(), name = app.name_any()))]
pub async fn reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    reconcile_inner(&app, &ctx).await
}

/// The Services that name `app` as their application, from the watch cache.
fn services_of(ctx: &Context, ns: &str, app: &str) -> Vec<Service> {
    ctx.caches
        .services_in(ns)
        .iter()
        .filter_map(crate::caches::readable)
        .filter(|s| s.spec.application == app)
        .cloned()
        .collect()
}

/// The Services the Application's status counts: not those going (the shared watch announces a
/// Service's deletion, not its removal).
fn staying(services: &[Service]) -> Vec<Service> {
    services
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect()
}

async fn reconcile_inner(app: &Application, ctx: &Context) -> Result<Requeue, Error> {
    let ns = app.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &ns);
    let services = services_of(ctx, &ns, &app.name_any());

    if app.metadata.deletion_timestamp.is_some() {
        if services.is_empty() {
            finalizers::remove(&api, app, FINALIZER_SERVICES).await?;
            return Ok(Requeue::await_change());
        }
        let service_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
        for service in services
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
        {
            match service_api
                .delete(&service.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(service = %service.name_any(), "deleting service of deleted application")
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(e).ctx("delete service", format!("{ns}/{}", service.name_any()));
                }
            }
        }
        return Ok(Requeue::requeue(Duration::from_secs(2)));
    }
    finalizers::add(&api, app, FINALIZER_SERVICES).await?;

    let previous = app.status.clone().unwrap_or_default();
    let status = build_status(
        &previous,
        app.meta().generation,
        &staying(&services),
        &Time(Timestamp::now()),
    );
    if status != previous {
        status_apply::apply(&api, app, &status).await?;
    }
    Ok(Requeue::requeue(Duration::from_secs(300)))
}

/// The Application's status from its Services. Pure.
pub fn build_status(
    previous: &ApplicationStatus,
    generation: Option<i64>,
    services: &[Service],
    now: &Time,
) -> ApplicationStatus {
    let mut phases: Vec<ServicePhaseSummary> = services
        .iter()
        .map(|s| ServicePhaseSummary {
            name: s.name_any(),
            r#type: s.spec.r#type.as_str().into(),
            phase: s
                .status
                .as_ref()
                .map(|st| st.phase.as_str())
                .unwrap_or("INIT")
                .into(),
        })
        .collect();
    phases.sort_by(|a, b| a.name.cmp(&b.name));
    let ready = services
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| is_condition_true(&st.conditions, READY))
        })
        .count();
    let all_ready = ready == services.len();
    let condition = if all_ready {
        Desired::new(
            READY,
            true,
            "AllServicesReady",
            format!("{ready} of {} services ready", services.len()),
        )
    } else {
        let waiting: Vec<&str> = phases
            .iter()
            .filter(|p| p.phase != "RUNNING" && p.phase != "STOPPED")
            .map(|p| p.name.as_str())
            .collect();
        Desired::new(
            READY,
            false,
            "ServicesNotReady",
            format!("not ready: {}", waiting.join(", ")),
        )
    };
    ApplicationStatus {
        services: services.len() as i32,
        ready_services: ready as i32,
        service_phases: phases,
        observed_generation: generation,
        conditions: merge(&previous.conditions, vec![condition], generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::{Phase, ServiceSpec, ServiceStatus};

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn service(name: &str, phase: Option<Phase>, ready: bool) -> Service {
        let spec: ServiceSpec = serde_json::from_value(
            serde_json::json!({"application": "demo", "type": "helloworld"}),
        )
        .unwrap();
        let mut s = Service::new(name, spec);
        s.status = phase.map(|phase| ServiceStatus {
            phase,
            conditions: merge(
                &[],
                vec![Desired::new(READY, ready, "x", "")],
                Some(1),
                &at(0),
            ),
            ..Default::default()
        });
        s
    }

    #[test]
    fn aggregates_its_services() {
        let services = vec![
            service("web", Some(Phase::Running), true),
            service("db", Some(Phase::Prologue), false),
            service("new", None, false),
        ];
        let s = build_status(&Default::default(), Some(4), &services, &at(10));
        assert_eq!((s.services, s.ready_services), (3, 1));
        let phases: Vec<(&str, &str)> = s
            .service_phases
            .iter()
            .map(|p| (p.name.as_str(), p.phase.as_str()))
            .collect();
        assert_eq!(
            phases,
            vec![("db", "PROLOGUE"), ("new", "INIT"), ("web", "RUNNING")]
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].message, "not ready: db, new");
        assert_eq!(s.observed_generation, Some(4));

        let all = vec![
            service("web", Some(Phase::Running), true),
            service("batch", Some(Phase::Stopped), true),
        ];
        let s2 = build_status(&s, Some(4), &all, &at(20));
        assert_eq!(s2.conditions[0].reason, "AllServicesReady");
        assert_eq!(s2.conditions[0].last_transition_time, at(20), "flipped");
        let s3 = build_status(&s2, Some(4), &all, &at(30));
        assert_eq!(s3, s2, "nothing changed, nothing to write");
    }
}
