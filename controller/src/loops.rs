//! The five reconcile loops and what wakes each of them. One watch per kind fills that kind's
//! cache ([`Caches`]), which every loop reads, and then wakes the loops that care. Every watch
//! reads objects through a `DeserializeGuard`, so one unreadable object never stops a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use conpaas_crds::v1alpha1::{
    Application, CREDIT_ACCOUNT_NAME, Cloud, CreditAccount, Service, ServiceNode,
};
use conpaas_reconcilers::caches::Caches;
use conpaas_reconcilers::{Context, application, cloud, credits, guard, service, service_node};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

type Guarded<K> = DeserializeGuard<K>;
/// What wakes a loop: objects of one kind, in the order its watch saw them.
type Trigger<K> = BoxStream<'static, Result<Guarded<K>, watcher::Error>>;

/// What fills the loops' caches ([`Caches`]): one writer per kind, given to its watch.
pub struct Writers {
    services: Writer<Guarded<Service>>,
    nodes: Writer<Guarded<ServiceNode>>,
    applications: Writer<Guarded<Application>>,
    clouds: Writer<Guarded<Cloud>>,
    credit_accounts: Writer<Guarded<CreditAccount>>,
    namespaces: Writer<Guarded<Namespace>>,
}

/// The caches every loop reads, empty until [`run`] starts their watches.
pub fn caches() -> (Caches, Writers) {
    let (services, services_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let (applications, applications_writer) = reflector::store();
    let (clouds, clouds_writer) = reflector::store();
    let (credit_accounts, credit_accounts_writer) = reflector::store();
    let (namespaces, namespaces_writer) = reflector::store();
    (
        Caches {
            services,
            nodes,
            applications,
            clouds,
            credit_accounts,
            namespaces,
            synced: Default::default(),
        },
        Writers {
            services: services_writer,
            nodes: nodes_writer,
            applications: applications_writer,
            clouds: clouds_writer,
            credit_accounts: credit_accounts_writer,
            namespaces: namespaces_writer,
        },
    )
}

/// A kind's one watch: every object it sees goes into the kind's cache first, then to each of
/// `subscribers` trigger streams, in order. A loop woken by a trigger therefore reads a cache at
/// least as new as what woke it, and each kind is listed and held in memory once however many
/// loops it wakes. `managedFields` are dropped before objects are cached: the loops never read
/// them, and at thousands of nodes they are most of the memory. The returned future drives the
/// watch (retrying with backoff when the API server fails) and counts its first full listing in
/// `synced`.
fn shared_watch<K>(
    client: &Client,
    writer: Writer<Guarded<K>>,
    synced: Arc<AtomicUsize>,
    subscribers: usize,
) -> (BoxFuture<'static, ()>, Vec<Trigger<K>>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| mpsc::unbounded_channel::<Guarded<K>>())
        .unzip();
    let kind = K::kind(&()).into_owned();
    let mut counted = false;
    // A (re)listing reaches the cache all at once when it is complete; its objects wake the
    // loops then, or a loop woken earlier would not find a new object and drop the wake-up.
    let mut listed = Vec::new();
    let driver = watcher(
        Api::<Guarded<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|object| object.managed_fields_mut().clear())
    .reflect(writer)
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::InitApply(o)) => listed.push(o),
            Ok(watcher::Event::InitDone) => {
                if !counted {
                    counted = true;
                    synced.fetch_add(1, Ordering::Release);
                }
                for o in listed.drain(..) {
                    wake(&senders, o);
                }
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => wake(&senders, o),
            Ok(watcher::Event::Init) => listed.clear(),
            Err(e) => {
                tracing::warn!(error = %e, kind = %kind, "watch failed; retrying with backoff")
            }
        }
        futures::future::ready(())
    })
    .boxed();
    let triggers = receivers
        .into_iter()
        .map(|rx| {
            futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|object| (Ok(object), rx))
            })
            .boxed()
        })
        .collect();
    (driver, triggers)
}

/// Hands an object to every subscriber of its watch.
fn wake<K: Clone>(subscribers: &[mpsc::UnboundedSender<K>], object: K) {
    for subscriber in subscribers {
        // A subscriber gone means its loop stopped (shutdown).
        let _ = subscriber.send(object.clone());
    }
}

/// The objects of a cache (those that could be read) for which `keep` holds: whom a change
/// of another object wakes.
fn cached_where<K>(
    cache: &conpaas_reconcilers::caches::Cache<K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    cache
        .state()
        .into_iter()
        .filter(|o| o.0.as_ref().is_ok_and(&keep))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// A hash of what a watch's subscribers read of an object: a change of it wakes them.
fn fingerprint(facts: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    facts.hash(&mut hasher);
    hasher.finish()
}

/// A Cloud's generation and whether it is Ready: the changes that may unblock its nodes.
fn cloud_spec_or_readiness(cloud: &Guarded<Cloud>) -> Option<u64> {
    let cloud = cloud.0.as_ref().ok()?;
    let ready = cloud.status.as_ref().and_then(|s| {
        conpaas_crds::v1alpha1::find_condition(
            &s.conditions,
            conpaas_crds::labels::conditions::READY,
        )
        .map(|c| c.status.clone())
    });
    Some(fingerprint(&(cloud.metadata.generation, ready)))
}

/// What the nodes of linking Services read of a Service: its endpoint, its credentials'
/// version, its settings (the database).
fn what_links_read(service: &Guarded<Service>) -> Option<u64> {
    let service = service.0.as_ref().ok()?;
    let status = service.status.as_ref();
    Some(fingerprint(&(
        status.and_then(|s| s.endpoint.as_ref()),
        status.and_then(|s| s.credentials_version.as_ref()),
        &service.spec.settings,
    )))
}

/// What the credits loop charges by: a node's identity, owner, VM, deletion and the VM
/// confirmed gone.
fn metered_facts(node: &Guarded<ServiceNode>) -> Option<u64> {
    let node = node.0.as_ref().ok()?;
    let status = node.status.as_ref();
    Some(fingerprint(&(
        &node.metadata.uid,
        node.metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        node.metadata.owner_references.as_ref().map(|o| o.len()),
        status.is_some_and(|s| s.provider_id.is_some() || s.create_requested_at.is_some()),
        status
            .and_then(|s| s.terminated_at.as_ref())
            .map(|t| t.0.as_second()),
    )))
}

/// What nodes and Services read of a credit account: which nodes are charged, and whether it
/// ran out.
fn admission_facts(account: &Guarded<CreditAccount>) -> Option<u64> {
    let account = account.0.as_ref().ok()?;
    let status = account.status.as_ref();
    Some(fingerprint(&(
        status.map(|s| s.exhausted.is_some()),
        status.map(|s| {
            s.ledger
                .iter()
                .map(|c| (&c.uid, c.end.is_some()))
                .collect::<Vec<_>>()
        }),
    )))
}

/// Runs every loop until a shutdown signal. Each kind has one watch ([`shared_watch`]) that
/// fills its cache and wakes the loops that care: a Service for its own changes, its nodes' and
/// those of the Services it links to,
/// a node for its own and its Cloud's, an Application for its Services', a Cloud for its nodes'
/// generations.
pub async fn run(client: Client, ctx: Arc<Context>, writers: Writers, ready: Arc<AtomicBool>) {
    let caches = ctx.caches.clone();
    let synced = || caches.synced.clone();
    let (service_watch, service_triggers) = shared_watch(&client, writers.services, synced(), 3);
    let (node_watch, node_triggers) = shared_watch(&client, writers.nodes, synced(), 4);
    let (account_watch, account_triggers) =
        shared_watch(&client, writers.credit_accounts, synced(), 3);
    let (namespace_watch, _) = shared_watch(&client, writers.namespaces, synced(), 0);
    let (cloud_watch, cloud_triggers) = shared_watch(&client, writers.clouds, synced(), 2);
    let (application_watch, application_triggers) =
        shared_watch(&client, writers.applications, synced(), 1);
    let [
        services_of_service_loop,
        services_of_links,
        services_of_applications,
    ] = take(service_triggers);
    let [
        nodes_of_node_loop,
        nodes_of_services,
        nodes_of_clouds,
        nodes_of_credits,
    ] = take(node_triggers);
    let [
        accounts_of_credit_loop,
        accounts_of_nodes,
        accounts_of_services,
    ] = take(account_triggers);
    let [clouds_of_cloud_loop, clouds_of_nodes] = take(cloud_triggers);
    let [applications_of_application_loop] = take(application_triggers);

    // A linked Service's new endpoint or credentials reach the nodes of the Services linking to
    // it at once, not at their next periodic pass.
    let linking = caches.services.clone();
    let services_of_account = caches.services.clone();
    let services = Controller::for_stream(services_of_service_loop, caches.services.clone())
        .owns_stream(nodes_of_services)
        // A namespace whose credits run out or come back stops or starts its Services at once.
        .watches_stream(
            accounts_of_services.predicate_filter(admission_facts, Default::default()),
            move |account| {
                let ns = account
                    .0
                    .ok()
                    .and_then(|a| a.namespace())
                    .unwrap_or_default();
                cached_where(&services_of_account, |s| {
                    s.namespace().as_deref() == Some(&ns)
                })
            },
        )
        .watches_stream(
            services_of_links.predicate_filter(what_links_read, Default::default()),
            move |target| {
                let target = target.0.ok();
                let (ns, name) = target
                    .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                    .unwrap_or_default();
                cached_where(&linking, |s| {
                    s.namespace().as_deref() == Some(ns.as_str())
                        && s.spec.links.iter().any(|l| l.service == name)
                })
            },
        );
    // A node waiting on its Cloud (a permanent refusal: credentials, image) wakes when the
    // Cloud's spec changes or it turns Ready again (credentials fixed in its Secret).
    let cloud_turns = clouds_of_nodes.predicate_filter(cloud_spec_or_readiness, Default::default());
    let nodes_of_cloud = caches.nodes.clone();
    let nodes_of_account = caches.nodes.clone();
    let nodes = Controller::for_stream(nodes_of_node_loop, caches.nodes.clone())
        .watches_stream(cloud_turns, move |cloud| {
            let name = cloud.0.ok().map(|c| c.name_any()).unwrap_or_default();
            cached_where(&nodes_of_cloud, |n| n.spec.cloud == name)
        })
        // A node waits for its first hour to be charged before its VM is made, and for its
        // charge to be closed before its finalizer goes.
        .watches_stream(
            accounts_of_nodes.predicate_filter(admission_facts, Default::default()),
            move |account| {
                let ns = account
                    .0
                    .ok()
                    .and_then(|a| a.namespace())
                    .unwrap_or_default();
                cached_where(&nodes_of_account, |n| {
                    n.namespace().as_deref() == Some(&ns)
                        && (n.metadata.deletion_timestamp.is_some()
                            || n.status.as_ref().is_none_or(|s| s.provider_id.is_none()))
                })
            },
        );
    let credit_accounts =
        Controller::for_stream(accounts_of_credit_loop, caches.credit_accounts.clone())
            .watches_stream(
                nodes_of_credits.predicate_filter(metered_facts, Default::default()),
                |node| {
                    let ns = node.0.ok()?.namespace()?;
                    Some(ObjectRef::<Guarded<CreditAccount>>::new(CREDIT_ACCOUNT_NAME).within(&ns))
                },
            );
    let applications = Controller::for_stream(
        applications_of_application_loop,
        caches.applications.clone(),
    )
    .watches_stream(services_of_applications, |svc| {
        let svc = svc.0.ok()?;
        let ns = svc.metadata.namespace.clone()?;
        Some(ObjectRef::<Guarded<Application>>::new(&svc.spec.application).within(&ns))
    });
    // Nodes created, re-specced or deleted (a new generation; status changes are not) refresh
    // their Cloud's node count and finalizer; the debounce folds a burst into one pass. Status
    // changes would keep resetting the debounce while a service scales, starving the Cloud.
    let node_generations =
        nodes_of_clouds.predicate_filter(predicates::generation, Default::default());
    let clouds = Controller::for_stream(clouds_of_cloud_loop, caches.clouds.clone())
        .watches_stream(node_generations, |node| {
            Some(ObjectRef::<Guarded<Cloud>>::new(&node.0.ok()?.spec.cloud))
        })
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)));
    let services = drive(services, &ctx, service::reconcile);
    let nodes = drive(nodes, &ctx, service_node::reconcile);
    let applications = drive(applications, &ctx, application::reconcile);
    let clouds = drive(clouds, &ctx, cloud::reconcile);
    let credit_accounts = drive(credit_accounts, &ctx, credits::reconcile);
    // Ready (for /readyz) once every cache holds the whole cluster's objects.
    let synced = async move {
        while !caches.ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!("every watch has synced");
    };
    let watches = futures::future::join_all([
        service_watch,
        node_watch,
        cloud_watch,
        application_watch,
        account_watch,
        namespace_watch,
    ]);
    let loops = futures::future::join_all([
        services.boxed(),
        nodes.boxed(),
        applications.boxed(),
        clouds.boxed(),
        credit_accounts.boxed(),
        synced.boxed(),
    ]);
    // The loops end on a shutdown signal; the watches then have no one left to feed.
    tokio::select! {
        _ = loops => {}
        _ = watches => tracing::error!("a watch ended"),
    }
}

/// Runs a loop until a shutdown signal, every reconcile through [`guard`].
async fn drive<K, F, Fut>(controller: Controller<Guarded<K>>, ctx: &Arc<Context>, reconcile: F)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Requeue, conpaas_reconcilers::Error>> + Send + 'static,
{
    controller
        .shutdown_on_signal()
        .run(
            move |o, c| guard::reconcile(o, c, reconcile),
            guard::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await
}

/// The triggers of a shared watch as an array, one per subscriber.
fn take<K, const N: usize>(triggers: Vec<Trigger<K>>) -> [Trigger<K>; N] {
    triggers
        .try_into()
        .unwrap_or_else(|_| unreachable!("shared_watch makes one trigger per subscriber"))
}
