//! node replace: lets the controller replace an unhealthy node whose data has no other copy.

use anyhow::{Context as _, bail};
use conpaas_crds::labels::ANNOTATION_ACCEPT_DATA_LOSS;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use super::services::MANAGER;
use crate::connect::Session;

/// How often the Service's annotation is written again when someone changed it meanwhile.
const ATTEMPTS: usize = 5;

/// Adds the node's UID to its Service's `conpaas.io/accept-data-loss` (users may edit their
/// Services, not ServiceNodes; a UID does not cover a later node under the same name).
pub async fn replace(s: &Session, node: &str, accept_data_loss: bool) -> anyhow::Result<()> {
    if !accept_data_loss {
        bail!(
            "node {node} is replaced only with --accept-data-loss: the controller keeps an unhealthy node whose data no Ready node has a copy of, and its replacement starts empty"
        );
    }
    let found = s
        .nodes()
        .get(node)
        .await
        .with_context(|| format!("read servicenode/{node}"))?;
    let uid = found.uid().context("the node has no UID")?;
    let service = found.spec.service.clone();
    for _ in 0..ATTEMPTS {
        let current = s.service(&service).await?;
        let mut uids: Vec<String> = current
            .annotations()
            .get(ANNOTATION_ACCEPT_DATA_LOSS)
            .map(|v| v.split(',').map(|u| u.trim().to_string()).collect())
            .unwrap_or_default();
        uids.retain(|u| !u.is_empty());
        if !uids.contains(&uid) {
            uids.push(uid.clone());
        }
        // The resourceVersion makes a concurrent change of the annotation a conflict, not a loss.
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.resource_version(),
                "annotations": {ANNOTATION_ACCEPT_DATA_LOSS: uids.join(",")}
            }
        });
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match s
            .services()
            .patch(&service, &pp, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                println!(
                    "servicenode/{node}: service/{service} lets it be replaced although its data has no other copy; it is, while it is unhealthy"
                );
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("annotate service/{service}")),
        }
    }
    bail!("service/{service} kept changing: try again")
}
