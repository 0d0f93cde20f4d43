//! mapreduce: ConPaaS' Hadoop MapReduce service on Apache Spark standalone: one master, workers
//! that come and go without failing the jobs that run on them.

use super::{
    Access, ConpaasAlias, CredentialsDescriptor, RoleDescriptor, SecretValue, SettingCheck,
    SettingDescriptor, TypeDescriptor,
};

/// The Spark master's port, which drivers and workers connect to.
pub const MASTER_PORT: u16 = 7077;
/// The master's web UI.
pub const MASTER_UI_PORT: u16 = 8080;
/// A worker's web UI (and its JSON, which says what runs on it).
pub const WORKER_UI_PORT: u16 = 8081;
/// Where jobs find a linked volume on every node and on the machine that submits them:
/// `<root>/<mountPath>`.
pub const VOLUME_ROOT: &str = "/var/lib/conpaas/volumes";

/// The Secret holding a mapreduce Service's Spark authentication secret (`secret`): the master,
/// the workers, their executors and the drivers `cpsctl mapreduce submit` runs share it.
pub fn secret_name(service: &str) -> String {
    CREDENTIALS.secret_name(service)
}

/// The Secret holding a mapreduce Service's Spark authentication secret.
pub const CREDENTIALS: CredentialsDescriptor = CredentialsDescriptor {
    suffix: "mapreduce",
    keys: &[("secret", SecretValue::Random)],
    shared_with_links: false,
};

/// The mapreduce type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "mapreduce",
    summary: "ConPaaS' Hadoop MapReduce service on Apache Spark standalone: one master (the Spark master, `status.endpoint` `spark://<address>:7077`, its web UI at `status.url`) and workers with the cores and memory of the settings. `cpsctl mapreduce submit SERVICE APP [ARGS]` runs `spark-submit` against it and streams the driver's output. A link with `volume` and `mountPath` to a filesystem Service mounts that volume on every node (ConPaaS' HDFS): jobs read and write it at `/var/lib/conpaas/volumes/<mountPath>` (`<AS>_MOUNT`), on the nodes and, through `cpsctl mapreduce submit`, on the submitting machine. Spark's authentication is on, with the shared secret of the Secret `<service>-mapreduce` (`secret`; random unless it exists): only drivers that hold it (`cpsctl mapreduce submit` reads it) run jobs. A leaving worker is decommissioned (Spark's decommissioning: no new tasks, its blocks move to the others) and its VM goes only once its running tasks are done, or after the setting `decommission_seconds`. ConPaaS manifests' `hadoop` imports as this type.",
    roles: &[
        RoleDescriptor {
            name: "master",
            summary: "the Spark master on port 7077, its web UI on 8080",
            default_count: 1,
            min: 1,
            max: Some(1),
        },
        RoleDescriptor {
            name: "worker",
            summary: "a Spark worker (web UI on 8081) running the jobs' executors",
            default_count: 2,
            min: 1,
            max: None,
        },
    ],
    default_role: "worker",
    settings: &[
        SettingDescriptor {
            key: "worker_cores",
            description: "the cores each worker offers to jobs",
            default: Some("1"),
            check: SettingCheck::Integer { min: 1, max: 256 },
        },
        SettingDescriptor {
            key: "decommission_seconds",
            description: "how long a leaving worker waits for its executors to finish their tasks and hand their blocks over (an idle shell may hold one forever) before its VM goes anyway",
            default: Some("3600"),
            check: SettingCheck::Integer { min: 0, max: 86400 },
        },
        SettingDescriptor {
            key: "worker_memory_mb",
            description: "the memory each worker offers to jobs' executors, in MiB",
            default: Some("1024"),
            check: SettingCheck::Integer {
                min: 512,
                max: 1_048_576,
            },
        },
    ],
    members: true,
    link_exports: &[],
    credentials: Some(&CREDENTIALS),
    check_count: None,
    runs_user_code: true,
    conpaas_alias: Some(ConpaasAlias {
        name: "hadoop",
        roles: &[],
    }),
    routers: &[],
    drain_seconds: 1,
    access: Some(Access {
        roles: &["master"],
        url: "http://{address}:8080",
        seeds: 1,
    }),
    endpoint: Some(Access {
        roles: &["master"],
        url: "spark://{address}:7077",
        seeds: 1,
    }),
    saved_on_stop: None,
    data_copies: None,
    restart_on_link_change: &[],
};
