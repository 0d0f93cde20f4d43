//! Makes the API server proxy `code.conpaas.io` to this controller: the APIService (with the
//! serving certificate as its CA bundle) and, when the controller runs outside the cluster
//! (`make run`, the tests), a Service of type ExternalName that points at this host. In a
//! cluster the Helm chart makes the APIService (so an uninstall removes it) and a ClusterIP
//! Service for the controller's pods; the controller applies the same APIService with its CA
//! bundle. Only the leader is ready, so only the leader receives requests.

use anyhow::Context as _;
use conpaas_crds::code_api::{API_SERVICE, GROUP, VERSION};
use conpaas_crds::labels::MANAGER_CONTROLLER;
use conpaas_reconcilers::with_type;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIService, APIServiceSpec, ServiceReference,
};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

/// Where the API server finds the code API.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    /// The port the API server dials (the Service's port, or this process's with an external
    /// name).
    pub port: i32,
    /// Outside a cluster: the host name the Service points at.
    pub external_name: Option<&'a str>,
}

pub async fn register(client: &Client, target: &Target<'_>, ca_bundle: &str) -> anyhow::Result<()> {
    let pp = PatchParams::apply(MANAGER_CONTROLLER).force();
    if let Some(host) = target.external_name {
        let service = Service {
            metadata: ObjectMeta {
                name: Some(target.service.into()),
                namespace: Some(target.namespace.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(host.into()),
                ports: Some(vec![ServicePort {
                    name: Some("https".into()),
                    port: target.port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Service>::namespaced(client.clone(), target.namespace)
            .patch(target.service, &pp, &Patch::Apply(with_type(&service)))
            .await
            .with_context(|| format!("apply Service {}/{}", target.namespace, target.service))?;
    }
    let api_service = APIService {
        metadata: ObjectMeta {
            name: Some(API_SERVICE.into()),
            ..Default::default()
        },
        spec: Some(APIServiceSpec {
            group: Some(GROUP.into()),
            version: Some(VERSION.into()),
            group_priority_minimum: 1000,
            version_priority: 15,
            ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
            service: Some(ServiceReference {
                namespace: Some(target.namespace.into()),
                name: Some(target.service.into()),
                port: Some(target.port),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<APIService>::all(client.clone())
        .patch(API_SERVICE, &pp, &Patch::Apply(with_type(&api_service)))
        .await
        .with_context(|| format!("apply APIService {API_SERVICE}"))?;
    Ok(())
}
