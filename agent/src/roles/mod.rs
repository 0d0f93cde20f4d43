//! The software a node runs, one module per service type behind the [`Role`] trait, chosen once
//! by [`for_type`] when the agent first sees its node. A role converges to the node's spec in
//! `apply`, notices changes of its own in `poll`, says how it is in `report`, lets go of its work
//! in `drain` (peers stop sending it any) and stops cleanly in `shutdown`.
//!
//! Adding a service type: a module here implementing [`Role`] and its arm in [`for_type`] (a
//! type whose roles run different software has an arm per role).

mod filesystem;
mod generic;
mod glb;
mod helloworld;
mod kvstore;
mod looks;
mod mapreduce;
mod mysql;
mod mysql_dump;
mod stop_save;
mod web;

use std::path::PathBuf;

use conpaas_crds::v1alpha1::{AgentState, Member, ScriptStatus, ServiceNodeSpec, ServiceType};
use kube::Client;

/// What a role reports into `status.agent`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoleReport {
    pub state: Option<AgentState>,
    pub message: Option<String>,
    pub code_version: Option<String>,
    /// The code version the role failed to switch to, when that is the failure.
    pub failed_code_version: Option<String>,
    pub greeting: Option<String>,
    pub scripts: Vec<ScriptStatus>,
    /// Routing roles: the members the running configuration sends traffic to.
    pub routes_to: Option<Vec<String>>,
    /// mysql: the version of the credentials Secret the node accepts.
    pub credentials_version: Option<String>,
    /// mysql, while no member runs the cluster: the last transaction its data holds.
    pub recovered_position: Option<String>,
    /// The SHA-256 of the data it saved for a stop.
    pub saved: Option<String>,
    /// Why its last try to save for a stop failed (it tries again).
    pub save_failure: Option<String>,
    /// Aggregates the autoscaler reads (proxies: `p95Ms`, `requestsPerSecond`).
    pub metrics: std::collections::BTreeMap<String, i64>,
}

/// What roles need from their surroundings.
#[derive(Clone)]
pub struct RoleEnv {
    pub client: Client,
    pub namespace: String,
    pub work_dir: PathBuf,
    pub address: String,
    /// The node's ServiceNode name.
    pub node: String,
}

/// The software of one node's role.
#[async_trait::async_trait]
pub trait Role: Send {
    /// Converges to `spec`.
    async fn apply(&mut self, spec: &ServiceNodeSpec);

    /// Notices what changed on its own (a script ended).
    async fn poll(&mut self) {}

    /// The current report.
    fn report(&self) -> RoleReport;

    /// Hands off the work the node holds before it goes (released from a drain, or stopping);
    /// nothing to do for roles whose peers simply stop sending them requests.
    async fn drain(&mut self) {}

    /// Whether what [`Role::drain`] started is done.
    fn drained(&self) -> bool {
        true
    }

    /// Stops the role's software.
    async fn shutdown(&mut self);
}

/// A Secret's `username` and `password`, and the version of the Secret they were read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// The Secret's resourceVersion.
    pub version: String,
}

/// `username` and `password` of the Secret `name`, read with the node's own token (which may
/// read that Secret and no other).
pub async fn read_credentials(env: &RoleEnv, name: &str) -> Result<Credentials, String> {
    let (mut fields, version) = read_secret(env, name, &["username", "password"]).await?;
    Ok(Credentials {
        password: fields.pop().unwrap_or_default(),
        user: fields.pop().unwrap_or_default(),
        version,
    })
}

/// `password` of the Secret `name` (a kvstore's, a php Service's sessions'), and the Secret's
/// resourceVersion; see [`read_config_secret`].
pub async fn read_password(env: &RoleEnv, name: &str) -> Result<(String, String), String> {
    read_config_secret(env, name, "password").await
}

/// The value of `key` in the Secret `name`, for a daemon's configuration file (redis.conf,
/// Spark's properties), and the Secret's resourceVersion; refused unless it can stand there,
/// quoted or not (the Secret is the tenant's to edit: a quote, a backslash or a line break
/// would add settings of its own), and is set (an empty `requirepass` asks for none).
pub async fn read_config_secret(
    env: &RoleEnv,
    name: &str,
    key: &str,
) -> Result<(String, String), String> {
    let (value, version) = read_value(env, name, key).await?;
    config_safe(name, key, &value)?;
    Ok((value, version))
}

/// Whether `value` (of `key` in Secret `secret`) can be written into a configuration file:
/// set, and without quotes, backslashes or control characters.
fn config_safe(secret: &str, key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!(
            "the Secret {secret} has an empty {key}: it would let anyone in"
        ));
    }
    match value
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '\\' | '\''))
    {
        Some(c) => Err(format!(
            "the {key} in the Secret {secret} holds {c:?}, which a configuration file cannot hold safely: set one without quotes, backslashes or control characters"
        )),
        None => Ok(()),
    }
}

/// The value of `key` in the Secret `name`, and the Secret's resourceVersion.
pub async fn read_value(env: &RoleEnv, name: &str, key: &str) -> Result<(String, String), String> {
    let (mut fields, version) = read_secret(env, name, &[key]).await?;
    Ok((fields.pop().unwrap_or_default(), version))
}

/// The values of `keys` in the Secret `name` (read with the node's own token), and its
/// resourceVersion.
async fn read_secret(
    env: &RoleEnv,
    name: &str,
    keys: &[&str],
) -> Result<(Vec<String>, String), String> {
    crate::secrets::read(&env.client, &env.namespace, name, keys).await
}

/// The node's own data volume (`roles[].volume`), if it has one: where the local cloud says
/// (`CONPAAS_VOLUME_DIR`), else `/var/lib/conpaas/volume`, where a VM image mounts the extra
/// disk (EC2's `/dev/sdf`, OpenNebula's volatile disk).
pub fn data_volume() -> Option<PathBuf> {
    // Local VMs share the host's folders: theirs is only the one the local cloud names.
    let local = std::env::var_os(conpaas_crds::bootstrap::local_vm::ID).is_some();
    std::env::var_os(conpaas_crds::bootstrap::local_vm::VOLUME_DIR)
        .map(PathBuf::from)
        .or_else(|| (!local).then(|| PathBuf::from("/var/lib/conpaas/volume")))
        .filter(|dir| dir.is_dir())
}

/// `dir` kept on the node's data volume when it has one: a folder `name` on the volume, with
/// `dir` a link to it (the daemons' configuration keeps naming `dir`).
pub fn on_data_volume(dir: &std::path::Path, name: &str) -> Result<(), String> {
    let Some(volume) = data_volume() else {
        return Ok(());
    };
    if std::fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let target = volume.join(name);
    std::fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    std::os::unix::fs::symlink(&target, dir)
        .map_err(|e| format!("link {} to the data volume: {e}", dir.display()))
}

/// The member of `role` with the lowest ordinal (which a scale-down never removes).
pub fn first_member<'a>(members: &'a [Member], role: &str) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| m.role == role)
        .min_by_key(|m| ordinal(&m.name))
}

/// A node's ordinal, from its name `<service>-<role>-<n>`.
pub fn ordinal(node: &str) -> u32 {
    node.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The software for a node of `role` of a service type.
pub fn for_type(service_type: ServiceType, role: &str, env: RoleEnv) -> Box<dyn Role> {
    match service_type {
        ServiceType::Mysql if role == "glb" => Box::new(glb::Glb::new(env)),
        ServiceType::Helloworld => Box::new(helloworld::Helloworld::new(env)),
        ServiceType::Generic => Box::new(generic::Generic::new(env)),
        ServiceType::Php => Box::new(web::WebHosting::new(env, web::Stack::Php)),
        ServiceType::Java => Box::new(web::WebHosting::new(env, web::Stack::Java)),
        ServiceType::Mysql => Box::new(mysql::Mysql::new(env)),
        ServiceType::Filesystem => Box::new(filesystem::Filesystem::new(env)),
        ServiceType::Kvstore => Box::new(kvstore::Kvstore::new(env)),
        ServiceType::Mapreduce => Box::new(mapreduce::Mapreduce::new(env, role)),
    }
}

#[cfg(test)]
mod tests {
    use super::config_safe;

    #[test]
    fn a_secret_that_could_end_its_quotes_or_line_is_refused() {
        assert!(config_safe("s", "password", "a1b2C3-_.~!@#$%^&*()=+,;:/?").is_ok());
        for bad in [
            "",
            "a\"b",
            "a\\b",
            "a'b",
            "a\nrequirepass x",
            "a\rb",
            "a\u{0}b",
        ] {
            let refused = config_safe("kv-kvstore", "password", bad).unwrap_err();
            assert!(refused.contains("password"), "{refused}");
            assert!(refused.contains("Secret kv-kvstore"), "{refused}");
        }
    }
}
