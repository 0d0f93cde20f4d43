//! describe: Application -> Services -> nodes as a tree, with phases, conditions and their
//! messages, addresses, code versions and credit use (each started VM-hour costs its Cloud's
//! price for the instance type, 1 credit when it sets none, as ConPaaS charged).

use anyhow::Context as _;
use conpaas_crds::labels::ANNOTATION_DISPLAY_NAME;
use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
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
        print!(
            "{}",
            tree(&apps, &services, &nodes, Timestamp::now(), &price)
        );
    }
    Ok(())
}

/// A node's price in credits per VM-hour: its Cloud's `prices` for its instance type (the
/// role's, else the Cloud's default), else 1.
fn price(clouds: &[Cloud], node: &ServiceNode) -> i64 {
    let Some(cloud) = clouds.iter().find(|c| c.name_any() == node.spec.cloud) else {
        return 1;
    };
    let instance_type = node
        .spec
        .instance_type
        .clone()
        .or_else(|| cloud.spec.ec2.as_ref().map(|e| e.instance_type.clone()));
    instance_type
        .and_then(|t| cloud.spec.prices.get(&t).copied())
        .unwrap_or(1)
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
) -> String {
    let credits = |n: &ServiceNode| hours(n, now) * price(n);
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
        let app_credits: i64 = nodes
            .iter()
            .filter(|n| n.spec.application == app_name)
            .map(&credits)
            .sum();
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
            let svc_credits: i64 = svc_nodes.iter().map(|n| credits(n)).sum();
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
        );
        assert!(
            priced.contains("credits 6"),
            "3 credits per VM-hour:\n{priced}"
        );
        let text = tree(&[app], &[svc], &[node], now, &|_| 1);
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
