//! kvstore: ConPaaS' Scalaris key-value store on Redis Cluster: the hash slots spread over the
//! masters, moved off a leaving master before it goes.

use crate::v1alpha1::{DesiredState, ServiceSpec};

use super::{
    Access, ConpaasAlias, CountRefusal, CredentialsDescriptor, DataCopies, LinkExport,
    RoleDescriptor, SecretValue, SettingCheck, SettingDescriptor, TypeDescriptor,
};

/// The port every node's redis-server serves clients on (the cluster bus is this + 10000).
pub const PORT: u16 = 6379;

/// The Secret holding a kvstore Service's password, which its nodes require of clients and of
/// each other.
pub const CREDENTIALS: CredentialsDescriptor = CredentialsDescriptor {
    suffix: "kvstore",
    keys: &[("password", SecretValue::Random)],
    shared_with_links: true,
};

/// The Secret holding a kvstore Service's password (`password`).
pub fn secret_name(service: &str) -> String {
    CREDENTIALS.secret_name(service)
}

/// A kvstore's nodes form at least 3 whole groups of a master and its `replicas` (Redis Cluster
/// needs 3 masters, and a master short of its replicas would hold the only copy of its slots in
/// a Service that asked for copies): a count below that is refused, an autoscaler's too. Only
/// while it runs: a Service whose count an earlier rule allowed can still stop (and save).
fn check_masters(spec: &ServiceSpec, role: &str, count: i32) -> Result<(), CountRefusal> {
    if role != "node" || count == 0 || spec.state == DesiredState::Stopped {
        return Ok(());
    }
    let replicas = replicas(spec);
    if masters(count, replicas) >= 3 {
        return Ok(());
    }
    Err(CountRefusal {
        reason: "TooFewMasters",
        message: format!(
            "spec.replicas: {count} nodes with settings.replicas {replicas} form fewer than the 3 whole groups of a master and its replicas Redis Cluster needs: run at least {}",
            3 * (replicas + 1)
        ),
    })
}

/// The setting `replicas`: replicas per master (0 unless set).
fn replicas(spec: &ServiceSpec) -> i32 {
    spec.settings
        .get("replicas")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The kvstore type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "kvstore",
    summary: "ConPaaS' Scalaris key-value store on Redis Cluster: the 16384 hash slots are spread over the masters (at least 3), each with the setting `replicas` replicas (at least 3 whole groups of a master and its replicas: `3 × (replicas + 1)` nodes; a node beyond whole groups is an extra replica). A scale-out adds masters and moves slots onto them; a scale-in moves a leaving master's slots onto the others, removes it from the cluster and only then lets its VM go: no key is lost. Data is kept with AOF on the node's volume (`roles[].volume`) when it has one. The password is in the Secret `<service>-kvstore` (`password`; random unless it exists). `status.endpoint` lists seed nodes (`host:port,host:port,...`) for cluster clients. Stopping keeps the data: the first node dumps every key into the artifact store (`status.savedData`), and the first node of the next start loads it. Unlike Scalaris, a transaction (MULTI, Lua) may only touch keys of one hash slot (`{tag}` keys share one). ConPaaS manifests' `scalaris` imports as this type.",
    roles: &[RoleDescriptor {
        name: "node",
        summary: "redis-server in cluster mode on port 6379 (bus 16379), with AOF; the node with the lowest ordinal manages the cluster",
        default_count: 3,
        min: 3,
        max: None,
    }],
    default_role: "node",
    settings: &[SettingDescriptor {
        key: "replicas",
        description: "replicas per master: the nodes form groups of a master and `replicas` replicas, as many masters as whole groups, at least 3 whole groups (`3 × (replicas + 1)` nodes: no master without its replicas), and a node beyond them is an extra replica; a replica takes over if its master fails",
        default: Some("0"),
        check: SettingCheck::Integer { min: 0, max: 2 },
    }],
    members: true,
    link_exports: &[
        LinkExport {
            name: "HOSTS",
            what: "seed nodes as `host:port` separated by commas (`status.endpoint`)",
            value: "{endpoint}",
        },
        LinkExport {
            name: "PASSWORD",
            what: "the password of the Secret `<service>-kvstore`",
            value: "{secret:password}",
        },
    ],
    credentials: Some(&CREDENTIALS),
    check_count: Some(check_masters),
    runs_user_code: false,
    conpaas_alias: Some(ConpaasAlias {
        name: "scalaris",
        roles: &[],
    }),
    // Every node reports the nodes still in the cluster: a leaving node is released once its
    // slots moved off and it was removed from the cluster.
    routers: &["node"],
    drain_seconds: 1,
    access: None,
    endpoint: Some(Access {
        roles: &["node"],
        url: "{address}:6379",
        seeds: 3,
    }),
    saved_on_stop: Some("node"),
    data_copies: Some(|spec| match replicas(spec) {
        0 => DataCopies::None,
        _ => DataCopies::Replicated,
    }),
    restart_on_link_change: &[],
};

/// The whole groups of a master and `replicas` replicas that `nodes` nodes form (the agent
/// makes at least 3 masters, and nodes beyond whole groups extra replicas).
pub fn masters(nodes: i32, replicas: i32) -> i32 {
    nodes / (replicas + 1)
}
