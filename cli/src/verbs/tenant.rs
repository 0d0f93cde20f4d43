//! Tenants and credits. `cpsctl tenant create` (for administrators) makes a tenant's namespace,
//! the RoleBinding that lets its users edit it (ConPaaS' roles aggregate into `edit`), the one
//! that lets the controller act in it, and its credit account, and can hand out a kubeconfig for a ServiceAccount of the tenant, as ConPaaS'
//! `getcerts` handed out certificates. `cpsctl credits` shows what a namespace has left.

use std::path::Path;

use anyhow::Context as _;
use conpaas_crds::v1alpha1::{CREDIT_ACCOUNT_NAME, CreditAccount, CreditAccountStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::connect::Session;
use crate::output::{Table, structured};

/// The label that marks a namespace as a tenant's.
pub const LABEL_TENANT: &str = "conpaas.io/tenant";
/// The RoleBinding that gives a tenant's users its namespace.
const BINDING: &str = "conpaas-tenant";
/// The ServiceAccount `--kubeconfig-out` makes as the tenant's user.
const TENANT_ACCOUNT: &str = "tenant";
const MANAGER: &str = "cpsctl";

/// Who a tenant's users are.
pub struct People {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

pub async fn create(
    s: &Session,
    name: &str,
    people: &People,
    credits: i64,
    kubeconfig_out: Option<&Path>,
    token_hours: i64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        credits >= 0,
        "--credits {credits}: a grant cannot be negative"
    );
    let pp = PatchParams::apply(MANAGER).force();
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL_TENANT: name}},
    });
    Api::<Namespace>::all(s.client.clone())
        .patch(name, &pp, &Patch::Apply(&namespace))
        .await
        .with_context(|| format!("create namespace {name}"))?;

    let mut subjects: Vec<serde_json::Value> =
        people
            .users
            .iter()
            .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
            .chain(people.groups.iter().map(
                |g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}),
            ))
            .collect();
    if kubeconfig_out.is_some() {
        let account = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": TENANT_ACCOUNT, "namespace": name},
        });
        Api::<ServiceAccount>::namespaced(s.client.clone(), name)
            .patch(TENANT_ACCOUNT, &pp, &Patch::Apply(&account))
            .await
            .with_context(|| format!("create ServiceAccount {name}/{TENANT_ACCOUNT}"))?;
        subjects.push(json!({"kind": "ServiceAccount", "name": TENANT_ACCOUNT, "namespace": name}));
    }
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": BINDING, "namespace": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": subjects,
    });
    Api::<RoleBinding>::namespaced(s.client.clone(), name)
        .patch(BINDING, &pp, &Patch::Apply(&binding))
        .await
        .with_context(|| format!("create RoleBinding {name}/{BINDING}"))?;

    let account = json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "CreditAccount",
        "metadata": {"name": CREDIT_ACCOUNT_NAME, "namespace": name},
        "spec": {"grant": credits},
    });
    Api::<CreditAccount>::namespaced(s.client.clone(), name)
        .patch(CREDIT_ACCOUNT_NAME, &pp, &Patch::Apply(&account))
        .await
        .with_context(|| format!("create CreditAccount {name}/{CREDIT_ACCOUNT_NAME}"))?;
    println!(
        "tenant/{name}: namespace {name}, {} users and groups bound to edit, {credits} credits",
        subjects.len()
    );

    if let Some(path) = kubeconfig_out {
        let token = Api::<ServiceAccount>::namespaced(s.client.clone(), name)
            .create_token_request(
                TENANT_ACCOUNT,
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        audiences: vec![],
                        expiration_seconds: Some(token_hours.max(1) * 3600),
                        bound_object_ref: None,
                    },
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("request a token for {name}/{TENANT_ACCOUNT}"))?
            .status
            .context("the token request came back without a token")?
            .token;
        std::fs::write(path, kubeconfig(s, name, &token))
            .with_context(|| format!("write {}", path.display()))?;
        set_private(path)?;
        println!(
            "tenant/{name}: kubeconfig for system:serviceaccount:{name}:{TENANT_ACCOUNT} written to {} (valid {token_hours} h)",
            path.display()
        );
    }
    Ok(())
}

/// The RoleBinding that lets the controller act inside a tenant's namespace.
const CONTROLLER_BINDING: &str = "conpaas-controller";

/// Binds the controller's ServiceAccount (`NAMESPACE/NAME`) to the chart's ClusterRole
/// `<NAME>-namespace` in the tenant's namespace: the controller holds Secrets and mints its
/// agents' tokens only where such a binding is.
pub async fn bind_controller(s: &Session, tenant: &str, controller: &str) -> anyhow::Result<()> {
    let (namespace, account) = controller
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| {
            format!("--controller {controller:?}: expected NAMESPACE/NAME, like conpaas/conpaas")
        })?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": CONTROLLER_BINDING, "namespace": tenant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": format!("{account}-namespace")},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    });
    Api::<RoleBinding>::namespaced(s.client.clone(), tenant)
        .patch(
            CONTROLLER_BINDING,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&binding),
        )
        .await
        .with_context(|| format!("create RoleBinding {tenant}/{CONTROLLER_BINDING}"))?;
    println!(
        "tenant/{tenant}: the controller ({namespace}/{account}) may act in it (ClusterRole {account}-namespace)"
    );
    Ok(())
}

/// A kubeconfig for the tenant's token, reaching the cluster as this session does.
fn kubeconfig(s: &Session, tenant: &str, token: &str) -> String {
    let server = s.config.cluster_url.to_string();
    let server = server.trim_end_matches('/');
    let ca = match &s.config.root_cert {
        Some(certs) if !certs.is_empty() => {
            let pem: String = certs.iter().map(|der| pem(der)).collect();
            format!(
                "    certificate-authority-data: {}\n",
                base64(pem.as_bytes())
            )
        }
        _ if s.config.accept_invalid_certs => "    insecure-skip-tls-verify: true\n".into(),
        _ => String::new(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: conpaas
  cluster:
    server: {server}
{ca}users:
- name: {tenant}
  user:
    token: {token}
contexts:
- name: {tenant}
  context:
    cluster: conpaas
    user: {tenant}
    namespace: {tenant}
current-context: {tenant}
"
    )
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn pem(der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A kubeconfig holds a credential: only its owner may read it.
fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("make {} private", path.display()))
}

pub async fn grant(s: &Session, name: &str, credits: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        credits >= 0,
        "--credits {credits}: a grant cannot be negative"
    );
    Api::<CreditAccount>::namespaced(s.client.clone(), name)
        .patch(
            CREDIT_ACCOUNT_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grant": credits}})),
        )
        .await
        .with_context(|| format!("set the grant of CreditAccount {name}/{CREDIT_ACCOUNT_NAME}"))?;
    println!("tenant/{name}: {credits} credits granted");
    Ok(())
}

pub async fn credits(s: &Session) -> anyhow::Result<()> {
    let account = Api::<CreditAccount>::namespaced(s.client.clone(), &s.namespace)
        .get_opt(CREDIT_ACCOUNT_NAME)
        .await
        .with_context(|| format!("read CreditAccount {}/{CREDIT_ACCOUNT_NAME}", s.namespace))?;
    let Some(account) = account else {
        println!(
            "namespace {} has no CreditAccount: it is not metered",
            s.namespace
        );
        return Ok(());
    };
    if structured(s.output, &account)? {
        return Ok(());
    }
    let status = account.status.clone().unwrap_or_default();
    print!("{}", summary(account.spec.grant, &status));
    Ok(())
}

/// Grant, used, balance, burn rate, time left, and credits per Service.
pub fn summary(grant: i64, status: &CreditAccountStatus) -> String {
    let left = match status.burn_rate {
        0 => "no node running".to_string(),
        rate => format!("about {} hours", status.balance.max(0) / rate),
    };
    let state = if status.exhausted.is_some() {
        "EXHAUSTED: every Service is stopped until the grant is raised"
    } else {
        "available"
    };
    let mut text = format!(
        "grant {grant}  used {}  balance {}  burn {}/hour  left {left}  ({state})\n",
        status.used, status.balance, status.burn_rate
    );
    let mut services: Vec<&str> = status
        .ledger
        .iter()
        .map(|c| c.service.as_str())
        .chain(status.settled.iter().map(|s| s.service.as_str()))
        .collect();
    services.sort();
    services.dedup();
    let mut table = Table::new(&["SERVICE", "CREDITS", "RUNNING NODES"]);
    for service in services {
        let running = status
            .ledger
            .iter()
            .filter(|c| c.service == service && c.end.is_none())
            .count();
        table.row(vec![
            service.to_string(),
            status.service_credits(service).to_string(),
            running.to_string(),
        ]);
    }
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::{Charge, ServiceCredits};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_summary_shows_burn_rate_time_left_and_credits_per_service() {
        let charge = |service: &str, hours: i64, open: bool| Charge {
            uid: format!("{service}-{hours}"),
            node: format!("{service}-node"),
            service: service.into(),
            price: 2,
            start: Time(Timestamp::UNIX_EPOCH),
            hours,
            end: (!open).then_some(Time(Timestamp::UNIX_EPOCH)),
            vm: true,
        };
        let status = CreditAccountStatus {
            used: 16,
            balance: 84,
            burn_rate: 4,
            ledger: vec![charge("web", 3, true), charge("db", 2, true)],
            settled: vec![ServiceCredits {
                service: "web".into(),
                credits: 2,
            }],
            ..Default::default()
        };
        let text = summary(100, &status);
        assert!(
            text.starts_with(
                "grant 100  used 16  balance 84  burn 4/hour  left about 21 hours  (available)\n"
            ),
            "{text}"
        );
        assert!(text.contains("web      8        1"), "{text}");
        assert!(text.contains("db       4        1"), "{text}");
    }
}
