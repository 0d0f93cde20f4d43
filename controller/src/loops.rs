//! The four reconcile loops and what wakes each of them. The caches every loop reads
//! ([`Caches`]) are filled by the watches that wake a loop for another kind. Every watch reads objects through a
//! `DeserializeGuard`, so one unreadable object never stops a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::caches::Caches;
use conpaas_reconcilers::{Context, application, cloud, guard, service, service_node};
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client};

type Guarded<K> = DeserializeGuard<K>;

/// What fills the loops' caches ([`Caches`]): one writer per kind, given to its watch.
pub struct Writers {
    services: Writer<Guarded<Service>>,
    nodes: Writer<Guarded<ServiceNode>>,
    applications: Writer<Guarded<Application>>,
    clouds: Writer<Guarded<Cloud>>,
}

/// The caches every loop reads, empty until [`run`] starts their watches.
pub fn caches() -> (Caches, Writers) {
    let (services, services_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let (applications, applications_writer) = reflector::store();
    let (clouds, clouds_writer) = reflector::store();
    (
        Caches {
            services,
            nodes,
            applications,
            clouds,
            synced: Default::default(),
        },
        Writers {
            services: services_writer,
            nodes: nodes_writer,
            applications: applications_writer,
            clouds: clouds_writer,
        },
    )
}

/// A loop's own watch, filling its kind's cache. `managedFields` are dropped before objects are
/// cached: the loops never read them, and at thousands of nodes they are most of the memory.
fn slim<K>(
    api: Api<Guarded<K>>,
    writer: Writer<Guarded<K>>,
    synced: Option<Arc<AtomicUsize>>,
) -> impl Stream<Item = Result<Guarded<K>, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .inspect({
            let mut counted = false;
            move |event| {
                if let (Ok(watcher::Event::InitDone), false, Some(synced)) =
                    (event, counted, &synced)
                {
                    counted = true;
                    synced.fetch_add(1, Ordering::Release);
                }
            }
        })
        .touched_objects()
}

/// A Cloud's generation and whether it is Ready: the changes that may unblock its nodes.
fn cloud_spec_or_readiness(cloud: &Guarded<Cloud>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let cloud = cloud.0.as_ref().ok()?;
    let ready = cloud.status.as_ref().and_then(|s| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::READY,
        )
        .map(|c| c.status.clone())
    });
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (cloud.metadata.generation, ready).hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs every loop until a shutdown signal. The caches are filled by the watches that wake a
/// loop for another kind (a Service for its nodes, a node for its Cloud, an Application for its
/// Services), so a woken loop reads at least what woke it; each loop's watch of its own kind
/// keeps a store of its own.
pub async fn run(client: Client, ctx: Arc<Context>, writers: Writers, ready: Arc<AtomicBool>) {
    let all = watcher::Config::default;
    let caches = ctx.caches.clone();

    // A Service wakes for its own changes and its nodes'. The watch that wakes it for a node
    // fills the node cache it reads, so it never judges a node by an older copy than the one
    // that woke it. (The loops' own watches keep stores of their own.)
    let (service_store, service_writer) = reflector::store();
    let services = Controller::for_stream(
        slim(Api::all(client.clone()), service_writer, None),
        service_store,
    )
    .owns_stream(slim(
        Api::all(client.clone()),
        writers.nodes,
        Some(caches.synced.clone()),
    ))
    .shutdown_on_signal()
    .run(
        |o, c| guard::reconcile(o, c, service::reconcile),
        guard::error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});
    // A node waiting on its Cloud (a permanent refusal: credentials, image) wakes when the
    // Cloud's spec changes or it turns Ready again (credentials fixed in its Secret). This watch
    // fills the Cloud cache the nodes read, so a woken node sees the Cloud that woke it.
    let cloud_turns = slim(
        Api::all(client.clone()),
        writers.clouds,
        Some(caches.synced.clone()),
    )
    .predicate_filter(cloud_spec_or_readiness, Default::default());
    let nodes_of_cloud = caches.nodes.clone();
    let (node_store, node_writer) = reflector::store();
    let nodes = Controller::for_stream(
        slim(Api::all(client.clone()), node_writer, None),
        node_store,
    )
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
    // An Application wakes when one of its Services changes; that watch fills the Service cache.
    let applications = Controller::for_stream(
        slim(
            Api::all(client.clone()),
            writers.applications,
            Some(caches.synced.clone()),
        ),
        caches.applications.clone(),
    )
    .watches_stream(
        slim(
            Api::<Guarded<Service>>::all(client.clone()),
            writers.services,
            Some(caches.synced.clone()),
        ),
        |svc| {
            let svc = svc.0.ok()?;
            let ns = svc.metadata.namespace.clone()?;
            Some(ObjectRef::<Guarded<Application>>::new(&svc.spec.application).within(&ns))
        },
    )
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
    // The Cloud loop's own watch keeps a store of its own (Clouds are few).
    let (cloud_store, cloud_writer) = reflector::store();
    let clouds = Controller::for_stream(
        slim(Api::all(client.clone()), cloud_writer, None),
        cloud_store,
    )
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
    // Ready (for /readyz) once every cache holds the whole cluster's objects.
    let synced = async move {
        while !caches.ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!("every watch has synced");
    };
    futures::join!(services, nodes, applications, clouds, synced);
}
