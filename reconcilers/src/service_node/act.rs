//! Performs a ServiceNode plan. Network: the API server (finalizer, credentials, status) and the
//! node's cloud (create, terminate, tag). Each VM the cloud creates is recorded at once.

use conpaas_cloud::{ComputeDriver, CreateRequest, Tags, Vm};
use conpaas_crds::bootstrap::AgentBootstrap;
use conpaas_crds::labels::{FINALIZER_VM, TAG_ORPHANED, TAG_ROLE, TAG_SERVICE_UID};
use conpaas_crds::v1alpha1::ServiceNode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use super::observe::{cloud_error, node_filter};
use super::plan::NodeAction;
use super::status;
use super::vm_view::VmView;
use super::vm_view::{current_view, view};
use super::{credentials, heartbeat};
use crate::error::{Error, KubeResultExt};
use crate::{Context, events, finalizers, status_apply};

/// Performs `actions` in order; the first failure stops the rest.
pub async fn act(
    ctx: &Context,
    node: &ServiceNode,
    driver: Option<&dyn ComputeDriver>,
    actions: Vec<NodeAction>,
    now: &Time,
) -> Result<(), Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<ServiceNode> = Api::namespaced(ctx.client.clone(), &ns);
    let driver = || driver.ok_or(Error::MissingField("a driver for the node's cloud"));
    let mut requested_at = node
        .status
        .as_ref()
        .and_then(|s| s.create_requested_at.clone());
    // The node's resourceVersion as this pass last wrote or read it.
    let mut version = node.resource_version();
    for action in actions {
        match action {
            NodeAction::AddFinalizer => {
                if let Some(written) =
                    finalizers::add_returning_version(&api, node, FINALIZER_VM).await?
                {
                    version = Some(written);
                }
            }
            NodeAction::EnsureCredentials => credentials::ensure(ctx, node).await?,
            NodeAction::JournalCreate => {
                let intent = VmView {
                    create_requested_at: Some(now.clone()),
                    ..current_view(node)
                };
                // Under the node's resourceVersion: a node whose deletion was asked after the
                // cache was read gets no VM (it would run uncharged: its charge closes at 0).
                let journal = status::build(node, &intent, None, now);
                status_apply::apply_at(&api, node, version.as_deref(), &journal).await?;
                requested_at = Some(now.clone());
            }
            NodeAction::CreateVm => {
                let vm = create_vm(ctx, node, driver()?).await?;
                record(ctx, &api, node, &vm, requested_at.clone(), now).await?;
                announce_created(ctx, node).await;
            }
            NodeAction::AdoptVm(vm) => {
                record(ctx, &api, node, &vm, requested_at.clone(), now).await?;
                let note = format!(
                    "VM {} at {}",
                    vm.provider_id,
                    vm.address.clone().unwrap_or_default()
                );
                events::publish(ctx, node, false, "VmAdopted", "CreateVm", note).await;
            }
            NodeAction::TerminateVms(ids) => {
                for id in &ids {
                    driver()?
                        .delete(id)
                        .await
                        .map_err(|source| cloud_error("terminate VM", node, source))?;
                }
            }
            NodeAction::TagOrphaned(ids) => {
                let mark = Tags::from([(TAG_ORPHANED.to_string(), "true".to_string())]);
                for id in &ids {
                    match driver()?.set_tags(id, &mark).await {
                        Ok(()) | Err(conpaas_cloud::CloudError::NotFound(_)) => {}
                        Err(source) => return Err(cloud_error("tag VM", node, source)),
                    }
                }
                let note = format!(
                    "left VM {} running (deletionPolicy: Orphan)",
                    ids.join(", ")
                );
                events::publish(ctx, node, false, "VmOrphaned", "OrphanVm", note).await;
            }
            NodeAction::ReportDeleted(provider_id) => {
                let note = format!("terminated VM {provider_id}");
                events::publish(ctx, node, false, "VmDeleted", "DeleteVm", note).await;
            }
            NodeAction::RemoveCredentials => credentials::remove(ctx, node).await?,
            NodeAction::DropFinalizer => {
                finalizers::remove(&api, node, FINALIZER_VM).await?;
                ctx.ready_written.forget(node);
                ctx.vms_recorded.forget(node);
                ctx.parked.forget(node);
            }
            NodeAction::DeleteNode(why) => {
                events::publish(ctx, node, true, "NoOwningService", "Delete", why).await;
                match api.delete(&node.name_any(), &Default::default()).await {
                    Err(e) if crate::error::is_not_found(&e) => {}
                    result => {
                        result.ctx("delete node", format!("{ns}/{}", node.name_any()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Records a VM's provider ID in the node's status before anything else can fail.
async fn record(
    ctx: &Context,
    api: &Api<ServiceNode>,
    node: &ServiceNode,
    vm: &Vm,
    requested_at: Option<Time>,
    now: &Time,
) -> Result<(), Error> {
    let seen = VmView {
        create_requested_at: requested_at.or_else(|| Some(now.clone())),
        ..view(node, vm)
    };
    let status = status::build(node, &seen, heartbeat(ctx, node).as_ref(), now);
    status_apply::apply(api, node, &status).await?;
    ctx.vms_recorded.note(node, &vm.provider_id);
    Ok(())
}

/// A VM made for a node is routine: one Event on the owning Service per role, its repeats
/// counted on it (a scale-out of 100 nodes is one Event and a count, not 100 Events; each
/// node's VM is in its status). A node without an owner gets its own.
async fn announce_created(ctx: &Context, node: &ServiceNode) {
    let note = format!("created VMs for nodes of role {}", node.spec.role);
    let owner = node
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    let regarding = match owner {
        Some(o) => k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(o.api_version.clone()),
            kind: Some(o.kind.clone()),
            name: Some(o.name.clone()),
            namespace: node.namespace(),
            uid: Some(o.uid.clone()),
            ..Default::default()
        },
        None => kube::Resource::object_ref(node, &()),
    };
    ctx.recorder
        .publish(&regarding, false, "VmCreated", "CreateVm", note)
        .await;
}

async fn create_vm(
    ctx: &Context,
    node: &ServiceNode,
    driver: &dyn ComputeDriver,
) -> Result<Vm, Error> {
    let token = credentials::token(ctx, node).await?;
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let bootstrap = AgentBootstrap {
        api_server_url: ctx.agent_api.url.clone(),
        ca_certs: ctx
            .agent_api
            .ca_certs
            .iter()
            .cloned()
            .map(k8s_openapi::ByteString)
            .collect(),
        insecure_skip_tls_verify: ctx.agent_api.insecure_skip_tls_verify,
        namespace: ns,
        node: node.name_any(),
        token,
        token_ttl_seconds: ctx.settings.agent_token_ttl.as_secs(),
        token_refresh_seconds: ctx.settings.agent_token_refresh.as_secs(),
    };
    let request = CreateRequest {
        token: node.spec.token.clone(),
        name: node.name_any(),
        instance_type: node.spec.instance_type.clone(),
        tags: ownership_tags(node),
        user_data: serde_json::to_string(&bootstrap).expect("the bootstrap serialises"),
        volume_gib: node.spec.volume.as_ref().map(|v| v.size_gib.max(1) as u32),
        size: None,
    };
    driver
        .create(&request)
        .await
        .map_err(|source| cloud_error("create VM", node, source))
}

/// The tags every VM of this node carries.
pub fn ownership_tags(node: &ServiceNode) -> Tags {
    let mut tags = node_filter(node);
    let service_uid = node
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    tags.insert(TAG_SERVICE_UID.into(), service_uid.unwrap_or_default());
    tags.insert(TAG_ROLE.into(), node.spec.role.clone());
    tags
}
