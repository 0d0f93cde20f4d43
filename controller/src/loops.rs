//! The four reconcile loops and what wakes each of them. Every watch reads objects through a
//! `DeserializeGuard`, so one unreadable object never stops a loop.

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::{Context, application, cloud, guard, service, service_node};
use futures::StreamExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

type Guarded<K> = DeserializeGuard<K>;

/// Runs every loop until a shutdown signal.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let all = watcher::Config::default;
    // A Service wakes for its own changes and its nodes'.
    let services = Controller::new(Api::<Guarded<Service>>::all(client.clone()), all())
        .owns(Api::<Guarded<ServiceNode>>::all(client.clone()), all())
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service::reconcile),
            |o, e, c| guard::error_policy(o, e, c, service::error_policy),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let nodes = Controller::new(Api::<Guarded<ServiceNode>>::all(client.clone()), all())
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service_node::reconcile),
            |o, e, c| guard::error_policy(o, e, c, service_node::error_policy),
            ctx.clone(),
        )
        .for_each(|_| async {});
    // An Application wakes when one of its Services changes.
    let applications = Controller::new(Api::<Guarded<Application>>::all(client.clone()), all())
        .watches(Api::<Guarded<Service>>::all(client.clone()), all(), |svc| {
            let svc = svc.0.ok()?;
            let ns = svc.metadata.namespace.clone()?;
            Some(ObjectRef::<Guarded<Application>>::new(&svc.spec.application).within(&ns))
        })
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, application::reconcile),
            |o, e, c| guard::error_policy(o, e, c, application::error_policy),
            ctx.clone(),
        )
        .for_each(|_| async {});
    // Node changes refresh their Cloud's node count; the debounce folds a burst into one pass.
    let clouds = Controller::new(Api::<Guarded<Cloud>>::all(client.clone()), all())
        .watches(
            Api::<Guarded<ServiceNode>>::all(client.clone()),
            all(),
            |node| Some(ObjectRef::<Guarded<Cloud>>::new(&node.0.ok()?.spec.cloud)),
        )
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, cloud::reconcile),
            |o, e, c| guard::error_policy(o, e, c, cloud::error_policy),
            ctx.clone(),
        )
        .for_each(|_| async {});
    futures::join!(services, nodes, applications, clouds);
}
