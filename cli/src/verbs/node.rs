//! node replace: lets the controller replace an unhealthy node whose data has no other copy.

use anyhow::{Context as _, bail};
use conpaas_crds::labels::ANNOTATION_ACCEPT_DATA_LOSS;
use conpaas_planner::service::observe::ACCEPTANCE_SECONDS;
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
        // `<uid>@<unix seconds>`: the controller honours it for an hour. Expired entries and
        // this node's earlier one are dropped.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock")?
            .as_secs() as i64;
        let mut uids: Vec<String> = current
            .annotations()
            .get(ANNOTATION_ACCEPT_DATA_LOSS)
            .map(|v| v.split(',').map(|u| u.trim().to_string()).collect())
            .unwrap_or_default();
        uids.retain(|entry| {
            entry.split_once('@').is_some_and(|(u, at)| {
                u != uid
                    && at
                        .parse::<i64>()
                        .is_ok_and(|at| now - at < ACCEPTANCE_SECONDS)
            })
        });
        uids.push(format!("{uid}@{now}"));
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
                    "servicenode/{node}: service/{service} lets it go although its data has no other copy, for the next hour: it is replaced if it is unhealthy (or deleted unsaved by a stop that cannot save)"
                );
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("annotate service/{service}")),
        }
    }
    bail!("service/{service} kept changing: try again")
}
