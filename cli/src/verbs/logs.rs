//! logs: each node's agent log, read through the API server (the code API's `services/logs`:
//! the controller fetches it from the agent, so no credential of the reader goes to a VM), or
//! with `--controller` the controller's side: the Events it recorded about the Service and its
//! nodes and, when it runs in the cluster, its log lines that name the Service.

use std::collections::BTreeSet;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};

use crate::connect::Session;

/// Label the Helm chart puts on the controller's pods.
const CONTROLLER_POD_SELECTOR: &str =
    "app.kubernetes.io/name=conpaas,app.kubernetes.io/component=controller";

pub async fn logs(
    s: &Session,
    service: &str,
    role: Option<String>,
    node: Option<String>,
    controller: bool,
    tail: usize,
    file: Option<String>,
) -> anyhow::Result<()> {
    s.service(service).await?;
    let nodes: Vec<_> = s
        .nodes_of(service)
        .await?
        .into_iter()
        .filter(|n| role.as_ref().is_none_or(|r| &n.spec.role == r))
        .filter(|n| node.as_ref().is_none_or(|x| &n.name_any() == x))
        .collect();
    if controller {
        let mut names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        names.insert(service.to_string());
        return controller_side(s, service, &names, tail).await;
    }
    if nodes.is_empty() {
        anyhow::bail!(
            "service/{service} has no matching nodes; `cpsctl describe {service}` shows them"
        );
    }
    for n in &nodes {
        let name = n.name_any();
        println!("==> {name} (role {}) <==", n.spec.role);
        let mut url = reqwest::Url::parse("https://api.invalid")
            .expect("a URL")
            .join(&conpaas_crds::code_api::logs_path(&s.namespace, service))
            .context("the logs path")?;
        url.query_pairs_mut()
            .append_pair("node", &name)
            .append_pair("tail", &tail.to_string());
        if let Some(file) = &file {
            url.query_pairs_mut().append_pair("file", file);
        }
        let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        let request = http::Request::get(&path)
            .body(Vec::new())
            .context("build the request")?;
        match s.client.request_text(request).await {
            Ok(text) => print!("{text}"),
            Err(kube::Error::Api(status)) => println!("{}", status.message),
            Err(e) => println!("{path}: {e}"),
        }
    }
    Ok(())
}

async fn controller_side(
    s: &Session,
    service: &str,
    names: &BTreeSet<String>,
    tail: usize,
) -> anyhow::Result<()> {
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.namespace);
    let mut list: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .context("list Events")?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_ref())
                .is_some_and(|n| names.contains(n))
        })
        .collect();
    list.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    println!("==> events of service/{service} and its nodes <==");
    let skip = list.len().saturating_sub(tail);
    for e in &list[skip..] {
        let when = e
            .event_time
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| {
                e.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
            })
            .unwrap_or_default();
        println!(
            "{when}  {}  {}  {}  {}",
            e.type_.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-"),
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .unwrap_or("-"),
            e.note.as_deref().unwrap_or(""),
        );
    }
    let pods: Api<Pod> = Api::all(s.client.clone());
    let found = pods
        .list(&ListParams::default().labels(CONTROLLER_POD_SELECTOR))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    if found.is_empty() {
        println!(
            "(no controller pod in the cluster: it runs elsewhere, so its log is wherever it was started)"
        );
    }
    for pod in found {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(s.client.clone(), &ns);
        println!(
            "==> controller pod {ns}/{} (lines naming {service}) <==",
            pod.name_any()
        );
        let text = api
            .logs(
                &pod.name_any(),
                &LogParams {
                    tail_lines: Some(10_000),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| format!("cannot read its log: {e}\n"));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
            .collect();
        let skip = lines.len().saturating_sub(tail);
        for line in &lines[skip..] {
            println!("{line}");
        }
    }
    Ok(())
}
