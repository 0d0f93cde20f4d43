//! Adding and removing our finalizers with optimistic concurrency: a JSON patch that tests the
//! resourceVersion, so a concurrent change makes the patch fail instead of losing a finalizer.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, KubeResultExt, is_not_found};

/// Adds `finalizer` to `object` unless it is there.
pub async fn add<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    add_returning_version(api, object, finalizer)
        .await
        .map(|_| ())
}

/// Like [`add`], and the object's resourceVersion after it (for a write that must follow this
/// one with nothing in between); `None` when the finalizer was there or the object is gone.
pub async fn add_returning_version<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
) -> Result<Option<String>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    let patch = if object.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
        ])
    };
    Ok(apply(api, object, patch, "add finalizer")
        .await?
        .and_then(|o| o.resource_version()))
}

/// Removes `finalizer` from `object` if it is there.
pub async fn remove<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")}
    ]);
    apply(api, object, patch, "remove finalizer")
        .await
        .map(|_| ())
}

async fn apply<K>(
    api: &Api<K>,
    object: &K,
    patch: serde_json::Value,
    what: &'static str,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a well-formed JSON patch");
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).ctx(what, full_name(object)),
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn full_name<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", object.meta().name.as_deref().unwrap_or("")),
        None => object.meta().name.clone().unwrap_or_default(),
    }
}
