//! The Secrets a Service's type keeps its credentials in (mysql: `<service>-mysql` with
//! `username` and `password`; kvstore: `<service>-kvstore` with `password`; mapreduce:
//! `<service>-mapreduce` with Spark's shared `secret`), created once with a random password unless they exist, owned by
//! the Service so that they go with it. A Secret someone made first is kept as it is.

use std::collections::HashSet;
use std::sync::Mutex;

use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::types::{kvstore, mapreduce, mysql};
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
    let service_name = service.name_any();
    let (name, fields) = match service.spec.r#type {
        ServiceType::Mysql => (
            mysql::secret_name(&service_name),
            vec![
                ("username", MYSQL_USER.to_string()),
                ("password", mysql::random_password()),
            ],
        ),
        ServiceType::Kvstore => (
            kvstore::secret_name(&service_name),
            vec![("password", mysql::random_password())],
        ),
        ServiceType::Mapreduce => (
            mapreduce::secret_name(&service_name),
            vec![("secret", mysql::random_password())],
        ),
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
