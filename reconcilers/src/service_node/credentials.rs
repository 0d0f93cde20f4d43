//! The agent's own identity: a ServiceAccount named as its ServiceNode, a Role that allows only
//! reading that ServiceNode (and its code: its ConfigMap, its Service's archives), patching its
//! status and renewing its heartbeat Lease, the RoleBinding, and a short-lived token from TokenRequest. Nothing with
//! wider rights ever reaches a VM.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use conpaas_crds::labels::MANAGER_CONTROLLER;
use conpaas_crds::v1alpha1::ServiceNode;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::error::{Error, KubeResultExt, is_not_found};
use crate::{Context, with_type};

/// What this controller already did for each node (by UID), so that a retry or a new spec that
/// changes nothing of the credentials writes nothing: the credentials as last applied, and the
/// token minted for the node's VM.
#[derive(Default)]
pub struct Memo {
    applied: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl Memo {
    fn applied(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a node that is gone.
    fn forget(&self, uid: &str) {
        self.applied().remove(uid);
        self.tokens().remove(uid);
    }
}

/// What the applied credentials depend on: the Role's rules, the Lease's duration and labels.
fn fingerprint(node: &ServiceNode) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&rules(node))
        .expect("rules serialise")
        .hash(&mut hasher);
    node.spec.heartbeat_timeout_seconds.hash(&mut hasher);
    node.metadata.labels.hash(&mut hasher);
    hasher.finish()
}

/// Creates or updates the node's ServiceAccount, Role, RoleBinding and heartbeat Lease, unless
/// this controller applied them as they are now already.
pub async fn ensure(ctx: &Context, node: &ServiceNode) -> Result<(), Error> {
    let uid = node.uid().ok_or(Error::MissingField("uid"))?;
    let wanted = fingerprint(node);
    if ctx.credentials.applied().get(&uid) == Some(&wanted) {
        return Ok(());
    }
    apply(ctx, node).await?;
    ctx.credentials.applied().insert(uid, wanted);
    Ok(())
}

async fn apply(ctx: &Context, node: &ServiceNode) -> Result<(), Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = node.name_any();
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        owner_references: Some(vec![
            node.controller_owner_ref(&())
                .ok_or(Error::MissingField("uid"))?,
        ]),
        ..Default::default()
    };
    let pp = PatchParams::apply(MANAGER_CONTROLLER).force();
    let object = format!("{ns}/{name}");

    let sa = ServiceAccount {
        metadata: meta.clone(),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(with_type(&sa)))
        .await
        .ctx("apply service account", &object)?;

    let role = Role {
        metadata: meta.clone(),
        rules: Some(rules(node)),
    };
    let applied = Api::<Role>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(with_type(&role)))
        .await;
    let operation = unless_unbound(&applied, "apply role");
    applied.ctx(operation, &object)?;

    let binding = RoleBinding {
        metadata: meta.clone(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(with_type(&binding)))
        .await
        .ctx("apply role binding", &object)?;

    // The controller owns the Lease's identity and duration; the agent only renews it.
    let mut lease_meta = meta;
    lease_meta.labels = node.metadata.labels.clone();
    let lease = Lease {
        metadata: lease_meta,
        spec: Some(LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(node.spec.heartbeat_timeout_seconds),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(with_type(&lease)))
        .await
        .ctx("apply lease", &object)?;
    Ok(())
}

/// What the node's agent may do: read its own ServiceNode, patch its status, read its code.
pub fn rules(node: &ServiceNode) -> Vec<PolicyRule> {
    let name = node.name_any();
    let mut rules = vec![
        PolicyRule {
            api_groups: Some(vec!["conpaas.io".into()]),
            resources: Some(vec!["servicenodes".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            resource_names: Some(vec![name.clone()]),
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec!["conpaas.io".into()]),
            resources: Some(vec!["servicenodes/status".into()]),
            verbs: vec!["get".into(), "patch".into()],
            resource_names: Some(vec![name]),
            ..Default::default()
        },
    ];
    // Renewing its own token, as a kubelet does for its pods.
    rules.push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["serviceaccounts/token".into()]),
        verbs: vec!["create".into()],
        resource_names: Some(vec![node.name_any()]),
        ..Default::default()
    });
    rules.push(PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["get".into(), "patch".into(), "update".into()],
        resource_names: Some(vec![node.name_any()]),
        ..Default::default()
    });
    // Its Service's archives, through the code API (the controller checks the node's Service
    // again there); nodes of types that save data when stopping upload it.
    let mut verbs = vec!["get".to_string()];
    if node.spec.service_type.descriptor().saved_on_stop == Some(node.spec.role.as_str()) {
        verbs.push("create".into());
    }
    rules.push(PolicyRule {
        api_groups: Some(vec![conpaas_crds::code_api::GROUP.into()]),
        resources: Some(vec![conpaas_crds::code_api::RESOURCE.into()]),
        verbs,
        resource_names: Some(vec![node.spec.service.clone()]),
        ..Default::default()
    });
    // The credentials of its own Service (if its type has any), and of the services it links to.
    let mut secrets: Vec<String> = node
        .spec
        .links
        .iter()
        .filter_map(|l| l.secret.clone())
        .collect();
    if let Some(own) = node.spec.service_type.descriptor().credentials {
        secrets.push(own.secret_name(&node.spec.service));
    }
    if !secrets.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into()],
            resource_names: Some(secrets),
            ..Default::default()
        });
    }
    if let Some(cm) = node.spec.code.as_ref().and_then(|c| c.config_map.as_ref()) {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into()],
            resource_names: Some(vec![cm.name.clone()]),
            ..Default::default()
        });
    }
    rules
}

/// A token for the node's ServiceAccount, minted once for its VM: a create that is retried
/// reuses it while it has two thirds of its lifetime left.
pub async fn token(ctx: &Context, node: &ServiceNode) -> Result<String, Error> {
    let uid = node.uid().ok_or(Error::MissingField("uid"))?;
    let fresh_for = ctx.settings.agent_token_ttl / 3;
    if let Some((token, minted)) = ctx.credentials.tokens().get(&uid)
        && minted.elapsed() < fresh_for
    {
        return Ok(token.clone());
    }
    let token = mint(ctx, node).await?;
    ctx.credentials
        .tokens()
        .insert(uid, (token.clone(), Instant::now()));
    Ok(token)
}

async fn mint(ctx: &Context, node: &ServiceNode) -> Result<String, Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(ctx.settings.agent_token_ttl.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
        .create_token_request(&node.name_any(), &PostParams::default(), &request)
        .await;
    let operation = unless_unbound(&answer, "request token");
    let answer = answer.ctx(operation, format!("{ns}/{}", node.name_any()))?;
    answer
        .status
        .map(|s| s.token)
        .ok_or(Error::MissingField("token request status"))
}

/// `operation`, or when the API server refused it, what the refusal most likely means: the
/// controller writes nodes' credentials only in namespaces it is bound in (the chart's
/// ClusterRole `<name>-namespace`), and this one may not be.
fn unless_unbound<T>(result: &Result<T, kube::Error>, operation: &'static str) -> &'static str {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            "act in this namespace (refused: the controller makes nodes' credentials only in namespaces bound to it, with `cpsctl tenant create <namespace>` or the chart's `namespaces` value; if this one is bound, the API server's answer follows)"
        }
        _ => operation,
    }
}

/// Deletes the node's Lease, ServiceAccount, Role and RoleBinding (owner references would too, where a
/// garbage collector runs).
pub async fn remove(ctx: &Context, node: &ServiceNode) -> Result<(), Error> {
    let ns = node.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = node.name_any();
    if let Some(uid) = node.uid() {
        ctx.credentials.forget(&uid);
    }
    delete_if_present::<Lease>(ctx, &ns, &name, "delete lease").await?;
    delete_if_present::<RoleBinding>(ctx, &ns, &name, "delete role binding").await?;
    delete_if_present::<Role>(ctx, &ns, &name, "delete role").await?;
    delete_if_present::<ServiceAccount>(ctx, &ns, &name, "delete service account").await
}

async fn delete_if_present<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    operation: &'static str,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(ctx.client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).ctx(operation, format!("{ns}/{name}")),
    }
}
