//! The ServiceNode loop owns the node's VM: finalizer -> credentials -> create with the node's
//! token (provider ID recorded at once) -> observe -> status; on deletion, terminate and confirm
//! by ID and by tag before the finalizer goes.
//!
//! Network: the API server, and the node's Cloud through its driver.

pub mod credentials;
pub mod status;
pub mod vm_cache;

use std::sync::Arc;
use std::time::Duration;

use conpaas_cloud::{ComputeDriver, CreateRequest, Tags, Vm, VmState as CloudVmState};
use conpaas_crds::bootstrap::AgentBootstrap;
use conpaas_crds::labels::{
    ANNOTATION_ORPHAN_VM, FINALIZER_VM, MANAGED_BY_VALUE, MANAGER_CONTROLLER, TAG_MANAGED_BY,
    TAG_NAMESPACE, TAG_NODE, TAG_ORPHANED, TAG_ROLE, TAG_SERVICE_UID,
};
use conpaas_crds::v1alpha1::{Cloud, ServiceNode, VmState};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions::Desired;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::{Context, events, finalizers};
use status::VmView;

/// Reconciles one ServiceNode.
#[tracing::instrument(skip_all, fields(kind = "ServiceNode", namespace = node.namespace().unwrap_or_default(), name = node.name_any()))]
pub async fn reconcile(node: Arc<ServiceNode>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _metrics = ctx.metrics.reconcile("ServiceNode");
    let requeue = reconcile_inner(&node, &ctx).await?;
    ctx.backoff.succeeded(&backoff_key(&node));
    Ok(requeue)
}

/// What to do after a failed reconcile: back off per object.
pub fn error_policy(node: Arc<ServiceNode>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.failed("ServiceNode", error.category());
    let key = backoff_key(&node);
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(error = %error, category = error.category(), retry_in = ?wait, object = %key, "reconcile failed");
    Requeue::requeue(wait)
}

fn backoff_key(node: &ServiceNode) -> String {
    format!("servicenode/{}", finalizers::full_name(node))
}

async fn reconcile_inner(node: &ServiceNode, ctx: &Context) -> Result<Requeue, Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<ServiceNode> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Time(Timestamp::now());

    let driver = match driver_for(ctx, node).await? {
        Ok(driver) => driver,
        Err(problem) => {
            // Without a driver the VM can be neither created nor terminated: say so and wait.
            let status = blocked_status(node, problem, &now);
            if status::changed(node, &status) {
                patch_status(&api, node, &status).await?;
            }
            return Ok(Requeue::requeue(Duration::from_secs(5)));
        }
    };

    if node.spec.paused
        && (node.metadata.deletion_timestamp.is_some()
            || node
                .status
                .as_ref()
                .and_then(|s| s.provider_id.as_ref())
                .is_none())
    {
        // Paused: no VM is created or terminated until the Service resumes.
        return Ok(Requeue::requeue(Duration::from_secs(10)));
    }
    if node.metadata.deletion_timestamp.is_some() {
        return release(ctx, &api, node, driver.as_ref()).await;
    }
    finalizers::add(&api, node, FINALIZER_VM).await?;

    let generation_changed =
        node.status.as_ref().and_then(|s| s.observed_generation) != node.metadata.generation;
    let recorded = node.status.as_ref().and_then(|s| s.provider_id.clone());
    let vm = match recorded {
        Some(provider_id) => {
            if generation_changed {
                credentials::ensure(ctx, node).await?;
            }
            let found = ctx
                .vms
                .get(&node.spec.cloud, driver.as_ref(), vm_id(&provider_id))
                .await
                .map_err(|source| cloud_error("describe VM", node, source))?;
            match found {
                Some(vm) => view(node, &vm),
                // Gone behind our back: report it; the Service loop replaces the node.
                None => VmView {
                    provider_id: Some(provider_id),
                    state: Some(VmState::Terminated),
                    ..current_view(node)
                },
            }
        }
        None => {
            let journaled = node
                .status
                .as_ref()
                .and_then(|s| s.create_requested_at.clone());
            let requested_at = match &journaled {
                Some(at) => at.clone(),
                None => {
                    // Journal the intent before the cloud call.
                    let intent = VmView {
                        create_requested_at: Some(now.clone()),
                        ..current_view(node)
                    };
                    patch_status(&api, node, &status::build(node, &intent, None, &now)).await?;
                    now.clone()
                }
            };
            // A create journaled by an earlier run may have happened: look the VM up by its
            // tags and token before creating anything.
            let earlier = match journaled {
                Some(_) => driver
                    .list(&node_filter(node))
                    .await
                    .map_err(|source| cloud_error("list VMs", node, source))?
                    .into_iter()
                    .find(|vm| vm.token == node.spec.token && vm.state != CloudVmState::Terminated),
                None => None,
            };
            let (vm, reason) = match earlier {
                Some(vm) => (vm, "VmAdopted"),
                None => (create_vm(ctx, node, driver.as_ref()).await?, "VmCreated"),
            };
            let view = VmView {
                create_requested_at: Some(requested_at),
                ..view(node, &vm)
            };
            // Record the provider ID at once, before anything else can fail.
            patch_status(
                &api,
                node,
                &status::build(node, &view, heartbeat(ctx, node).as_ref(), &now),
            )
            .await?;
            let note = format!(
                "VM {} at {}",
                vm.provider_id,
                vm.address.clone().unwrap_or_default()
            );
            events::publish(ctx, node, false, reason, "CreateVm", note).await;
            return Ok(Requeue::requeue(Duration::from_secs(1)));
        }
    };

    let status = status::build(node, &vm, heartbeat(ctx, node).as_ref(), &now);
    tracing::debug!(vm = ?vm.state, ready = %status.conditions[0].reason, "observed");
    if status::changed(node, &status) {
        if let Some(seconds) = status::first_ready_after(node, &status, &now) {
            ctx.metrics.node_ready(seconds);
        }
        patch_status(&api, node, &status).await?;
    }
    // Look again within half a heartbeat timeout, so a silent agent is noticed in time.
    let timeout = Duration::from_secs(node.spec.heartbeat_timeout_seconds.max(1) as u64);
    Ok(Requeue::requeue(ctx.settings.node_resync.min(timeout / 2)))
}

async fn driver_for(
    ctx: &Context,
    node: &ServiceNode,
) -> Result<Result<Arc<dyn ComputeDriver>, Desired>, Error> {
    let clouds: Api<Cloud> = Api::all(ctx.client.clone());
    let cloud = match clouds.get(&node.spec.cloud).await {
        Ok(cloud) => cloud,
        Err(e) if is_not_found(&e) => {
            return Ok(Err(Desired::new(
                "Ready",
                false,
                "CloudNotFound",
                format!(
                    "spec.cloud: Cloud {:?} does not exist; its VM cannot be managed",
                    node.spec.cloud
                ),
            )));
        }
        Err(e) => return Err(e).ctx("get cloud", &node.spec.cloud),
    };
    Ok(ctx
        .drivers
        .driver(&cloud)
        .await
        .map_err(|why| Desired::new("Ready", false, "CloudUnavailable", why)))
}

async fn create_vm(
    ctx: &Context,
    node: &ServiceNode,
    driver: &dyn ComputeDriver,
) -> Result<Vm, Error> {
    credentials::ensure(ctx, node).await?;
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

/// The tags that find this node's VMs and nobody else's.
fn node_filter(node: &ServiceNode) -> Tags {
    Tags::from([
        (TAG_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (
            TAG_NAMESPACE.to_string(),
            node.namespace().unwrap_or_default(),
        ),
        (TAG_NODE.to_string(), node.name_any()),
    ])
}

/// Terminates the node's VM; the finalizer goes only when neither the recorded ID nor a tag
/// search finds a live VM.
async fn release(
    ctx: &Context,
    api: &Api<ServiceNode>,
    node: &ServiceNode,
    driver: &dyn ComputeDriver,
) -> Result<Requeue, Error> {
    if !node.finalizers().iter().any(|f| f == FINALIZER_VM) {
        return Ok(Requeue::await_change());
    }
    let recorded = node.status.as_ref().and_then(|s| s.provider_id.clone());
    let mut ids: Vec<String> = recorded.iter().map(|p| vm_id(p).to_string()).collect();
    let tagged = driver
        .list(&node_filter(node))
        .await
        .map_err(|source| cloud_error("list VMs", node, source))?;
    ids.extend(
        tagged
            .iter()
            .filter(|vm| vm.state != CloudVmState::Terminated)
            .map(|vm| vm.id.clone()),
    );
    ids.sort();
    ids.dedup();
    if node
        .annotations()
        .get(ANNOTATION_ORPHAN_VM)
        .is_some_and(|v| v == "true")
    {
        return orphan(ctx, api, node, driver, &ids).await;
    }
    for id in &ids {
        driver
            .delete(id)
            .await
            .map_err(|source| cloud_error("terminate VM", node, source))?;
    }

    let by_id = match &recorded {
        Some(p) => driver
            .get(vm_id(p))
            .await
            .map_err(|source| cloud_error("describe VM", node, source))?,
        None => None,
    };
    let by_tag = driver
        .list(&node_filter(node))
        .await
        .map_err(|source| cloud_error("list VMs", node, source))?;
    let live = by_id
        .iter()
        .chain(by_tag.iter())
        .any(|vm| vm.state != CloudVmState::Terminated);
    if live {
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    if !ids.is_empty() {
        events::publish(
            ctx,
            node,
            false,
            "VmDeleted",
            "DeleteVm",
            format!("terminated VM {}", ids.join(", ")),
        )
        .await;
    }
    credentials::remove(ctx, node).await?;
    finalizers::remove(api, node, FINALIZER_VM).await?;
    Ok(Requeue::await_change())
}

/// Leaves the node's VMs running, marked `conpaas.io/orphaned` (so the sweep spares them) with
/// their ownership tags kept, and lets the node go.
async fn orphan(
    ctx: &Context,
    api: &Api<ServiceNode>,
    node: &ServiceNode,
    driver: &dyn ComputeDriver,
    ids: &[String],
) -> Result<Requeue, Error> {
    let mark = Tags::from([(TAG_ORPHANED.to_string(), "true".to_string())]);
    for id in ids {
        match driver.set_tags(id, &mark).await {
            Ok(()) | Err(conpaas_cloud::CloudError::NotFound(_)) => {}
            Err(source) => return Err(cloud_error("tag VM", node, source)),
        }
    }
    if !ids.is_empty() {
        let note = format!(
            "left VM {} running (deletionPolicy: Orphan)",
            ids.join(", ")
        );
        events::publish(ctx, node, false, "VmOrphaned", "OrphanVm", note).await;
    }
    credentials::remove(ctx, node).await?;
    finalizers::remove(api, node, FINALIZER_VM).await?;
    Ok(Requeue::await_change())
}

/// The node's VM as the cloud describes it, with the node's create journal kept.
fn view(node: &ServiceNode, vm: &Vm) -> VmView {
    VmView {
        create_requested_at: node
            .status
            .as_ref()
            .and_then(|s| s.create_requested_at.clone()),
        provider_id: Some(vm.provider_id.clone()),
        address: vm.address.clone(),
        state: Some(match vm.state {
            CloudVmState::Pending => VmState::Pending,
            CloudVmState::Running => VmState::Running,
            CloudVmState::Stopping => VmState::Stopping,
            CloudVmState::Terminated => VmState::Terminated,
            CloudVmState::Failed => VmState::Failed,
        }),
        created_at: Some(Time(whole_seconds(vm.created_at))),
    }
}

fn current_view(node: &ServiceNode) -> VmView {
    let s = node.status.clone().unwrap_or_default();
    VmView {
        provider_id: s.provider_id,
        address: s.address,
        state: s.vm_state,
        created_at: s.created_at,
        create_requested_at: s.create_requested_at,
    }
}

fn blocked_status(
    node: &ServiceNode,
    problem: Desired,
    now: &Time,
) -> conpaas_crds::v1alpha1::ServiceNodeStatus {
    let mut status = status::build(node, &current_view(node), None, now);
    status.conditions = crate::conditions::merge(
        &node.status.clone().unwrap_or_default().conditions,
        vec![problem],
        node.metadata.generation,
        now,
    );
    status
}

/// When the node's agent last renewed its heartbeat Lease.
fn heartbeat(ctx: &Context, node: &ServiceNode) -> Option<Timestamp> {
    let key = ObjectRef::<Lease>::new(&node.name_any()).within(&node.namespace()?);
    ctx.leases
        .get(&key)?
        .spec
        .as_ref()?
        .renew_time
        .as_ref()
        .map(|t| t.0)
}

/// A cloud's timestamp at the API's resolution (whole seconds): compared with what was stored, a
/// finer one would always differ and rewrite the status on every reconcile.
fn whole_seconds(t: std::time::SystemTime) -> Timestamp {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Timestamp::from_second(secs).unwrap_or_else(|_| Timestamp::now())
}

/// The cloud's VM ID inside a provider ID such as `local:///<id>`.
fn vm_id(provider_id: &str) -> &str {
    provider_id.rsplit('/').next().unwrap_or(provider_id)
}

fn cloud_error(
    operation: &'static str,
    node: &ServiceNode,
    source: conpaas_cloud::CloudError,
) -> Error {
    Error::Cloud {
        operation,
        cloud: node.spec.cloud.clone(),
        source,
    }
}

async fn patch_status(
    api: &Api<ServiceNode>,
    node: &ServiceNode,
    status: &conpaas_crds::v1alpha1::ServiceNodeStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": ServiceNode::api_version(&()),
        "kind": ServiceNode::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            &node.name_any(),
            &PatchParams::apply(MANAGER_CONTROLLER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).ctx("patch status", finalizers::full_name(node)),
    }
}
