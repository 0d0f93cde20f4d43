//! The four reconcile loops and what wakes each of them.

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::{Context, application, cloud, service, service_node};
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

/// Runs every loop until a shutdown signal.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let all = watcher::Config::default;
    // A Service wakes for its own changes and its nodes'.
    let services = Controller::new(Api::<Service>::all(client.clone()), all())
        .owns(Api::<ServiceNode>::all(client.clone()), all())
        .shutdown_on_signal()
        .run(service::reconcile, service::error_policy, ctx.clone())
        .for_each(|_| async {});
    let nodes = Controller::new(Api::<ServiceNode>::all(client.clone()), all())
        .shutdown_on_signal()
        .run(
            service_node::reconcile,
            service_node::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // An Application wakes when one of its Services changes.
    let applications = Controller::new(Api::<Application>::all(client.clone()), all())
        .watches(Api::<Service>::all(client.clone()), all(), |svc| {
            let ns = svc.metadata.namespace.clone()?;
            Some(ObjectRef::<Application>::new(&svc.spec.application).within(&ns))
        })
        .shutdown_on_signal()
        .run(
            application::reconcile,
            application::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // Node changes refresh their Cloud's node count; the debounce folds a burst into one pass.
    let clouds = Controller::new(Api::<Cloud>::all(client.clone()), all())
        .watches(Api::<ServiceNode>::all(client.clone()), all(), |node| {
            Some(ObjectRef::<Cloud>::new(&node.spec.cloud))
        })
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .shutdown_on_signal()
        .run(cloud::reconcile, cloud::error_policy, ctx.clone())
        .for_each(|_| async {});
    futures::join!(services, nodes, applications, clouds);
}
