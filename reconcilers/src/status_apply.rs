//! The one way the controller writes a status: server-side apply of the whole controller-owned
//! status under the controller's field manager (forced: these fields are the controller's). An
//! object that went meanwhile has no status left to write.

use conpaas_crds::labels::MANAGER_CONTROLLER;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, KubeResultExt, is_not_found};
use crate::finalizers::full_name;

/// Applies `status` to `object`.
pub async fn apply<K, S>(api: &Api<K>, object: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    send(api, object, status_patch::<K>(json!(status), None)).await
}

/// Applies `status` only if `object` is still at `version` (its resourceVersion as last read or
/// written): a write that an action depends on (the journal before a VM is made) fails with a
/// conflict when the object changed meanwhile, e.g. its deletion was asked after the cache was
/// read.
pub async fn apply_at<K, S>(
    api: &Api<K>,
    object: &K,
    version: Option<&str>,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    send(api, object, status_patch::<K>(json!(status), version)).await
}

/// The apply patch of a status, with the resourceVersion it must meet when `version` is given.
fn status_patch<K>(status: serde_json::Value, version: Option<&str>) -> serde_json::Value
where
    K: Resource<DynamicType = ()>,
{
    let mut patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    patch
}

async fn send<K>(api: &Api<K>, object: &K, patch: serde_json::Value) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).ctx("patch status", full_name(object)),
    }
}
