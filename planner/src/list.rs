//! A LIST that one unreadable object (written against a newer schema, say) does not fail.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::core::error_boundary::DeserializeGuard;
use serde::de::DeserializeOwned;

/// Lists objects like `Api::list`, but one unreadable item does not fail the list: it comes
/// back as its metadata in the second vector.
pub async fn list<K>(
    api: &Api<DeserializeGuard<K>>,
    params: &ListParams,
) -> Result<(Vec<K>, Vec<ObjectMeta>), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut readable = Vec::new();
    let mut unreadable = Vec::new();
    for item in api.list(params).await?.items {
        match item.0 {
            Ok(object) => readable.push(object),
            Err(invalid) => unreadable.push(invalid.metadata),
        }
    }
    Ok((readable, unreadable))
}
