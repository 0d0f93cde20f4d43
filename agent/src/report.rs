//! Writes the agent's report into `status.agent` by server-side apply with the agent's own
//! field manager, so the controller's fields are never touched.

use conpaas_crds::labels::MANAGER_AGENT;
use conpaas_crds::v1alpha1::{AgentStatus, ServiceNode};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Applies `report` as the whole of `status.agent`.
pub async fn send(
    api: &Api<ServiceNode>,
    node: &str,
    report: &AgentStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": ServiceNode::api_version(&()),
        "kind": ServiceNode::kind(&()),
        "status": {"agent": report},
    });
    api.patch_status(
        node,
        &PatchParams::apply(MANAGER_AGENT).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}
