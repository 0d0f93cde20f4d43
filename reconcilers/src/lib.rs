//! The reconcile loops of the operator, one folder per kind.
//!
//! - [`service`]: Service -> ServiceNodes. Plans which nodes to create, delete or re-spec (a pure
//!   function) and acts on ServiceNode objects only; it never calls a cloud.
//! - [`service_node`]: ServiceNode -> VM. Owns the VM through the node's [`ComputeDriver`]: the
//!   agent's credentials, create with the node's token, observe, terminate before the object goes.
//! - [`application`]: aggregates its Services and deletes them before it goes.
//! - [`cloud`]: reports whether each Cloud can be used.
//! - [`credits`]: charges each tenant's started VM-hours to its CreditAccount.
//!
//! Start with [`Context`], which carries what every loop shares, and [`service::plan`].
//!
//! [`ComputeDriver`]: conpaas_cloud::ComputeDriver

pub mod application;
pub mod backoff;
pub mod backpressure;
pub mod caches;
pub mod cloud;
pub mod context;
pub mod credits;
pub mod error;
pub mod events;
pub mod finalizers;
pub mod guard;
pub mod metrics;
pub mod service;
pub mod service_node;
pub mod status_apply;

pub use conpaas_planner::conditions;
pub use context::{AgentApi, Context, DriverRegistry};
pub use error::Error;

/// An object with its apiVersion and kind set, as server-side apply needs.
pub fn with_type<K: kube::Resource<DynamicType = ()> + serde::Serialize>(
    object: &K,
) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("API objects serialise");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}
