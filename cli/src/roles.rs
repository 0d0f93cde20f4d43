//! Role counts: parsing `--<role> N` and the JSON patch
//! that changes one — written where the count lives today, so a GitOps manifest that sets
//! `roles[].count` and `kubectl scale` (which sets `spec.replicas`) both keep working.

use anyhow::{Context as _, bail};
use conpaas_crds::v1alpha1::{ServiceSpec, ServiceType};
use serde_json::{Value, json};

/// Global flags people may type after the role counts by habit.
const GLOBAL_FLAGS: [&str; 6] = [
    "-n",
    "--namespace",
    "-o",
    "--output",
    "--context",
    "--kubeconfig",
];

/// Parses `--node 2 --web=3` into `[("node", 2), ("web", 3)]`, checking the roles exist for
/// `ty`. With `bare_default`, a lone number means the type's default role.
pub fn parse(
    ty: ServiceType,
    tokens: &[String],
    bare_default: bool,
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    let mut rest = tokens.iter();
    while let Some(token) = rest.next() {
        let (role, value) = if let Some(flag) = token.strip_prefix("--") {
            match flag.split_once('=') {
                Some((role, value)) => (role.to_string(), value.to_string()),
                None => {
                    let value = rest
                        .next()
                        .with_context(|| format!("{token} needs a node count, e.g. {token} 2"))?;
                    (flag.to_string(), value.clone())
                }
            }
        } else if bare_default && out.is_empty() && token.parse::<i32>().is_ok() {
            (ty.descriptor().default_role.to_string(), token.clone())
        } else {
            bail!("expected --<role> N, got {token:?}; {}", roles_hint(ty));
        };
        if GLOBAL_FLAGS.contains(&format!("--{role}").as_str()) {
            bail!(
                "--{role} is a cpsctl flag: put it before the verb (cpsctl --{role} ... add-nodes ...)"
            );
        }
        if ty.descriptor().role(&role).is_none() {
            bail!("{} has no role {role:?}; {}", ty.as_str(), roles_hint(ty));
        }
        let count: i32 =
            value.parse().ok().filter(|n| *n >= 0).with_context(|| {
                format!("--{role} {value}: the count must be a whole number >= 0")
            })?;
        out.push((role, count));
    }
    if out.is_empty() {
        bail!("no role counts given; {}", roles_hint(ty));
    }
    Ok(out)
}

fn roles_hint(ty: ServiceType) -> String {
    let roles: Vec<String> = ty
        .descriptor()
        .roles
        .iter()
        .map(|r| format!("--{} N", r.name))
        .collect();
    format!("{} takes {}", ty.as_str(), roles.join(", "))
}

/// JSON patch operations that set `role` to `count`, guarded by `resource_version` so a
/// concurrent change fails the patch instead of being overwritten.
pub fn count_patch(
    spec: &ServiceSpec,
    resource_version: &str,
    role: &str,
    count: i32,
) -> anyhow::Result<Value> {
    let ty = spec.r#type;
    let descriptor = ty.descriptor();
    if let Some(fixed_count) = descriptor.role(role).and_then(|r| r.fixed()) {
        bail!(
            "a {} service always has exactly {fixed_count} {role}; scale its other roles",
            ty.as_str()
        );
    }
    let entry = spec.roles.iter().position(|r| r.name == role);
    let entry_has_count = entry.is_some_and(|i| spec.roles[i].count.is_some());
    let set = if role == descriptor.default_role && (spec.replicas.is_some() || !entry_has_count) {
        json!({"op": "add", "path": "/spec/replicas", "value": count})
    } else if let Some(i) = entry {
        json!({"op": "add", "path": format!("/spec/roles/{i}/count"), "value": count})
    } else if spec.roles.is_empty() {
        json!({"op": "add", "path": "/spec/roles", "value": [{"name": role, "count": count}]})
    } else {
        json!({"op": "add", "path": "/spec/roles/-", "value": {"name": role, "count": count}})
    };
    Ok(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        set
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ty: &str, roles: Value, replicas: Option<i32>) -> ServiceSpec {
        serde_json::from_value(
            json!({"application": "demo", "type": ty, "roles": roles, "replicas": replicas}),
        )
        .unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counts_parse_and_unknown_roles_name_the_valid_ones() {
        let ty = ServiceType::Generic;
        assert_eq!(
            parse(ty, &strings(&["--node", "2", "--master=1"]), false).unwrap(),
            vec![("node".to_string(), 2), ("master".to_string(), 1)]
        );
        assert_eq!(
            parse(ty, &strings(&["4"]), true).unwrap(),
            vec![("node".to_string(), 4)]
        );
        let err = parse(ty, &strings(&["--web", "2"]), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no role \"web\"") && err.contains("--master N, --node N"),
            "{err}"
        );
        let err = parse(ty, &strings(&["--node", "-1"]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(">= 0"), "{err}");
        let err = parse(ty, &strings(&["--node"]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a node count"), "{err}");
        let err = parse(ty, &strings(&["--node", "1", "-n", "x"]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected --<role> N"), "{err}");
        let err = parse(ty, &strings(&["--namespace=x"]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("before the verb"), "{err}");
    }

    #[test]
    fn the_patch_writes_where_the_count_lives() {
        let path = |s: &ServiceSpec, role: &str| {
            let p = count_patch(s, "42", role, 7).unwrap();
            assert_eq!(p[0]["value"], "42", "guarded by the resourceVersion");
            (
                p[1]["path"].as_str().unwrap().to_string(),
                p[1]["value"].clone(),
            )
        };
        // A GitOps manifest that sets roles[node].count keeps owning it.
        let gitops = spec("helloworld", json!([{"name": "node", "count": 3}]), None);
        assert_eq!(path(&gitops, "node").0, "/spec/roles/0/count");
        // Nothing set, or replicas set (kubectl scale): replicas.
        assert_eq!(
            path(&spec("helloworld", json!([]), None), "node").0,
            "/spec/replicas"
        );
        let placed = spec(
            "generic",
            json!([{"name": "node", "cloud": "aws"}]),
            Some(2),
        );
        assert_eq!(path(&placed, "node").0, "/spec/replicas");
        let other = spec("generic", json!([{"name": "node", "count": 1}]), None);
        let err = count_patch(&other, "1", "master", 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly 1 master"), "{err}");
    }
}
