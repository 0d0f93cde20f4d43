//! Read-only verbs: usage (a type's roles and settings), clouds, plan.

use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::{ServiceType, find_condition};
use conpaas_planner::service::plan::Action;
use conpaas_planner::service::preview;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use crate::args::Output;
use crate::connect::Session;
use crate::output::{Table, structured};

pub fn usage(output: Output, ty: ServiceType) -> anyhow::Result<()> {
    let d = ty.descriptor();
    let roles: Vec<_> = d
        .roles
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "summary": r.summary,
                "defaultCount": r.default_count,
                "min": r.min,
                "max": r.max,
                "fixed": r.fixed().is_some(),
                "scaledByReplicas": r.name == d.default_role,
            })
        })
        .collect();
    let settings: Vec<_> = d
        .settings
        .iter()
        .map(|s| {
            json!({
                "key": s.key,
                "description": s.description,
                "accepted": s.check.describe(),
                "default": s.default,
            })
        })
        .collect();
    let value = json!({
        "type": d.name,
        "summary": d.summary,
        "roles": roles,
        "settings": settings,
        "membersKnown": d.members,
    });
    if structured(output, &value)? {
        return Ok(());
    }
    println!("{}: {}", d.name, d.summary);
    println!("roles:");
    for r in d.roles {
        let count = r.default_count;
        let name = r.name;
        let note = match r.fixed() {
            Some(n) => format!("always exactly {n}"),
            None if name == d.default_role => {
                format!("default {count}; --{name} N, spec.replicas, kubectl scale")
            }
            None => format!("default {count}; --{name} N"),
        };
        println!("  {name:<10} {note}; {}", r.summary);
    }
    if d.settings.is_empty() {
        println!("settings: none");
    } else {
        println!("settings (spec.settings):");
        for s in d.settings {
            let default = s
                .default
                .map(|v| format!("; default {v:?}"))
                .unwrap_or_default();
            println!(
                "  {:<10} {} ({}{default})",
                s.key,
                s.description,
                s.check.describe()
            );
        }
    }
    Ok(())
}

pub async fn clouds(s: &Session) -> anyhow::Result<()> {
    let clouds = s.clouds().list(&ListParams::default()).await?.items;
    if structured(
        s.output,
        &json!({"apiVersion": "v1", "kind": "List", "items": clouds}),
    )? {
        return Ok(());
    }
    let mut table = Table::new(&["name", "provider", "ready", "nodes", "message"]);
    for cloud in &clouds {
        let st = cloud.status.clone().unwrap_or_default();
        let ready = find_condition(&st.conditions, READY);
        table.row(vec![
            cloud.name_any(),
            st.provider.clone().unwrap_or_default(),
            ready.map(|c| c.status.clone()).unwrap_or_default(),
            st.nodes.map(|n| n.to_string()).unwrap_or_default(),
            ready.map(|c| c.message.clone()).unwrap_or_default(),
        ]);
    }
    table.print_or(
        "no Clouds; an admin creates one (kind: Cloud, see manifests/examples/helloworld.yaml)",
    );
    Ok(())
}

pub async fn plan(s: &Session, service: &str) -> anyhow::Result<()> {
    let svc = s.service(service).await?;
    let p = preview(&s.client, &svc, &|_| None).await?;
    let actions: Vec<_> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::CreateNode { name, spec } => {
                json!({"action": "create", "node": name, "role": spec.role, "cloud": spec.cloud})
            }
            Action::DeleteNode { name, reason } => {
                json!({"action": "delete", "node": name, "reason": reason})
            }
            Action::PatchNodeSpec { name, .. } => json!({"action": "update", "node": name}),
        })
        .collect();
    let roles: Vec<_> = match &p.desired {
        Ok(d) => d
            .roles
            .iter()
            .map(|r| {
                let of_role = p
                    .observed
                    .nodes
                    .iter()
                    .filter(|n| n.spec.role == r.name && !n.deleting);
                json!({
                    "role": r.name,
                    "cloud": r.cloud,
                    "desired": if d.running { r.count } else { 0 },
                    "current": of_role.clone().count(),
                    "ready": of_role.filter(|n| n.ready).count(),
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let problem = p
        .desired
        .as_ref()
        .err()
        .map(|e| json!({"reason": e.reason, "message": e.message}));
    let rollback = p
        .rollback
        .as_ref()
        .map(|r| json!({"to": r.to, "failed": r.failed}));
    let events: Vec<_> = p
        .events
        .iter()
        .map(|e| json!({"type": if e.warning { "Warning" } else { "Normal" }, "reason": e.reason, "note": e.note}))
        .collect();
    let value = json!({
        "service": service,
        "roles": roles,
        "actions": actions,
        "problem": problem,
        "rollback": rollback,
        "events": events,
        "phase": p.status.phase.as_str(),
        "requeueSeconds": p.requeue.as_secs_f64(),
    });
    if structured(s.output, &value)? {
        return Ok(());
    }
    if let Err(problem) = &p.desired {
        println!(
            "service/{service} cannot be satisfied ({}): {}",
            problem.reason, problem.message
        );
        println!("nothing will change until that is fixed");
        return Ok(());
    }
    println!("phase {}", p.status.phase.as_str());
    let mut table = Table::new(&["role", "cloud", "desired", "current", "ready"]);
    for r in &roles {
        table.row(
            ["role", "cloud", "desired", "current", "ready"]
                .iter()
                .map(|k| {
                    r[k].as_str()
                        .map(String::from)
                        .unwrap_or_else(|| r[k].to_string())
                })
                .collect(),
        );
    }
    print!("{}", table.render());
    if actions.is_empty() {
        println!("no changes: the nodes match the spec");
    }
    for a in &p.actions {
        match a {
            Action::CreateNode { name, spec } => {
                println!(
                    "+ create {name} (role {} on cloud {})",
                    spec.role, spec.cloud
                )
            }
            Action::DeleteNode { name, reason } => println!("- delete {name} ({reason})"),
            Action::PatchNodeSpec { name, .. } => {
                println!("~ update {name} (settings, code or members)")
            }
        }
    }
    if let Some(r) = &p.rollback {
        println!(
            "< roll back spec.code.active to {} ({} failed)",
            r.to, r.failed
        );
    }
    for e in &p.events {
        let kind = if e.warning { "Warning" } else { "Normal" };
        println!("! event {kind} {}: {}", e.reason, e.note);
    }
    Ok(())
}
