//! The node's MariaDB files and settings: its configuration, its data folder's first
//! initialisation, the account it runs as, and the Service's settings it reads.

use std::path::Path;

use conpaas_crds::v1alpha1::{ServiceNodeSpec, ServiceType};

use super::{GALERA_PORT, PORT};
use crate::daemon;

/// The database of the setting `database`, or the type's default.
pub(super) fn database(spec: &ServiceNodeSpec) -> String {
    spec.settings.get("database").cloned().unwrap_or_else(|| {
        ServiceType::Mysql
            .descriptor()
            .setting("database")
            .and_then(|s| s.default)
            .unwrap_or("conpaas")
            .to_string()
    })
}

/// How long a user the Secret no longer names keeps working.
pub(super) fn previous_user_seconds(spec: &ServiceNodeSpec) -> u64 {
    let setting = |s: &str| s.parse::<u64>().ok();
    spec.settings
        .get("previous_user_seconds")
        .and_then(|s| setting(s))
        .or_else(|| {
            ServiceType::Mysql
                .descriptor()
                .setting("previous_user_seconds")
                .and_then(|s| setting(s.default?))
        })
        .unwrap_or(300)
}

/// The node's MariaDB configuration: its own folders and address, Galera with the peers that
/// answer (none: a new cluster), state transfers by mariabackup, which logs in by unix socket
/// as the daemon's own user (`mariadb-install-db --user` makes that account).
pub(super) fn my_cnf(
    dir: &Path,
    address: &str,
    cluster: &str,
    node: &str,
    peers: &[String],
    run_as: &str,
) -> String {
    let d = dir.display();
    format!(
        "# Written by the ConPaaS agent.
[mysqld]
datadir={d}/data
socket={d}/mysqld.sock
pid-file={d}/mysqld.pid
tmpdir={d}/tmp
bind-address={address}
port={PORT}
skip-name-resolve
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name={cluster}
wsrep_cluster_address=gcomm://{peers}
wsrep_node_address={address}
wsrep_node_name={node}
wsrep_provider_options=\"gmcast.listen_addr=tcp://{address}:{GALERA_PORT}; ist.recv_addr={address}:4568\"
wsrep_sst_receive_address={address}:4444
wsrep_sst_method=mariabackup
wsrep_sst_auth={run_as}:

[client]
socket={d}/mysqld.sock
",
        peers = peers
            .iter()
            .map(|p| format!("{p}:{GALERA_PORT}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Initialises an empty data folder.
pub(super) async fn install_db(config: &Path, run_as: &str) -> Result<(), String> {
    let program = daemon::find(
        &["mariadb-install-db", "mysql_install_db"],
        "mariadb-server",
    )?;
    let args = [
        format!("--defaults-file={}", config.display()),
        format!("--user={run_as}"),
        "--skip-test-db".into(),
    ];
    daemon::run_checked(&program, &args, "initialise the data folder").await
}

/// `mysql` where it can run MariaDB (state transfers fail as root), else `root`.
pub(super) fn run_as(work_dir: &Path) -> &'static str {
    daemon::unprivileged_user("mysql", work_dir).unwrap_or("root")
}

pub(super) fn chown_mysql(dir: &Path) -> Result<(), String> {
    let status = std::process::Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(dir)
        .status()
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown {} to mysql failed", dir.display()))
    }
}

/// The last errors of a log (its last lines when it has none), for a message.
pub(super) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("[ERROR]")).collect();
    let lines = if errors.is_empty() {
        text.lines().collect()
    } else {
        errors
    };
    let last = &lines[lines.len().saturating_sub(3)..];
    last.join(" | ")
}
