//! import and export of ConPaaS manifests (the conversion itself is in `crate::manifest`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use conpaas_crds::v1alpha1::ServiceType;
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::services::MANAGER;
use crate::args::Output;
use crate::connect::Session;
use crate::manifest;
use crate::output::structured;

pub async fn import(
    s: &Session,
    file: &Path,
    cloud: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("read the manifest from standard input")?;
        t
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let parsed: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let cloud = match cloud {
        Some(c) => c,
        None => s.only_cloud().await?,
    };
    // Types this ConPaaS does not run are refused before anything is downloaded or applied.
    let unsupported: Vec<String> = parsed["Services"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, svc)| {
            let ty = crate::manifest::our_type(svc["Type"].as_str().unwrap_or_default());
            (!ServiceType::ALL.iter().any(|t| t.as_str() == ty))
                .then(|| format!("Services[{i}].Type {ty}"))
        })
        .collect();
    if !unsupported.is_empty() && !dry_run {
        let known: Vec<&str> = ServiceType::ALL.iter().map(|t| t.as_str()).collect();
        anyhow::bail!(
            "{}: not a type this ConPaaS runs yet ({}); nothing was applied (`--dry-run -o yaml` shows the resources)",
            unsupported.join(", "),
            known.join(", ")
        );
    }
    let downloads = download(&parsed).await?;
    let mut fetch = |url: &str| {
        downloads
            .get(url)
            .cloned()
            .with_context(|| format!("{url} was not downloaded"))
    };
    let imported = manifest::import(&parsed, &cloud, &mut fetch)?;
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    let objects: Vec<Value> = std::iter::once(imported.application.clone())
        .chain(imported.services.clone())
        .collect();
    if dry_run {
        let output = if s.output == Output::Table {
            Output::Yaml
        } else {
            s.output
        };
        structured(
            output,
            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}),
        )?;
        return Ok(());
    }
    // Everything is checked by the API server first, so a rejected object applies nothing.
    for dry in [true, false] {
        for object in &objects {
            apply(s, object, dry).await?;
        }
    }
    for object in &objects {
        println!(
            "{}/{} applied",
            object["kind"].as_str().unwrap_or_default().to_lowercase(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// Downloads every Archive and StartupScript URL of the manifest once.
async fn download(manifest: &Value) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let mut out = BTreeMap::new();
    for svc in manifest["Services"].as_array().into_iter().flatten() {
        for field in ["Archive", "StartupScript"] {
            let Some(url) = svc[field].as_str() else {
                continue;
            };
            if out.contains_key(url) || !(url.starts_with("http://") || url.starts_with("https://"))
            {
                continue;
            }
            let bytes = http
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("{field}: download {url}"))?
                .bytes()
                .await
                .with_context(|| format!("{field}: download {url}"))?;
            out.insert(url.to_string(), bytes.to_vec());
        }
    }
    Ok(out)
}

async fn apply(s: &Session, object: &Value, dry_run: bool) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(object.clone())?;
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = match kind {
        "Application" => {
            kube::discovery::ApiResource::erase::<conpaas_crds::v1alpha1::Application>(&())
        }
        _ => kube::discovery::ApiResource::erase::<conpaas_crds::v1alpha1::Service>(&()),
    };
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(s.client.clone(), &s.namespace, &resource);
    let mut pp = PatchParams::apply(MANAGER);
    if dry_run {
        pp = pp.dry_run();
    }
    api.patch(&obj.name_any(), &pp, &Patch::Apply(&obj))
        .await
        .with_context(|| {
            format!(
                "{kind} {:?} was rejected; nothing was applied",
                obj.name_any()
            )
        })?;
    Ok(())
}

pub async fn export(s: &Session, app: &str) -> anyhow::Result<()> {
    let application = s.applications().get_opt(app).await?.with_context(|| {
        format!(
            "no Application {app:?} in namespace {:?}; `cpsctl describe` lists them",
            s.namespace
        )
    })?;
    let services: Vec<Value> = s
        .services()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|svc| svc.spec.application == app)
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let (manifest, warnings) = manifest::export(&serde_json::to_value(&application)?, &services);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !structured(s.output, &manifest)? {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    }
    Ok(())
}
