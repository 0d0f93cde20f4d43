//! describe: Application -> Services -> nodes as a tree, with phases, conditions and their
//! messages, addresses, code versions and credit use (each started VM-hour costs its Cloud's
//! price for the instance type, 1 credit when it sets none, as ConPaaS charged; in a namespace
//! with a CreditAccount, what its ledger charged, deleted nodes included).

use anyhow::Context as _;
use conpaas_crds::labels::ANNOTATION_DISPLAY_NAME;
use conpaas_crds::v1alpha1::{
    Application, CREDIT_ACCOUNT_NAME, Cloud, CreditAccount, CreditAccountStatus, Service,
    ServiceNode,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use crate::connect::Session;
use crate::output::structured;

pub async fn describe(
    s: &Session,
    service: Option<String>,
    app: Option<String>,
) -> anyhow::Result<()> {
    let (apps, services): (Vec<Application>, Vec<Service>) = match (service, app) {
        (Some(name), _) => {
            let svc = s.service(&name).await?;
            let app = s.applications().get_opt(&svc.spec.application).await?;
            (app.into_iter().collect(), vec![svc])
        }
        (None, Some(name)) => {
            let app = s.applications().get_opt(&name).await?.with_context(|| {
                format!(
                    "no Application {name:?} in namespace {:?}; `cpsctl list` shows what exists",
                    s.namespace
                )
            })?;
            let services = s
                .services()
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|x| x.spec.application == name)
                .collect();
            (vec![app], services)
        }
        (None, None) => (
            s.applications().list(&ListParams::default()).await?.items,
            s.services().list(&ListParams::default()).await?.items,
        ),
    };
    let mut nodes = Vec::new();
    for svc in &services {
        nodes.extend(s.nodes_of(&svc.name_any()).await?);
    }
    let value = json!({"applications": apps, "services": services, "nodes": nodes});
    if !structured(s.output, &value)? {
        let clouds = s.clouds().list(&ListParams::default()).await?.items;
        let price = |node: &ServiceNode| price(&clouds, node);
        let account = Api::<CreditAccount>::namespaced(s.client.clone(), &s.namespace)
            .get_opt(CREDIT_ACCOUNT_NAME)
            .await?;
        let ledger = account.and_then(|a| a.status);
        print!(
            "{}",
            tree(
                &apps,
                &services,
                &nodes,
                Timestamp::now(),
                &price,
                ledger.as_ref()
            )
        );
    }
    Ok(())
}

/// A node's price in credits per VM-hour ([`Cloud::node_price`]); 1 when its Cloud is gone.
fn price(clouds: &[Cloud], node: &ServiceNode) -> i64 {
    clouds
        .iter()
        .find(|c| c.name_any() == node.spec.cloud)
        .map_or(1, |c| c.node_price(node))
}

/// VM-hours a node has used so far: each started hour counts, as ConPaaS charged.
pub fn hours(node: &ServiceNode, now: Timestamp) -> i64 {
    let Some(created) = node.status.as_ref().and_then(|st| st.created_at.as_ref()) else {
        return 0;
    };
    // The hour a VM starts in counts from its first second.
    let seconds = now.duration_since(created.0).as_secs().max(0);
    seconds / 3600 + 1
}

fn display(meta_name: &str, annotations: &std::collections::BTreeMap<String, String>) -> String {
    match annotations.get(ANNOTATION_DISPLAY_NAME) {
        Some(d) => format!("{meta_name} ({d:?})"),
        None => meta_name.to_string(),
    }
}

fn conditions(out: &mut String, indent: &str, conditions: &[Condition]) {
    for c in conditions {
        let message = if c.message.is_empty() {
            String::new()
        } else {
            format!(": {}", c.message)
        };
        out.push_str(&format!(
            "{indent}{}={} {}{message}\n",
            c.type_, c.status, c.reason
        ));
    }
}

/// The tree as text.
pub fn tree(
    apps: &[Application],
    services: &[Service],
    nodes: &[ServiceNode],
    now: Timestamp,
    price: &dyn Fn(&ServiceNode) -> i64,
    ledger: Option<&CreditAccountStatus>,
) -> String {
    // A metered namespace shows what its ledger charged (deleted nodes included); otherwise
    // what the nodes alive now would cost.
    let credits = |n: &ServiceNode| match ledger {
        Some(l) => l
            .charge(n.uid().as_deref().unwrap_or_default())
            .map_or(0, |c| c.credits()),
        None => hours(n, now) * price(n),
    };
    let service_credits = |name: &str| match ledger {
        Some(l) => l.service_credits(name),
        None => nodes
            .iter()
            .filter(|n| n.spec.service == name)
            .map(credits)
            .sum(),
    };
    let mut out = String::new();
    let mut app_names: Vec<String> = apps.iter().map(|a| a.name_any()).collect();
    // Services whose Application is missing still show, under its name.
    for svc in services {
        if !app_names.contains(&svc.spec.application) {
            app_names.push(svc.spec.application.clone());
        }
    }
    for app_name in app_names {
        let app = apps.iter().find(|a| a.name_any() == app_name);
        let of_app: Vec<&Service> = services
            .iter()
            .filter(|x| x.spec.application == app_name)
            .collect();
        let app_credits: i64 = of_app.iter().map(|x| service_credits(&x.name_any())).sum();
        match app {
            Some(a) => {
                let st = a.status.clone().unwrap_or_default();
                out.push_str(&format!(
                    "Application {}  cloud {}  services {}/{} ready  credits {app_credits}\n",
                    display(&app_name, a.annotations()),
                    a.spec.cloud.as_deref().unwrap_or("-"),
                    st.ready_services,
                    st.services,
                ));
                conditions(&mut out, "│ ", &st.conditions);
            }
            None => out.push_str(&format!(
                "Application {app_name}  (missing: its Services cannot run)\n"
            )),
        }
        for (i, svc) in of_app.iter().enumerate() {
            let last_svc = i + 1 == of_app.len();
            let (branch, pad) = if last_svc {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let st = svc.status.clone().unwrap_or_default();
            let svc_nodes: Vec<&ServiceNode> = nodes
                .iter()
                .filter(|n| n.spec.service == svc.name_any())
                .collect();
            let svc_credits = service_credits(&svc.name_any());
            out.push_str(&format!(
                "{branch}Service {}  {}  {}  {}  code {}  credits {svc_credits}\n",
                display(&svc.name_any(), svc.annotations()),
                svc.spec.r#type.as_str(),
                st.phase.as_str(),
                st.ready.as_deref().unwrap_or("-"),
                st.active_code_version.as_deref().unwrap_or("-"),
            ));
            conditions(&mut out, &format!("{pad}  "), &st.conditions);
            for (j, node) in svc_nodes.iter().enumerate() {
                let twig = if j + 1 == svc_nodes.len() {
                    "└─ "
                } else {
                    "├─ "
                };
                let ns = node.status.clone().unwrap_or_default();
                let agent = ns.agent.clone().unwrap_or_default();
                out.push_str(&format!(
                    "{pad}{twig}{}  {}  {}  {}  VM {}  agent {}  code {}  credits {}\n",
                    node.name_any(),
                    node.spec.role,
                    node.spec.cloud,
                    ns.address.as_deref().unwrap_or("-"),
                    ns.vm_state
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_else(|| "-".into()),
                    agent
                        .state
                        .map(|a| format!("{a:?}"))
                        .unwrap_or_else(|| "-".into()),
                    agent.code_version.as_deref().unwrap_or("-"),
                    credits(node),
                ));
                let twig_pad = if j + 1 == svc_nodes.len() {
                    "   "
                } else {
                    "│  "
                };
                let unhappy: Vec<Condition> = ns
                    .conditions
                    .iter()
                    .filter(|c| c.status != "True")
                    .cloned()
                    .collect();
                conditions(&mut out, &format!("{pad}{twig_pad}  "), &unhappy);
                if let Some(message) = agent.message.filter(|m| !m.is_empty()) {
                    out.push_str(&format!("{pad}{twig_pad}  agent: {message}\n"));
                }
            }
        }
    }
    if out.is_empty() {
        out.push_str("no Applications here; `cpsctl create helloworld --app demo` makes one\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_shows_services_nodes_conditions_and_credits() {
        let app: Application = serde_json::from_value(json!({
            "metadata": {"name": "demo"}, "spec": {"cloud": "local"},
            "status": {"services": 1, "readyServices": 1}
        }))
        .unwrap();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "hello", "annotations": {ANNOTATION_DISPLAY_NAME: "Front"}},
            "spec": {"application": "demo", "type": "helloworld"},
            "status": {"phase": "RUNNING", "ready": "node 1/1", "activeCodeVersion": "v1",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": "all nodes ready: node 1/1",
                    "lastTransitionTime": "2026-11-23T10:00:00Z"}]}
        }))
        .unwrap();
        let node: ServiceNode = serde_json::from_value(json!({
            "metadata": {"name": "hello-node-0"},
            "spec": {"application": "demo", "service": "hello", "serviceType": "helloworld", "role": "node",
                "cloud": "local", "token": "t"},
            "status": {"address": "127.100.0.1", "vmState": "Running", "createdAt": "2026-11-23T10:00:00Z",
                "agent": {"state": "Ready", "codeVersion": "v1"},
                "conditions": [{"type": "Healthy", "status": "False", "reason": "HeartbeatStale", "message": "no heartbeat for 70s",
                    "lastTransitionTime": "2026-11-23T10:00:00Z"}]}
        }))
        .unwrap();
        // 1 h 30 min after the VM started: two started hours.
        let now: Timestamp = "2026-11-23T11:30:00Z".parse().unwrap();
        let priced = tree(
            std::slice::from_ref(&app),
            std::slice::from_ref(&svc),
            std::slice::from_ref(&node),
            now,
            &|_| 3,
            None,
        );
        assert!(
            priced.contains("credits 6"),
            "3 credits per VM-hour:\n{priced}"
        );
        // A metered namespace shows its ledger, with the nodes already deleted.
        let ledger = CreditAccountStatus {
            settled: vec![conpaas_crds::v1alpha1::ServiceCredits {
                service: "hello".into(),
                credits: 40,
            }],
            ..Default::default()
        };
        let metered = tree(
            std::slice::from_ref(&app),
            std::slice::from_ref(&svc),
            std::slice::from_ref(&node),
            now,
            &|_| 3,
            Some(&ledger),
        );
        assert!(
            metered.contains("services 1/1 ready  credits 40\n")
                && metered.contains("code v1  credits 40\n"),
            "{metered}"
        );
        let text = tree(&[app], &[svc], &[node], now, &|_| 1, None);
        assert_eq!(
            text,
            "Application demo  cloud local  services 1/1 ready  credits 2\n\
             └─ Service hello (\"Front\")  helloworld  RUNNING  node 1/1  code v1  credits 2\n\
             \x20    Ready=True Running: all nodes ready: node 1/1\n\
             \x20  └─ hello-node-0  node  local  127.100.0.1  VM Running  agent Ready  code v1  credits 2\n\
             \x20       Healthy=False HeartbeatStale: no heartbeat for 70s\n"
        );
    }
}
