//! The controller's watch caches, shared by every loop: one watch per kind fills them, and the
//! loops read Services, ServiceNodes, Applications and Clouds from here instead of asking the
//! API server on every reconcile. A short overload of the API server then costs retries of
//! writes only, never a LIST per reconcile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::v1alpha1::{
    Application, CREDIT_ACCOUNT_NAME, Cloud, CreditAccount, Service, ServiceNode,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};

/// How many kinds are watched (Services, ServiceNodes, Applications, Clouds, CreditAccounts,
/// Namespaces).
pub const WATCHES: usize = 6;

/// A cache of one kind; objects that cannot be read are kept as their metadata.
pub type Cache<K> = Store<DeserializeGuard<K>>;

/// Every cache the loops read.
#[derive(Clone)]
pub struct Caches {
    /// Every Service.
    pub services: Cache<Service>,
    /// Every ServiceNode.
    pub nodes: Cache<ServiceNode>,
    /// Every Application.
    pub applications: Cache<Application>,
    /// Every Cloud.
    pub clouds: Cache<Cloud>,
    /// Every tenant's credit account.
    pub credit_accounts: Cache<CreditAccount>,
    /// Every Namespace (their labels decide which Clouds they may use).
    pub namespaces: Cache<Namespace>,
    /// How many of the watches have listed everything once.
    pub synced: Arc<AtomicUsize>,
}

impl Caches {
    /// True once every cache holds the whole cluster's objects: a loop that read a cache still
    /// filling (right after a restart) would see a Service without its nodes. Counted by the
    /// watches themselves: a `Store`'s own readiness wakes only one waiter at a time.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= WATCHES
    }

    /// The credit account of `namespace`; None when the namespace is not metered.
    pub fn credit_account(&self, namespace: &str) -> Option<CreditAccount> {
        let object = self
            .credit_accounts
            .get(&ObjectRef::new(CREDIT_ACCOUNT_NAME).within(namespace))?;
        object.0.as_ref().ok().cloned()
    }

    /// The labels of `namespace` (empty when it is not cached).
    pub fn namespace_labels(&self, namespace: &str) -> std::collections::BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|n| n.0.as_ref().ok()?.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Whether a Service of its namespace owns `node` (its controller reference, same UID): the
    /// controller makes VMs only for such nodes. Read in place, nothing cloned: every node pass
    /// and every credits pass asks.
    pub fn owned_by_a_service(&self, node: &ServiceNode) -> bool {
        let Some(namespace) = node.meta().namespace.as_deref() else {
            return false;
        };
        let Some(owner) = node
            .meta()
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "Service")
        else {
            return false;
        };
        self.services
            .get(&ObjectRef::new(&owner.name).within(namespace))
            .is_some_and(|s| {
                s.0.as_ref()
                    .is_ok_and(|s| s.meta().uid.as_deref() == Some(owner.uid.as_str()))
            })
    }

    /// The readable ServiceNodes of a namespace.
    pub fn nodes_in(&self, namespace: &str) -> Vec<Arc<DeserializeGuard<ServiceNode>>> {
        in_namespace(&self.nodes, namespace)
    }

    /// The Cloud of this name.
    pub fn cloud(&self, name: &str) -> Option<Cloud> {
        let object = self.clouds.get(&ObjectRef::new(name))?;
        object.0.as_ref().ok().cloned()
    }

    /// The Application `namespace/name`.
    pub fn application(&self, namespace: &str, name: &str) -> Option<Application> {
        let object = self
            .applications
            .get(&ObjectRef::new(name).within(namespace))?;
        object.0.as_ref().ok().cloned()
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        let object = self.services.get(&ObjectRef::new(name).within(namespace))?;
        object.0.as_ref().ok().cloned()
    }

    /// The ServiceNode `namespace/name`.
    pub fn node(&self, namespace: &str, name: &str) -> Option<ServiceNode> {
        let object = self.nodes.get(&ObjectRef::new(name).within(namespace))?;
        object.0.as_ref().ok().cloned()
    }

    /// Names of every Cloud.
    pub fn cloud_names(&self) -> std::collections::BTreeSet<String> {
        self.clouds
            .state()
            .iter()
            .filter_map(|c| c.0.as_ref().ok()?.meta().name.clone())
            .collect()
    }

    /// The readable Services of a namespace.
    pub fn services_in(&self, namespace: &str) -> Vec<Arc<DeserializeGuard<Service>>> {
        in_namespace(&self.services, namespace)
    }

    /// The readable ServiceNodes of a Service (by its label).
    pub fn nodes_of(
        &self,
        namespace: &str,
        service: &str,
    ) -> Vec<Arc<DeserializeGuard<ServiceNode>>> {
        in_namespace(&self.nodes, namespace)
            .into_iter()
            .filter(|n| {
                n.0.as_ref().is_ok_and(|n| {
                    n.meta()
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_SERVICE))
                        .is_some_and(|s| s == service)
                })
            })
            .collect()
    }

    /// Every ServiceNode: the readable ones, and the metadata of those that cannot be read.
    pub fn all_nodes(&self) -> (Vec<ServiceNode>, Vec<ObjectMeta>) {
        let mut readable = Vec::new();
        let mut unreadable = Vec::new();
        for node in self.nodes.state() {
            match &node.0 {
                Ok(n) => readable.push(n.clone()),
                Err(invalid) => unreadable.push(invalid.metadata.clone()),
            }
        }
        (readable, unreadable)
    }
}

/// The readable objects of `namespace`.
fn in_namespace<K>(cache: &Cache<K>, namespace: &str) -> Vec<Arc<DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cache
        .state()
        .into_iter()
        .filter(|o| {
            o.0.as_ref()
                .is_ok_and(|o| o.meta().namespace.as_deref() == Some(namespace))
        })
        .collect()
}

/// The object of a readable entry.
pub fn readable<K>(entry: &Arc<DeserializeGuard<K>>) -> Option<&K> {
    entry.0.as_ref().ok()
}
