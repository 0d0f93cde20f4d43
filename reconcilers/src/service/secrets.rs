//! The Secret a Service's type keeps its credentials in (its descriptor's `credentials`: mysql's
//! `<service>-mysql` with `username` and `password`, ...), created once unless it exists, owned
//! by the Service so that it goes with it. A Secret someone made first is kept as it is.

use std::collections::HashSet;
use std::sync::Mutex;

use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::v1alpha1::Service;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::Context;
use crate::error::{Error, KubeResultExt};

/// The Services (by UID) whose Secret this controller already made or found: one create per
/// Service and controller start, not one per reconcile.
#[derive(Default)]
pub struct Made(Mutex<HashSet<String>>);

/// Makes the Service's credentials Secret unless it was made already.
pub async fn ensure(ctx: &Context, service: &Service) -> Result<(), Error> {
    let service_name = service.name_any();
    let Some(credentials) = service.spec.r#type.descriptor().credentials else {
        return Ok(());
    };
    let (name, fields) = (
        credentials.secret_name(&service_name),
        credentials.initial_values(),
    );
    let uid = service.uid().unwrap_or_default();
    if lock(&ctx.service_secrets).contains(&uid) {
        return Ok(());
    }
    let ns = service.namespace().unwrap_or_default();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(LABEL_SERVICE.to_string(), service.name_any())].into()),
            owner_references: service.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        string_data: Some(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => tracing::info!(secret = %name, "credentials made"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).ctx("create secret", format!("{ns}/{name}")),
    }
    lock(&ctx.service_secrets).insert(uid);
    Ok(())
}

fn lock(made: &Made) -> std::sync::MutexGuard<'_, HashSet<String>> {
    made.0.lock().unwrap_or_else(|p| p.into_inner())
}
