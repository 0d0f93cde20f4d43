//! Applying YAML manifests the way `kubectl apply --server-side` does (strict field validation:
//! unknown fields are errors), into a chosen namespace.

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;

/// Applies every document of `yaml`; namespaced objects go into `namespace`.
pub async fn apply(client: &Client, yaml: &str, namespace: &str) -> anyhow::Result<()> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discover API resources")?;
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let mut object: DynamicObject =
            serde_yaml::from_value(value).context("parse manifest document")?;
        let types = object
            .types
            .clone()
            .context("a document lacks apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .with_context(|| format!("unknown kind {gvk:?}"))?;
        let name = object
            .metadata
            .name
            .clone()
            .context("a document lacks metadata.name")?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            object.metadata.namespace = Some(namespace.to_string());
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(
            &name,
            &PatchParams::apply("conpaas-e2e")
                .force()
                .validation_strict(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("apply {} {name}", types.kind))?;
    }
    Ok(())
}
