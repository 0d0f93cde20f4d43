//! The Secrets a Service's type keeps its credentials in (mysql: `<service>-mysql` with
//! `username` and `password`; kvstore: `<service>-kvstore` with `password`), created once with a random password unless they exist, owned by
//! the Service so that they go with it. A Secret someone made first is kept as it is.

use std::collections::HashSet;
use std::sync::Mutex;

use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::types::{kvstore, mysql};
use conpaas_crds::v1alpha1::{Service, ServiceType};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::Context;
use crate::error::{Error, KubeResultExt};

/// The user a mysql Service's Secret names.
pub const MYSQL_USER: &str = "conpaas";

/// The Services (by UID) whose Secret this controller already made or found: one create per
/// Service and controller start, not one per reconcile.
#[derive(Default)]
pub struct Made(Mutex<HashSet<String>>);

/// Makes the Service's credentials Secret unless it was made already.
pub async fn ensure(ctx: &Context, service: &Service) -> Result<(), Error> {
    let (name, user) = match service.spec.r#type {
        ServiceType::Mysql => (mysql::secret_name(&service.name_any()), Some(MYSQL_USER)),
        ServiceType::Kvstore => (kvstore::secret_name(&service.name_any()), None),
        _ => return Ok(()),
    };
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
            user.map(|u| ("username".to_string(), u.to_string()))
                .into_iter()
                .chain([("password".to_string(), mysql::random_password())])
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
