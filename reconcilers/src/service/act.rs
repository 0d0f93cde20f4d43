//! Performs a plan on ServiceNode objects. Network: the API server only — never a cloud.

use std::collections::BTreeMap;

use conpaas_crds::labels::{
    FINALIZER_VM, LABEL_APPLICATION, LABEL_ROLE, LABEL_SERVICE, MANAGER_CONTROLLER,
};
use conpaas_crds::v1alpha1::{Service, ServiceNode};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::plan::Action;
use crate::Context;
use crate::error::{Error, KubeResultExt, is_conflict, is_not_found};
use crate::events;

/// Performs every action of the plan, in order.
pub async fn act(ctx: &Context, service: &Service, actions: Vec<Action>) -> Result<(), Error> {
    let ns = service
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let api: Api<ServiceNode> = Api::namespaced(ctx.client.clone(), &ns);
    for action in actions {
        match action {
            Action::CreateNode { name, mut spec } => {
                spec.token = uuid::Uuid::new_v4().to_string();
                let node = ServiceNode {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(BTreeMap::from([
                            (LABEL_APPLICATION.to_string(), spec.application.clone()),
                            (LABEL_SERVICE.to_string(), spec.service.clone()),
                            (LABEL_ROLE.to_string(), spec.role.clone()),
                        ])),
                        // The finalizer exists before the VM can: no VM without a way to remove it.
                        finalizers: Some(vec![FINALIZER_VM.to_string()]),
                        owner_references: Some(vec![
                            service
                                .controller_owner_ref(&())
                                .ok_or(Error::MissingField("uid"))?,
                        ]),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                };
                let pp = PostParams {
                    field_manager: Some(MANAGER_CONTROLLER.into()),
                    ..Default::default()
                };
                match api.create(&pp, &node).await {
                    Ok(_) => tracing::info!(node = %name, "created service node"),
                    // A stale read planned a node that exists: the deterministic name makes it a no-op.
                    Err(e) if is_conflict(&e) => {}
                    Err(e) => return Err(e).ctx("create service node", format!("{ns}/{name}")),
                }
            }
            Action::DeleteNode { name, reason } => {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(node = %name, reason, "deleting service node");
                        events::publish(
                            ctx,
                            service,
                            false,
                            reason,
                            "DeleteNode",
                            format!("removing node {name}"),
                        )
                        .await;
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e).ctx("delete service node", format!("{ns}/{name}")),
                }
            }
            Action::PatchNodeSpec { name, spec } => {
                // A JSON patch, not an apply: it fails on a node deleted meanwhile instead of
                // re-creating it without its finalizer.
                let patch: json_patch::Patch = serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec", "value": spec}]),
                )
                .expect("a well-formed JSON patch");
                let pp = PatchParams {
                    field_manager: Some(MANAGER_CONTROLLER.into()),
                    ..Default::default()
                };
                match api.patch(&name, &pp, &Patch::<()>::Json(patch)).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e).ctx("patch service node spec", format!("{ns}/{name}")),
                }
            }
        }
    }
    Ok(())
}
