//! The four reconcile loops and what wakes each of them. Every watch reads objects through a
//! `DeserializeGuard`, so one unreadable object never stops a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A Cloud's generation and whether it is Ready: the changes that may unblock its nodes.
fn cloud_spec_or_readiness(cloud: &Guarded<Cloud>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let cloud = cloud.0.as_ref().ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cloud.metadata.generation.hash(&mut hasher);
    let ready = cloud.status.as_ref().and_then(|s| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::READY,
        )
        .map(|c| c.status.clone())
    });
    ready.hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs every loop until a shutdown signal.
pub async fn run(client: Client, ctx: Arc<Context>, ready: Arc<AtomicBool>) {
    let all = watcher::Config::default;
    // A Service wakes for its own changes and its nodes'.
    let (service_store, service_stream) = slim(Api::<Guarded<Service>>::all(client.clone()));
    let services = Controller::for_stream(service_stream, service_store.clone())
        .owns(Api::<Guarded<ServiceNode>>::all(client.clone()), all())
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // A node waiting on its Cloud (a permanent refusal: credentials, image) wakes when the
    // Cloud's spec changes or it turns Ready again (credentials fixed in its Secret).
    let (node_store, node_stream) = slim(Api::<Guarded<ServiceNode>>::all(client.clone()));
    let cloud_turns = watcher(Api::<Guarded<Cloud>>::all(client.clone()), all())
        .default_backoff()
        .touched_objects()
        .predicate_filter(cloud_spec_or_readiness, Default::default());
    let nodes_of_cloud = node_store.clone();
    let nodes = Controller::for_stream(node_stream, node_store.clone())
        .watches_stream(cloud_turns, move |cloud| {
            let name = cloud.0.ok().map(|c| c.name_any()).unwrap_or_default();
            nodes_of_cloud
                .state()
                .into_iter()
                .filter(|n| n.0.as_ref().is_ok_and(|n| n.spec.cloud == name))
                .map(|n| ObjectRef::from_obj(n.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service_node::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // An Application wakes when one of its Services changes.
    let (application_store, application_stream) =
        slim(Api::<Guarded<Application>>::all(client.clone()));
    let applications = Controller::for_stream(application_stream, application_store.clone())
        .watches(Api::<Guarded<Service>>::all(client.clone()), all(), |svc| {
            let svc = svc.0.ok()?;
            let ns = svc.metadata.namespace.clone()?;
            Some(ObjectRef::<Guarded<Application>>::new(&svc.spec.application).within(&ns))
        })
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, application::reconcile),
            guard::error_policy,
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
    let (cloud_store, cloud_stream) = slim(Api::<Guarded<Cloud>>::all(client.clone()));
    let clouds = Controller::for_stream(cloud_stream, cloud_store.clone())
        .watches_stream(node_generations, |node| {
            Some(ObjectRef::<Guarded<Cloud>>::new(&node.0.ok()?.spec.cloud))
        })
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, cloud::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // Ready (for /readyz) once every loop's cache holds the whole cluster's objects.
    let synced = async move {
        let waits = futures::join!(
            service_store.wait_until_ready(),
            node_store.wait_until_ready(),
            application_store.wait_until_ready(),
            cloud_store.wait_until_ready(),
        );
        if let (Ok(()), Ok(()), Ok(()), Ok(())) = waits {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("every watch has synced");
        }
    };
    futures::join!(services, nodes, applications, clouds, synced);
}
