//! The four reconcile loops and what wakes each of them. Every watch reads objects through a
//! `DeserializeGuard`, so one unreadable object never stops a loop.

use std::sync::Arc;
use std::time::Duration;

use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::{Context, application, cloud, guard, service, service_node};
use futures::StreamExt;
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client};

type Guarded<K> = DeserializeGuard<K>;

/// The watch a loop reconciles from, with its cache. `managedFields` are dropped before objects
/// are cached: the loops never read them, and at thousands of nodes they are most of the memory.
fn slim<K>(
    api: Api<Guarded<K>>,
) -> (
    Store<Guarded<K>>,
    impl futures::Stream<Item = Result<Guarded<K>, watcher::Error>>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs every loop until a shutdown signal.
pub async fn run(client: Client, ctx: Arc<Context>) {
    let all = watcher::Config::default;
    // A Service wakes for its own changes and its nodes'.
    let services = {
        let (store, stream) = slim(Api::<Guarded<Service>>::all(client.clone()));
        Controller::for_stream(stream, store)
    }
    .owns(Api::<Guarded<ServiceNode>>::all(client.clone()), all())
    .shutdown_on_signal()
    .run(
        |o, c| guard::reconcile(o, c, service::reconcile),
        |o, e, c| guard::error_policy(o, e, c, service::error_policy),
        ctx.clone(),
    )
    .for_each(|_| async {});
    let nodes = {
        let (store, stream) = slim(Api::<Guarded<ServiceNode>>::all(client.clone()));
        Controller::for_stream(stream, store)
    }
    .shutdown_on_signal()
    .run(
        |o, c| guard::reconcile(o, c, service_node::reconcile),
        |o, e, c| guard::error_policy(o, e, c, service_node::error_policy),
        ctx.clone(),
    )
    .for_each(|_| async {});
    // An Application wakes when one of its Services changes.
    let applications = {
        let (store, stream) = slim(Api::<Guarded<Application>>::all(client.clone()));
        Controller::for_stream(stream, store)
    }
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
    // Nodes created, re-specced or deleted (a new generation; status changes are not) refresh
    // their Cloud's node count and finalizer; the debounce folds a burst into one pass. Status
    // changes would keep resetting the debounce while a service scales, starving the Cloud.
    let node_generations = watcher(Api::<Guarded<ServiceNode>>::all(client.clone()), all())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    let clouds = {
        let (store, stream) = slim(Api::<Guarded<Cloud>>::all(client.clone()));
        Controller::for_stream(stream, store)
    }
    .watches_stream(node_generations, |node| {
        Some(ObjectRef::<Guarded<Cloud>>::new(&node.0.ok()?.spec.cloud))
    })
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
