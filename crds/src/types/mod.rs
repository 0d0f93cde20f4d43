//! Service types, one module per type, each a [`TypeDescriptor`]: its roles with their counts,
//! the role `kubectl scale` counts, its settings and how they are checked, whether its nodes learn
//! their members, and what a link to it exports. The CRD's CEL rules ([`crate::generate`]), the
//! controller's validation, `cpsctl usage` and `docs/service-types.md` are all derived from it.
//!
//! Adding a type: a module here with its descriptor, a [`ServiceType`] variant and its arm in
//! [`ServiceType::descriptor`] (the registration line), a role module in the agent, and, when it
//! has structured configuration, a typed section `spec.<type>` (see [`crate::v1alpha1::GenericSpec`]).
//! The README's "Adding a service type" lists every step.

pub mod filesystem;
pub mod generic;
pub mod helloworld;
pub mod java;
pub mod kvstore;
pub mod links;
pub mod mapreduce;
pub mod mysql;
pub mod php;
mod settings;

pub use links::LinkExport;
pub use settings::{SettingCheck, SettingDescriptor};

use crate::v1alpha1::{ServiceSpec, ServiceType};

/// Everything the operator knows about one service type.
#[derive(Debug)]
pub struct TypeDescriptor {
    /// The name used in manifests (`spec.type`).
    pub name: &'static str,
    /// One line on what the service is, for `cpsctl usage` and the docs.
    pub summary: &'static str,
    /// Its roles, in the order documentation lists them.
    pub roles: &'static [RoleDescriptor],
    /// The role `spec.replicas` and `kubectl scale` count.
    pub default_role: &'static str,
    /// The keys of `spec.settings` it reads.
    pub settings: &'static [SettingDescriptor],
    /// Whether every node is told the service's members and their addresses.
    pub members: bool,
    /// The environment variables a Service linking to this one receives (`<AS>_<name>`, `<AS>`
    /// being the link's name in capitals), each with what it holds and how its value is made.
    pub link_exports: &'static [LinkExport],
    /// The Secret the type keeps its credentials in, if it has one.
    pub credentials: Option<&'static CredentialsDescriptor>,
    /// Whether its nodes run user code: they get the environment of its links to other Services
    /// (every one of these types the same, [`links::environment`]) and mount the filesystem
    /// volumes it links to.
    pub runs_user_code: bool,
    /// What a type refuses of a role's count beyond its min and max (kvstore: too few masters
    /// for Redis Cluster; filesystem: fewer storage nodes than a volume's group), checked on the
    /// spec and on an autoscaler's count alike.
    pub check_count: Option<CountCheck>,
    /// The type's name in ConPaaS manifests when it differs (`scalaris` for kvstore), and its
    /// roles' ConPaaS names that differ (`osd` for filesystem `storage`): `cpsctl manifest`
    /// imports and exports them.
    pub conpaas_alias: Option<ConpaasAlias>,
    /// Roles whose nodes route traffic to the others (php `proxy`): a leaving node is released
    /// from its drain only once every ready router stopped routing to it.
    pub routers: &'static [&'static str],
    /// How long a leaving node may finish its work in flight unless `spec.drainSeconds` says;
    /// 0 with no routers deletes leaving nodes at once.
    pub drain_seconds: i32,
    /// Where clients reach the service, written to `status.url`.
    pub access: Option<Access>,
    /// `host:port` clients connect to, written to `status.endpoint` (and what links export).
    pub endpoint: Option<Access>,
    /// The role whose first serving node saves the Service's data when it stops (mysql: a dump
    /// of the database), kept in the artifact store and restored when it starts again; None:
    /// a stop keeps nothing.
    pub saved_on_stop: Option<&'static str>,
    /// Where the data of a node of the `saved_on_stop` role has copies, as the Service's spec
    /// sets it up: an unhealthy node of that role is replaced automatically only while a copy
    /// of its data lives on Ready nodes. Given exactly when `saved_on_stop` is.
    pub data_copies: Option<fn(&ServiceSpec) -> DataCopies>,
    /// Roles whose daemons restart to take a change of their links (java backends: the JVM's
    /// environment): such a change rolls over their nodes one at a time, as a code version does.
    pub restart_on_link_change: &'static [&'static str],
}

/// Where a data node's data has copies besides the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCopies {
    /// Nowhere: losing the node loses its data (a one-node database, a kvstore without
    /// replicas, a volume with one copy of each file).
    None,
    /// On every Ready node of the role (Galera: each node holds the whole database).
    EveryNode,
    /// On some other nodes of the role (a master's replicas, a brick's group): which ones is
    /// the engine's to say, so a copy is sure only while every other node of the role is Ready.
    Replicated,
}

/// The Secret `<service>-<suffix>` holding a type's credentials, made by the controller (owned
/// by the Service) unless it exists; the type's own nodes may read it.
#[derive(Debug)]
pub struct CredentialsDescriptor {
    pub suffix: &'static str,
    /// Its keys, each with the value it is made with.
    pub keys: &'static [(&'static str, SecretValue)],
    /// Whether the nodes of a Service linking to this one may read it (the link exports values
    /// of it); mapreduce's Spark secret stays with the Service's own nodes.
    pub shared_with_links: bool,
}

impl CredentialsDescriptor {
    /// The Secret's name for `service`.
    pub fn secret_name(&self, service: &str) -> String {
        format!("{service}-{}", self.suffix)
    }

    /// The keys and first values of a new Secret.
    pub fn initial_values(&self) -> Vec<(&'static str, String)> {
        self.keys
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    SecretValue::Fixed(v) => v.to_string(),
                    SecretValue::Random => random_secret(),
                };
                (*key, value)
            })
            .collect()
    }
}

/// A type's check of a role's count (the spec, the role, the count).
pub type CountCheck = fn(&ServiceSpec, &str, i32) -> Result<(), CountRefusal>;

/// Why a type refuses a role's count: a PascalCase reason and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRefusal {
    pub reason: &'static str,
    pub message: String,
}

/// How a credentials Secret's key is first filled.
#[derive(Debug)]
pub enum SecretValue {
    Fixed(&'static str),
    /// 32 random hex digits.
    Random,
}

/// A new secret value: 32 hex digits from the system's random source (two v4 UUIDs' random bits).
pub fn random_secret() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{}", &a[..16], &b[..16])
}

/// A type's names in ConPaaS manifests.
#[derive(Debug)]
pub struct ConpaasAlias {
    pub name: &'static str,
    /// (ConPaaS role name, our role name).
    pub roles: &'static [(&'static str, &'static str)],
}

/// Where clients reach a service: a URL on the node with the lowest ordinal (which a scale-down
/// never removes) of the first of `roles` that has one.
#[derive(Debug)]
pub struct Access {
    /// The roles whose first node serves clients, in order of preference (mysql: a `glb` if
    /// there is one, else the first `mysql` node).
    pub roles: &'static [&'static str],
    /// The URL, with `{address}` for that node's address.
    pub url: &'static str,
    /// How many nodes it names, by ordinal, separated by commas (kvstore: seed nodes a
    /// cluster client starts from; 1 for the rest).
    pub seeds: usize,
}

impl Access {
    /// The URL on a node at `address`.
    pub fn url(&self, address: &str) -> String {
        self.url.replace("{address}", address)
    }
}

/// One role of a type.
#[derive(Debug)]
pub struct RoleDescriptor {
    /// Role name, as in `spec.roles[].name`.
    pub name: &'static str,
    /// What nodes of this role do.
    pub summary: &'static str,
    /// Nodes it runs when the spec leaves its count out.
    pub default_count: i32,
    /// The fewest nodes it may run while the service runs.
    pub min: i32,
    /// The most nodes it may run; `None` is the API's own bound.
    pub max: Option<i32>,
}

impl RoleDescriptor {
    /// The count of a role that runs exactly one number of nodes (the generic master).
    pub fn fixed(&self) -> Option<i32> {
        (self.max == Some(self.min)).then_some(self.min)
    }
}

impl TypeDescriptor {
    /// The role of this name.
    pub fn role(&self, name: &str) -> Option<&'static RoleDescriptor> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// The setting of this key.
    pub fn setting(&self, key: &str) -> Option<&'static SettingDescriptor> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// Checks every key and value of `settings`: an unknown key or a refused value names the
    /// key, what is wrong and what is accepted.
    pub fn check_settings<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), String> {
        for (key, value) in settings {
            let Some(setting) = self.setting(key) else {
                let known: Vec<&str> = self.settings.iter().map(|s| s.key).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(format!(
                    "spec.settings.{key}: not a setting of type {} (known: {known})",
                    self.name
                ));
            };
            setting
                .check
                .check(value)
                .map_err(|why| format!("spec.settings.{key}: {why}"))?;
        }
        Ok(())
    }
}

impl ServiceSpec {
    /// The number of nodes `role` runs, by the one precedence the controller and cpsctl share: a
    /// fixed role's count, then `spec.replicas` for the default role, then the role entry's
    /// count, then the type's default. 0 for a role the type does not have.
    pub fn role_count(&self, role: &str) -> i32 {
        let descriptor = self.r#type.descriptor();
        let Some(role_descriptor) = descriptor.role(role) else {
            return 0;
        };
        if let Some(count) = role_descriptor.fixed() {
            return count;
        }
        if role == descriptor.default_role
            && let Some(replicas) = self.replicas
        {
            return replicas;
        }
        self.roles
            .iter()
            .find(|r| r.name == role)
            .and_then(|r| r.count)
            .unwrap_or(role_descriptor.default_count)
    }
}

/// The service types as a Markdown page (`docs/service-types.md`, written by `crdgen --docs`).
pub fn markdown() -> String {
    let mut out = String::from(
        "<!-- Generated by `make crds` (crdgen --docs) from crds/src/types; do not edit. -->\n# Service types\n",
    );
    for ty in ServiceType::ALL {
        let d = ty.descriptor();
        out.push_str(&format!("\n## `{}`\n\n{}\n\n", d.name, d.summary));
        out.push_str("| role | does | default count | min | max |\n|---|---|---|---|---|\n");
        for r in d.roles {
            let default = if r.name == d.default_role {
                format!("{} (`spec.replicas`, `kubectl scale`)", r.default_count)
            } else {
                r.default_count.to_string()
            };
            let max = r.max.map_or("-".to_string(), |m| m.to_string());
            out.push_str(&format!(
                "| `{}` | {} | {default} | {} | {max} |\n",
                r.name, r.summary, r.min
            ));
        }
        if d.settings.is_empty() {
            out.push_str("\nSettings: none.\n");
        } else {
            out.push_str("\n| setting | what it does | accepted | default |\n|---|---|---|---|\n");
            for s in d.settings {
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    s.key,
                    s.description,
                    s.check.describe(),
                    s.default.map_or("-".to_string(), |v| format!("`{v}`"))
                ));
            }
        }
        out.push_str(&format!(
            "\nNodes learn their members: {}.\n",
            if d.members { "yes" } else { "no" }
        ));
        if !d.routers.is_empty() || d.drain_seconds > 0 {
            out.push_str(&format!(
                "A leaving node is drained: {} its work in flight may take {} s (`spec.drainSeconds`).\n",
                if d.routers.is_empty() {
                    String::new()
                } else {
                    format!("the {} nodes stop routing to it, then", d.routers.join(", "))
                },
                d.drain_seconds
            ));
        }
        if d.link_exports.is_empty() {
            out.push_str("A link to it exports nothing yet.\n");
        } else {
            out.push_str("A link to it exports:\n");
            for export in d.link_exports {
                out.push_str(&format!("- `<AS>_{}`: {}\n", export.name, export.what));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn data_copies_follow_the_spec() {
        let copies = |value: serde_json::Value| {
            let s = spec(value);
            (s.r#type.descriptor().data_copies.unwrap())(&s)
        };
        let mysql = json!({"application": "a", "type": "mysql"});
        assert_eq!(copies(mysql), DataCopies::EveryNode);
        let kv = |replicas: &str| json!({"application": "a", "type": "kvstore", "settings": {"replicas": replicas}});
        assert_eq!(copies(kv("0")), DataCopies::None);
        assert_eq!(copies(kv("1")), DataCopies::Replicated);
        let fs = |volumes: serde_json::Value| json!({"application": "a", "type": "filesystem", "filesystem": {"volumes": volumes}});
        assert_eq!(
            copies(fs(
                json!([{"name": "a", "replicas": 2}, {"name": "b", "disperse": 3}])
            )),
            DataCopies::Replicated
        );
        assert_eq!(
            copies(fs(json!([{"name": "a", "replicas": 2}, {"name": "b"}]))),
            DataCopies::None,
            "one volume keeps a single copy of each file"
        );
    }

    #[test]
    fn counts_follow_one_precedence() {
        let s = spec(
            json!({"application": "a", "type": "generic", "roles": [{"name": "node", "count": 3}, {"name": "master", "count": 4}]}),
        );
        assert_eq!((s.role_count("master"), s.role_count("node")), (1, 3));
        let s = spec(
            json!({"application": "a", "type": "generic", "replicas": 5, "roles": [{"name": "node", "cloud": "aws"}]}),
        );
        assert_eq!(s.role_count("node"), 5, "replicas counts the default role");
        let s = spec(json!({"application": "a", "type": "helloworld"}));
        assert_eq!(s.role_count("node"), 1, "the type's default");
        assert_eq!(s.role_count("web"), 0, "a role the type lacks");
    }

    #[test]
    fn settings_are_checked_by_key_and_value() {
        let d = ServiceType::Helloworld.descriptor();
        let ok = [("greeting".to_string(), "hi".to_string())];
        assert_eq!(d.check_settings(ok.iter().map(|(k, v)| (k, v))), Ok(()));
        let unknown = [("colour".to_string(), "red".to_string())];
        let err = d
            .check_settings(unknown.iter().map(|(k, v)| (k, v)))
            .unwrap_err();
        assert!(
            err.contains("spec.settings.colour") && err.contains("known: greeting"),
            "{err}"
        );
        let long = [("greeting".to_string(), "x".repeat(300))];
        let err = d
            .check_settings(long.iter().map(|(k, v)| (k, v)))
            .unwrap_err();
        assert!(
            err.contains("spec.settings.greeting") && err.contains("at most 256"),
            "{err}"
        );
    }

    #[test]
    fn all_lists_every_type_once() {
        // The API's own list of types (the enum's schema, derived from the variants).
        let schema = serde_json::to_value(schemars::schema_for!(ServiceType)).unwrap();
        let mut api: Vec<String> = serde_json::from_value(schema["enum"].clone())
            .unwrap_or_else(|_| panic!("ServiceType's schema has no enum: {schema}"));
        let mut all: Vec<String> = ServiceType::ALL.iter().map(|t| t.as_str().into()).collect();
        api.sort();
        all.sort();
        assert_eq!(all, api, "ServiceType::ALL lists every type once");
    }

    /// Every fact a descriptor gives points at something the type has: roles named anywhere
    /// are its roles, every link export can be rendered, and a Secret an export reads is the
    /// type's own and shared with links.
    #[test]
    fn every_descriptors_facts_agree() {
        const KNOWN: [&str; 6] = ["host", "port", "endpoint", "database", "volume", "mount"];
        for ty in ServiceType::ALL {
            let d = ty.descriptor();
            let named_roles = d
                .routers
                .iter()
                .chain(d.restart_on_link_change)
                .chain(d.saved_on_stop.iter())
                .chain(d.access.iter().flat_map(|a| a.roles))
                .chain(d.endpoint.iter().flat_map(|a| a.roles))
                .chain(
                    d.conpaas_alias
                        .iter()
                        .flat_map(|a| a.roles.iter().map(|(_, ours)| ours)),
                );
            for role in named_roles {
                assert!(d.role(role).is_some(), "{}: {role} is not a role", d.name);
            }
            assert_eq!(
                d.saved_on_stop.is_some(),
                d.data_copies.is_some(),
                "{}: a type that keeps data says where its copies are",
                d.name
            );
            let secret_keys = links::secret_keys(d.link_exports);
            for export in d.link_exports {
                for p in links::placeholders(export.value) {
                    assert!(
                        KNOWN.contains(&p) || p.starts_with("secret:"),
                        "{}: {} uses an unknown {{{p}}}",
                        d.name,
                        export.name
                    );
                }
                assert!(
                    !export.value.contains("{endpoint}") || d.endpoint.is_some(),
                    "{}: {} exports an endpoint the type never has",
                    d.name,
                    export.name
                );
            }
            if !secret_keys.is_empty() {
                let credentials = d.credentials.unwrap_or_else(|| {
                    panic!(
                        "{}: its link exports read a Secret it does not have",
                        d.name
                    )
                });
                assert!(
                    credentials.shared_with_links,
                    "{}: exports a private Secret",
                    d.name
                );
                for key in secret_keys {
                    assert!(
                        credentials.keys.iter().any(|(k, _)| *k == key),
                        "{}: its Secret has no {key}",
                        d.name
                    );
                }
            }
            if let Some(c) = d.credentials {
                assert_eq!(
                    c.secret_name("x"),
                    format!("x-{}", d.name),
                    "{}: one Secret name pattern for every type",
                    d.name
                );
            }
        }
    }

    #[test]
    fn every_type_is_consistent() {
        for ty in ServiceType::ALL {
            let d = ty.descriptor();
            assert_eq!(d.name, ty.as_str());
            let default = d.role(d.default_role).expect("the default role is a role");
            assert!(
                default.fixed().is_none(),
                "{}: the default role scales",
                d.name
            );
            for r in d.roles {
                assert!(
                    r.min <= r.default_count,
                    "{}.{}: default below min",
                    d.name,
                    r.name
                );
                assert!(
                    r.max.is_none_or(|m| r.default_count <= m),
                    "{}.{}",
                    d.name,
                    r.name
                );
            }
        }
    }
}
