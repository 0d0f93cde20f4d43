//! add-nodes, remove-nodes and scale: change role counts, writing where each count lives.

use anyhow::Context as _;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use super::services::MANAGER;
use crate::connect::Session;
use crate::output::structured;
use crate::roles;

/// How the given numbers change the counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
    Set,
}

/// How often a count change is retried when someone else changed the Service meanwhile.
const ATTEMPTS: usize = 5;

pub async fn change(
    s: &Session,
    service: &str,
    tokens: &[String],
    how: Change,
) -> anyhow::Result<()> {
    let current = s.service(service).await?;
    let counts = roles::parse(current.spec.r#type, tokens, how == Change::Set)?;
    let mut changed = Vec::new();
    for (role, n) in counts {
        let mut attempt = 0;
        let (from, to) = loop {
            attempt += 1;
            let svc = s.service(service).await?;
            let from = svc.spec.role_count(&role);
            let to = match how {
                Change::Add => from + n,
                Change::Set => n,
                Change::Remove => {
                    anyhow::ensure!(
                        n <= from,
                        "{service} runs {from} {role} node(s); cannot remove {n}"
                    );
                    from - n
                }
            };
            let patch = roles::count_patch(
                &svc.spec,
                &svc.resource_version().unwrap_or_default(),
                &role,
                to,
            )?;
            let pp = PatchParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            let patch: json_patch::Patch = serde_json::from_value(patch)?;
            match s
                .services()
                .patch(service, &pp, &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => break (from, to),
                // The resourceVersion test failed: someone changed the Service; read it again.
                Err(kube::Error::Api(e))
                    if (e.code == 422 || e.code == 409) && attempt < ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("set {service} role {role} to {to} nodes"));
                }
            }
        };
        changed.push((role, from, to));
    }
    let updated = s.service(service).await?;
    if !structured(s.output, &updated)? {
        for (role, from, to) in changed {
            println!("service/{service}: role {role} {from} -> {to} nodes");
        }
        println!("`cpsctl wait {service}` waits until they are Ready");
    }
    Ok(())
}
