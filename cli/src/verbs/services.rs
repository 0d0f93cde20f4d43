//! Verbs on whole Services: create, list, start/stop, terminate, rename, startup-script.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use conpaas_crds::labels::ANNOTATION_DISPLAY_NAME;
use conpaas_crds::v1alpha1::{Application, Service, ServiceType};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::args::WaitFor;
use crate::connect::Session;
use crate::output::{Table, age, structured};
use crate::roles;

/// The field manager cpsctl writes as, so `kubectl get --show-managed-fields` tells who changed what.
pub const MANAGER: &str = "cpsctl";

pub async fn create(
    s: &Session,
    ty: ServiceType,
    app: &str,
    name: Option<String>,
    cloud: Option<String>,
    stopped: bool,
    counts: &[String],
) -> anyhow::Result<()> {
    let counts = if counts.is_empty() {
        Vec::new()
    } else {
        roles::parse(ty, counts, false)?
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let role_cloud = if s.applications().get_opt(app).await?.is_some() {
        cloud
    } else {
        let cloud = match cloud {
            Some(c) => c,
            None => s.only_cloud().await?,
        };
        let application: Application = serde_json::from_value(json!({
            "apiVersion": "conpaas.io/v1alpha1", "kind": "Application",
            "metadata": {"name": app}, "spec": {"cloud": cloud}
        }))?;
        s.applications()
            .create(&pp, &application)
            .await
            .with_context(|| format!("create Application {app:?}"))?;
        println!("application/{app} created (cloud {cloud})");
        None
    };
    let name = match name {
        Some(n) => n,
        None => free_name(&s.services(), ty.as_str()).await?,
    };
    let mut spec = json!({
        "application": app,
        "type": ty.as_str(),
        "state": if stopped { "Stopped" } else { "Running" },
    });
    let mut entries: Vec<Value> = Vec::new();
    let descriptor = ty.descriptor();
    for role in descriptor.roles.iter().map(|r| r.name) {
        let count = counts.iter().find(|(r, _)| r == role).map(|(_, c)| *c);
        if role == descriptor.default_role {
            if let Some(count) = count {
                spec["replicas"] = json!(count);
            }
            if let Some(cloud) = &role_cloud {
                entries.push(json!({"name": role, "cloud": cloud}));
            }
        } else if count.is_some() || role_cloud.is_some() {
            let mut entry = json!({"name": role});
            if let Some(count) = count {
                entry["count"] = json!(count);
            }
            if let Some(cloud) = &role_cloud {
                entry["cloud"] = json!(cloud);
            }
            entries.push(entry);
        }
    }
    if !entries.is_empty() {
        spec["roles"] = Value::Array(entries);
    }
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": name}, "spec": spec
    }))?;
    let created = s
        .services()
        .create(&pp, &service)
        .await
        .with_context(|| format!("create Service {name:?}"))?;
    if !structured(s.output, &created)? {
        println!(
            "service/{name} created in application {app}; `cpsctl wait {name}` waits until it is Ready"
        );
    }
    Ok(())
}

/// The type's name if no Service has it, else the first free `type-N` (ConPaaS named duplicates
/// "name (2)").
async fn free_name(api: &Api<Service>, base: &str) -> anyhow::Result<String> {
    let taken: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    Ok(std::iter::once(base.to_string())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|n| !taken.contains(n))
        .expect("an unbounded sequence has a free name"))
}

pub async fn list(s: &Session, app: Option<&str>, all_namespaces: bool) -> anyhow::Result<()> {
    let api: Api<Service> = if all_namespaces {
        Api::all(s.client.clone())
    } else {
        s.services()
    };
    let mut services: Vec<Service> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|svc| app.is_none_or(|a| svc.spec.application == a))
        .collect();
    services.sort_by_key(|svc| {
        (
            svc.namespace(),
            svc.spec.application.clone(),
            svc.name_any(),
        )
    });
    if structured(
        s.output,
        &json!({"apiVersion": "v1", "kind": "List", "items": services}),
    )? {
        return Ok(());
    }
    let with_display = services
        .iter()
        .any(|svc| svc.annotations().contains_key(ANNOTATION_DISPLAY_NAME));
    let mut headers = vec![
        "application",
        "name",
        "type",
        "phase",
        "ready",
        "code",
        "age",
    ];
    if with_display {
        headers.insert(2, "display-name");
    }
    if all_namespaces {
        headers.insert(0, "namespace");
    }
    let mut table = Table::new(&headers);
    let now = Timestamp::now();
    for svc in &services {
        let status = svc.status.clone().unwrap_or_default();
        let mut row = vec![
            svc.spec.application.clone(),
            svc.name_any(),
            svc.spec.r#type.as_str().into(),
            status.phase.as_str().into(),
            status.ready.unwrap_or_default(),
            status.active_code_version.unwrap_or_default(),
            svc.creation_timestamp()
                .map(|t| age(now.duration_since(t.0).as_secs()))
                .unwrap_or_default(),
        ];
        if with_display {
            row.insert(
                2,
                svc.annotations()
                    .get(ANNOTATION_DISPLAY_NAME)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        if all_namespaces {
            row.insert(0, svc.namespace().unwrap_or_default());
        }
        table.row(row);
    }
    table.print_or(&format!(
        "no Services in namespace {:?}; `cpsctl create helloworld` makes one",
        s.namespace
    ));
    Ok(())
}

/// Applies a JSON merge patch to a Service that must exist, as `cpsctl`.
async fn merge(s: &Session, service: &str, patch: Value) -> anyhow::Result<Service> {
    s.service(service).await?;
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    s.services()
        .patch(service, &pp, &Patch::Merge(patch))
        .await
        .with_context(|| format!("update Service {service:?}"))
}

pub async fn set_state(s: &Session, service: &str, state: &str) -> anyhow::Result<()> {
    let updated = merge(s, service, json!({"spec": {"state": state}})).await?;
    if !structured(s.output, &updated)? {
        let next = if state == "Running" {
            ""
        } else {
            " --for stopped"
        };
        println!(
            "service/{service} {}; `cpsctl wait {service}{next}` follows it",
            state.to_lowercase()
        );
    }
    Ok(())
}

pub async fn rename(s: &Session, service: &str, display_name: &str) -> anyhow::Result<()> {
    let updated = merge(
        s,
        service,
        json!({"metadata": {"annotations": {ANNOTATION_DISPLAY_NAME: display_name}}}),
    )
    .await?;
    if !structured(s.output, &updated)? {
        println!("service/{service} is now shown as {display_name:?}");
    }
    Ok(())
}

pub async fn startup_script(s: &Session, service: &str, file: &Path) -> anyhow::Result<()> {
    let script = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the script from standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let updated = merge(s, service, json!({"spec": {"startupScript": script}})).await?;
    if !structured(s.output, &updated)? {
        println!(
            "service/{service}: startup script set ({} bytes); nodes created from now on run it",
            script.len()
        );
    }
    Ok(())
}

pub async fn terminate(s: &Session, service: &str, wait: bool) -> anyhow::Result<ExitCode> {
    s.service(service).await?;
    s.services()
        .delete(service, &DeleteParams::default())
        .await
        .with_context(|| format!("delete Service {service:?}"))?;
    println!("service/{service} terminating: its VMs are terminated before it goes");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    super::wait::wait(s, service, WaitFor::Deleted, Duration::from_secs(300)).await
}
