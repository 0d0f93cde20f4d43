//! The four reconcile loops and what wakes each of them. One watch per kind fills the shared
//! caches ([`Caches`]) and feeds every loop that listens to that kind. Every watch reads objects
//! through a `DeserializeGuard`, so one unreadable object never stops a loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use conpaas_reconcilers::caches::Caches;
use conpaas_reconcilers::{Context, application, cloud, guard, service, service_node};
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};

type Guarded<K> = DeserializeGuard<K>;

/// What fills the loops' caches ([`Caches`]): one writer per kind, given to its watch.
pub struct Writers {
    services: Writer<Guarded<Service>>,
    nodes: Writer<Guarded<ServiceNode>>,
    applications: Writer<Guarded<Application>>,
    clouds: Writer<Guarded<Cloud>>,
}

/// Events a cache may hold back for its slowest subscriber before its watch waits.
const SHARED_BUFFER: usize = 1024;

/// The caches every loop reads, empty until [`run`] starts their watches.
pub fn caches() -> (Caches, Writers) {
    let (services, services_writer) = reflector::store_shared(SHARED_BUFFER);
    let (nodes, nodes_writer) = reflector::store_shared(SHARED_BUFFER);
    let (applications, applications_writer) = reflector::store_shared(SHARED_BUFFER);
    let (clouds, clouds_writer) = reflector::store_shared(SHARED_BUFFER);
    (
        Caches {
            services,
            nodes,
            applications,
            clouds,
        },
        Writers {
            services: services_writer,
            nodes: nodes_writer,
            applications: applications_writer,
            clouds: clouds_writer,
        },
    )
}

/// The one watch of a kind: it fills the kind's cache, then hands each change to the loops that
/// subscribed, so a loop never hears of a change its cache does not show yet. `managedFields`
/// are dropped before objects are cached: the loops never read them, and at thousands of nodes
/// they are most of the memory.
fn watch<K>(api: Api<Guarded<K>>, writer: Writer<Guarded<K>>) -> impl Future<Output = ()>
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
        .reflect_shared(writer)
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch failed; retrying with backoff");
            }
        })
}

/// Passes an object on only when `key` of it changed since the last one of the same name.
fn changed_by<K, T>(
    stream: impl Stream<Item = Arc<Guarded<K>>>,
    key: impl Fn(&K) -> T,
) -> impl Stream<Item = Arc<Guarded<K>>>
where
    K: kube::Resource<DynamicType = ()>,
    T: PartialEq,
{
    let mut seen: HashMap<(Option<String>, String), T> = HashMap::new();
    stream.filter(move |object| {
        let fresh = match &object.0 {
            Ok(o) => {
                let name = (o.meta().namespace.clone(), o.name_any());
                let now = key(o);
                let changed = seen.get(&name) != Some(&now);
                seen.insert(name, now);
                changed
            }
            Err(_) => false,
        };
        std::future::ready(fresh)
    })
}

/// A Cloud's generation and whether it is Ready: the changes that may unblock its nodes.
fn cloud_spec_or_readiness(cloud: &Cloud) -> (Option<i64>, Option<String>) {
    let ready = cloud.status.as_ref().and_then(|s| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::READY,
        )
        .map(|c| c.status.clone())
    });
    (cloud.metadata.generation, ready)
}

fn subscribe<K>(writer: &Writer<Guarded<K>>) -> impl Stream<Item = Arc<Guarded<K>>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    writer
        .subscribe()
        .expect("the caches are shared stores, which take subscribers")
}

/// Runs every loop until a shutdown signal: one watch per kind feeds every loop.
pub async fn run(client: Client, ctx: Arc<Context>, writers: Writers, ready: Arc<AtomicBool>) {
    let caches = ctx.caches.clone();
    let Writers {
        services: services_w,
        nodes: nodes_w,
        applications: applications_w,
        clouds: clouds_w,
    } = writers;

    // A Service wakes for its own changes and its nodes'.
    let services = Controller::for_shared_stream(subscribe(&services_w), caches.services.clone())
        .owns_shared_stream(subscribe(&nodes_w))
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // A node waiting on its Cloud (a permanent refusal: credentials, image) wakes when the
    // Cloud's spec changes or it turns Ready again (credentials fixed in its Secret).
    let nodes_of_cloud = caches.nodes.clone();
    let nodes = Controller::for_shared_stream(subscribe(&nodes_w), caches.nodes.clone())
        .watches_shared_stream(
            changed_by(subscribe(&clouds_w), cloud_spec_or_readiness),
            move |cloud| {
                let name = cloud.0.as_ref().map(|c| c.name_any()).unwrap_or_default();
                nodes_of_cloud
                    .state()
                    .into_iter()
                    .filter(|n| n.0.as_ref().is_ok_and(|n| n.spec.cloud == name))
                    .map(|n| ObjectRef::from_obj(n.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, service_node::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    // An Application wakes when one of its Services changes.
    let applications =
        Controller::for_shared_stream(subscribe(&applications_w), caches.applications.clone())
            .watches_shared_stream(subscribe(&services_w), |svc| {
                let svc = svc.0.as_ref().ok()?;
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
    let node_generations = changed_by(subscribe(&nodes_w), |n: &ServiceNode| {
        (
            n.metadata.generation,
            n.metadata.deletion_timestamp.is_some(),
        )
    });
    let clouds = Controller::for_shared_stream(subscribe(&clouds_w), caches.clouds.clone())
        .watches_shared_stream(node_generations, |node| {
            Some(ObjectRef::<Guarded<Cloud>>::new(
                &node.0.as_ref().ok()?.spec.cloud,
            ))
        })
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .shutdown_on_signal()
        .run(
            |o, c| guard::reconcile(o, c, cloud::reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let watches = futures::future::join4(
        watch(Api::all(client.clone()), services_w),
        watch(Api::all(client.clone()), nodes_w),
        watch(Api::all(client.clone()), applications_w),
        watch(Api::all(client.clone()), clouds_w),
    );
    // Ready (for /readyz) once every cache holds the whole cluster's objects.
    let synced = async move {
        let waits = futures::join!(
            caches.services.wait_until_ready(),
            caches.nodes.wait_until_ready(),
            caches.applications.wait_until_ready(),
            caches.clouds.wait_until_ready(),
        );
        if let (Ok(()), Ok(()), Ok(()), Ok(())) = waits {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("every watch has synced");
        }
    };
    // The loops end on a shutdown signal; the watches end with them.
    tokio::select! {
        _ = async { futures::join!(services, nodes, applications, clouds, synced) } => {}
        _ = watches => {}
    }
}
