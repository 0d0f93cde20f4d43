//! ConPaaS application manifests (the JSON the ConPaaS director took: `Application`,
//! `Description`, `Services` with `Type`, `ServiceName`, `Cloud`, `Start`, `StartupInstances`,
//! `Archive` (a mysql Service's `Dump`: its code is an SQL dump), `StartupScript`, and
//! type-specific fields such as `Password`,
//! `VolumeStartup`, `StartRole`) turned into our resources and back.
//!
//! Fields this operator acts on become spec; fields it does not act on are named in warnings and
//! kept in the `conpaas.io/manifest-extra` annotation, so an export writes them back — except
//! `Password`, which does not belong in an annotation and is dropped (named as well).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use conpaas_crds::labels::{
    ANNOTATION_DISPLAY_NAME, ANNOTATION_MANIFEST_EXTRA, ANNOTATION_MANIFEST_INDEX,
    ANNOTATION_STARTUP_SCRIPT_URL,
};
use conpaas_crds::v1alpha1::ServiceType;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Fields of a service entry that become spec.
const SERVICE_FIELDS: [&str; 6] = [
    "Type",
    "ServiceName",
    "Cloud",
    "Start",
    "StartupInstances",
    "StartupScript",
];
/// Secrets: named, never stored.
const DROPPED: [&str; 1] = ["Password"];
/// The code version name an imported Archive (or Dump) gets.
const ARCHIVE_VERSION: &str = "v1";

/// The manifest field a type's code comes from: a mysql Service's code is its SQL `Dump`, the
/// others' their `Archive`.
fn code_field(ty: &str) -> &'static str {
    if ty == "mysql" { "Dump" } else { "Archive" }
}

/// Our type for a manifest's `Type`: a type's ConPaaS name (its descriptor's alias: `xtreemfs`
/// is the filesystem service, `scalaris` the kvstore, `hadoop` mapreduce), else the name itself.
pub fn our_type(conpaas: &str) -> String {
    let conpaas = conpaas.to_lowercase();
    ServiceType::ALL
        .iter()
        .map(|t| t.descriptor())
        .find(|d| d.conpaas_alias.as_ref().is_some_and(|a| a.name == conpaas))
        .map_or(conpaas.clone(), |d| d.name.to_string())
}

/// The ConPaaS names of a type's roles that differ from ours, as (ConPaaS, ours).
fn role_aliases(ty: &str) -> &'static [(&'static str, &'static str)] {
    ServiceType::ALL
        .iter()
        .map(|t| t.descriptor())
        .find(|d| d.name == ty)
        .and_then(|d| d.conpaas_alias.as_ref())
        .map_or(&[], |a| a.roles)
}

/// Our role for a ConPaaS role of a type: XtreemFS' `osd` nodes are storage nodes.
fn our_role(ty: &str, role: &str) -> String {
    role_aliases(ty)
        .iter()
        .find(|(conpaas, _)| *conpaas == role)
        .map_or(role, |(_, ours)| ours)
        .to_string()
}

/// The manifest's `Type` for our type (the inverse of [`our_type`]).
fn conpaas_type(ty: &str) -> &str {
    ServiceType::ALL
        .iter()
        .map(|t| t.descriptor())
        .find(|d| d.name == ty)
        .and_then(|d| d.conpaas_alias.as_ref())
        .map_or(ty, |a| a.name)
}

/// The manifest's role for our role (the inverse of [`our_role`]).
fn conpaas_role(ty: &str, role: &str) -> String {
    role_aliases(ty)
        .iter()
        .find(|(_, ours)| *ours == role)
        .map_or(role, |(conpaas, _)| conpaas)
        .to_string()
}

/// Resources made from a manifest, in the manifest's order, and what did not carry over.
pub struct Imported {
    /// The Application.
    pub application: Value,
    /// The Services.
    pub services: Vec<Value>,
    /// Fields kept without effect, or dropped, each named by its path in the manifest.
    pub warnings: Vec<String>,
}

/// A Kubernetes name from a ConPaaS name ("My Wiki" -> "my-wiki").
pub fn kube_name(text: &str, max: usize, fallback: &str) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(max).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() || !trimmed.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!(
            "{fallback}{}{trimmed}",
            if trimmed.is_empty() { "" } else { "-" }
        )
    } else {
        trimmed
    }
}

/// Builds the resources. `fetch` downloads a URL (archives are pinned by their sha256, and the
/// startup script is stored as text, since ConPaaS manifests carry URLs for both).
pub fn import(
    manifest: &Value,
    cloud: &str,
    fetch: &mut dyn FnMut(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Imported> {
    let top = manifest
        .as_object()
        .context("the manifest must be a JSON object with Application and Services")?;
    let app_title = top
        .get("Application")
        .and_then(Value::as_str)
        .context("Application: missing (the application's name)")?;
    let app_name = kube_name(app_title, 63, "app");
    let mut warnings = Vec::new();
    let mut app_extra = Map::new();
    for (key, value) in top {
        if !["Application", "Description", "Services"].contains(&key.as_str()) {
            warnings.push(format!("{key}: not acted on; kept for export"));
            app_extra.insert(key.clone(), value.clone());
        }
    }
    let mut app_annotations = Map::new();
    if app_title != app_name {
        app_annotations.insert(ANNOTATION_DISPLAY_NAME.into(), json!(app_title));
    }
    if !app_extra.is_empty() {
        app_annotations.insert(
            ANNOTATION_MANIFEST_EXTRA.into(),
            json!(Value::Object(app_extra).to_string()),
        );
    }
    let mut app_spec = json!({"cloud": cloud});
    if let Some(description) = top.get("Description") {
        app_spec["description"] = json!(description.as_str().context("Description: must be text")?);
    }
    let application = json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Application",
        "metadata": {"name": app_name, "annotations": app_annotations},
        "spec": app_spec,
    });

    let entries = match top.get("Services") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => bail!("Services: must be a list"),
    };
    let mut services = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("Services[{i}]");
        let fields = entry
            .as_object()
            .with_context(|| format!("{at}: must be an object"))?;
        let ty = fields
            .get("Type")
            .and_then(Value::as_str)
            .with_context(|| format!("{at}.Type: missing (php, mysql, generic, ...)"))?;
        let ty = our_type(ty);
        let title = fields.get("ServiceName").and_then(Value::as_str);
        let base = kube_name(title.unwrap_or(&ty), 40, "svc");
        let name = std::iter::once(base.clone())
            .chain((2..).map(|n| format!("{}-{n}", base.chars().take(37).collect::<String>())))
            .find(|n| !taken.contains(n))
            .expect("an unbounded sequence has a free name");
        taken.push(name.clone());

        let mut annotations = Map::new();
        annotations.insert(ANNOTATION_MANIFEST_INDEX.into(), json!(i.to_string()));
        if let Some(title) = title {
            annotations.insert(ANNOTATION_DISPLAY_NAME.into(), json!(title));
        }
        let mut extra = Map::new();
        for (key, value) in fields {
            if DROPPED.contains(&key.as_str()) {
                warnings.push(format!("{at}.{key}: not imported (a secret does not belong in an annotation); set it on the service again"));
            } else if key == "VolumeStartup" && ty == "filesystem" {
                // Made a volume below; its owner is kept for export.
                extra.insert(key.clone(), value.clone());
                if value.get("owner").is_some() {
                    warnings.push(format!("{at}.VolumeStartup.owner: not acted on (a volume's root belongs to the workers of the Services mounting it); kept for export"));
                }
            } else if !SERVICE_FIELDS.contains(&key.as_str()) && key != code_field(&ty) {
                warnings.push(format!(
                    "{at}.{key}: not acted on by this operator; kept for export"
                ));
                extra.insert(key.clone(), value.clone());
            }
        }

        let mut spec = json!({"application": app_name, "type": ty});
        let stopped = matches!(fields.get("Start"), Some(v) if v == &json!(0) || v == &json!("0") || v == &json!(false));
        if stopped {
            spec["state"] = json!("Stopped");
        }
        let role_cloud = match fields.get("Cloud").and_then(Value::as_str) {
            None => None,
            Some("default") => {
                extra.insert("Cloud".into(), json!("default"));
                None
            }
            Some(c) => Some(c.to_string()),
        };
        let mut roles = Vec::new();
        if let Some(instances) = fields.get("StartupInstances") {
            let instances = instances
                .as_object()
                .with_context(|| format!("{at}.StartupInstances: must map roles to counts"))?;
            for (role, count) in instances {
                let n = count
                    .as_i64()
                    .or_else(|| count.as_str().and_then(|t| t.parse().ok()))
                    .filter(|n| *n >= 0)
                    .with_context(|| {
                        format!("{at}.StartupInstances.{role}: must be a whole number >= 0")
                    })?;
                let mut r = json!({"name": our_role(&ty, role), "count": n});
                if let Some(c) = &role_cloud {
                    r["cloud"] = json!(c);
                }
                roles.push(r);
            }
        } else if let Some(c) = &role_cloud {
            warnings.push(format!("{at}.Cloud: no StartupInstances to place on {c:?}; the service runs on the application's cloud"));
            extra.insert("Cloud".into(), json!(c));
        }
        if !roles.is_empty() {
            spec["roles"] = json!(roles);
        }
        if let Some(volume) = fields
            .get("VolumeStartup")
            .filter(|_| ty == "filesystem")
            .and_then(|v| v.get("volumeName"))
            .and_then(Value::as_str)
        {
            spec["filesystem"] = json!({"volumes": [{"name": kube_name(volume, 32, "volume")}]});
        }
        let field = code_field(&ty);
        if let Some(url) = fields.get(field) {
            let url = url
                .as_str()
                .with_context(|| format!("{at}.{field}: must be a URL"))?;
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("{at}.{field}: {url:?} is not an http(s) URL");
            }
            let bytes = fetch(url).with_context(|| format!("{at}.{field}: download {url}"))?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            spec["code"] = json!({"active": ARCHIVE_VERSION, "versions": [{"name": ARCHIVE_VERSION, "url": url, "sha256": sha256}]});
        }
        if let Some(url) = fields.get("StartupScript") {
            let url = url
                .as_str()
                .with_context(|| format!("{at}.StartupScript: must be a URL"))?;
            let bytes =
                fetch(url).with_context(|| format!("{at}.StartupScript: download {url}"))?;
            let script = String::from_utf8(bytes)
                .with_context(|| format!("{at}.StartupScript: {url} is not text"))?;
            spec["startupScript"] = json!(script);
            annotations.insert(ANNOTATION_STARTUP_SCRIPT_URL.into(), json!(url));
        }
        if !extra.is_empty() {
            annotations.insert(
                ANNOTATION_MANIFEST_EXTRA.into(),
                json!(Value::Object(extra).to_string()),
            );
        }
        services.push(json!({
            "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }));
    }
    Ok(Imported {
        application,
        services,
        warnings,
    })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

fn extra(object: &Value) -> Map<String, Value> {
    annotation(object, ANNOTATION_MANIFEST_EXTRA)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Writes an Application and its Services (as the API returns them) as a ConPaaS manifest, and
/// names what a manifest cannot hold.
pub fn export(application: &Value, services: &[Value]) -> (Value, Vec<String>) {
    let mut warnings = Vec::new();
    let name = application["metadata"]["name"].as_str().unwrap_or_default();
    let mut top = Map::new();
    top.insert(
        "Application".into(),
        json!(annotation(application, ANNOTATION_DISPLAY_NAME).unwrap_or(name)),
    );
    if let Some(d) = application["spec"]["description"].as_str() {
        top.insert("Description".into(), json!(d));
    }
    top.extend(extra(application));

    let mut ordered: Vec<&Value> = services.iter().collect();
    ordered.sort_by_key(|s| {
        (
            annotation(s, ANNOTATION_MANIFEST_INDEX)
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(usize::MAX),
            s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    });
    let mut entries = Vec::new();
    for (i, svc) in ordered.iter().enumerate() {
        let at = format!("Services[{i}]");
        let spec = &svc["spec"];
        let svc_name = svc["metadata"]["name"].as_str().unwrap_or_default();
        let ty = spec["type"].as_str().unwrap_or_default();
        let mut entry = Map::new();
        entry.insert("Type".into(), json!(conpaas_type(ty)));
        match annotation(svc, ANNOTATION_DISPLAY_NAME) {
            Some(title) => {
                entry.insert("ServiceName".into(), json!(title));
            }
            None if svc_name != ty => {
                entry.insert("ServiceName".into(), json!(svc_name));
            }
            None => {}
        }
        let roles = spec["roles"].as_array().cloned().unwrap_or_default();
        let clouds: Vec<&str> = roles.iter().filter_map(|r| r["cloud"].as_str()).collect();
        if let Some(first) = clouds.first() {
            if clouds.len() == roles.len() && clouds.iter().all(|c| c == first) {
                entry.insert("Cloud".into(), json!(first));
            } else {
                warnings.push(format!(
                    "{at}.Cloud: roles of {svc_name} run on different clouds; a manifest holds one"
                ));
            }
        }
        if spec["state"] == json!("Stopped") {
            entry.insert("Start".into(), json!(0));
        }
        let mut instances: BTreeMap<String, Value> = roles
            .iter()
            .filter(|r| r["count"].is_i64())
            .map(|r| {
                (
                    conpaas_role(ty, r["name"].as_str().unwrap_or_default()),
                    r["count"].clone(),
                )
            })
            .collect();
        if let Some(replicas) = spec["replicas"].as_i64() {
            let default_role = conpaas_crds::v1alpha1::ServiceType::ALL
                .iter()
                .find(|t| t.as_str() == ty)
                .map(|t| t.descriptor().default_role)
                .unwrap_or("node");
            instances.insert(conpaas_role(ty, default_role), json!(replicas));
        }
        if !instances.is_empty() {
            entry.insert("StartupInstances".into(), json!(instances));
        }
        let code = &spec["code"];
        if let Some(active) = code["active"].as_str() {
            let version = code["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == json!(active));
            let field = code_field(ty);
            match version.and_then(|v| v["url"].as_str()) {
                Some(url) => {
                    entry.insert(field.into(), json!(url));
                }
                None => warnings.push(format!("{at}.{field}: code version {active:?} of {svc_name} comes from a ConfigMap or the artifact store, not a URL; not exported")),
            }
        }
        match (annotation(svc, ANNOTATION_STARTUP_SCRIPT_URL), spec["startupScript"].is_string()) {
            (Some(url), _) => {
                entry.insert("StartupScript".into(), json!(url));
            }
            (None, true) => warnings.push(format!("{at}.StartupScript: {svc_name}'s script was set as text; a manifest needs a URL, so it is not exported")),
            (None, false) => {}
        }
        for field in ["settings", "links"] {
            if spec[field].as_object().is_some_and(|o| !o.is_empty())
                || spec[field].as_array().is_some_and(|a| !a.is_empty())
            {
                warnings.push(format!(
                    "{at}: {svc_name}'s spec.{field} has no ConPaaS manifest field; not exported"
                ));
            }
        }
        entry.extend(extra(svc));
        entries.push(Value::Object(entry));
    }
    top.insert("Services".into(), json!(entries));
    (Value::Object(top), warnings)
}

#[cfg(test)]
mod tests;
