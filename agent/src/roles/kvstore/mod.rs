//! kvstore (ConPaaS' Scalaris) on Redis Cluster: every node runs redis-server in cluster mode,
//! bound to its address and announcing its ServiceNode name as its hostname, with AOF in its
//! folder (on the node's volume when it has one) and the password of the Secret
//! `<service>-kvstore`.
//!
//! The member with the lowest ordinal manages the cluster ([`cluster::next_step`]): it makes it
//! once every member answers, adds new members as masters (or replicas of their group's master)
//! and moves slots onto them, moves every slot off a leaving master before it takes the node out
//! of the cluster, and repairs a half-moved slot. Every node reports the nodes the cluster still
//! counts (`routesTo`): a leaving node is released once it is out, with nothing left on it.
//!
//! Stopping: the first node dumps every key (with its expiry) into the artifact store; the next
//! start loads the dump once the cluster is made, before the manager says it is Ready.

mod client;
pub mod cluster;

use std::path::PathBuf;
use std::time::Duration;

use conpaas_crds::types::kvstore::{self, PORT};
use conpaas_crds::v1alpha1::{NodeCode, ServiceNodeSpec};
use nix::sys::signal::Signal;

use super::looks::{Found, Looks};
use super::stop_save::StopSave;
use super::{Role, RoleEnv, RoleReport, first_member, ordinal};
use crate::daemon::{self, Daemon};
use client::Nodes;
use cluster::{Member, Step, View};

/// The role.
const ROLE: &str = "node";
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the writes' pause is renewed while a stop's save is uploaded.
const FENCE_RENEW_EVERY: Duration = Duration::from_secs(60);

pub struct Kvstore {
    env: RoleEnv,
    spec: Option<ServiceNodeSpec>,
    server: Option<Daemon>,
    nodes: Option<Nodes>,
    error: Option<String>,
    looks: Looks,
    stop_save: StopSave,
}

/// What one look at the cluster found.
type Outcome = Found;

impl Kvstore {
    pub fn new(env: RoleEnv) -> Self {
        Self {
            env,
            spec: None,
            server: None,
            nodes: None,
            error: None,
            looks: Looks::new("redis-server"),
            stop_save: StopSave::new("the keys"),
        }
    }

    fn dir(&self) -> PathBuf {
        self.env.work_dir.join("redis")
    }

    /// Where the manager notes which saved dump it loaded (so a look after a restart does not
    /// load it again).
    fn restored_marker(&self, saved: &NodeCode) -> PathBuf {
        self.dir().join(format!("restored-{}", saved.sha256))
    }

    /// Writes redis-server's configuration (readable by the agent only: it holds the password)
    /// and starts it as the agent's child.
    async fn start(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let program = daemon::find(&["redis-server"], "redis-server")?;
        let redis_cli = daemon::find(&["redis-cli"], "redis-tools")?;
        let (password, _) =
            super::read_password(&self.env, &kvstore::secret_name(&spec.service)).await?;
        let data = self.dir().join("data");
        // The AOF and the cluster's state live on the node's own volume when it has one.
        super::on_data_volume(&data, "redis")?;
        for dir in [&data, &self.env.work_dir.join("logs")] {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let conf = self.dir().join("redis.conf");
        let text = config(&self.env.address, &self.env.node, &data, &password);
        daemon::write_private(&conf, &text)?;
        let mut server = Daemon::new(
            "redis-server",
            program,
            vec![conf.display().to_string()],
            self.env.work_dir.join("logs/redis-server.out"),
            Signal::SIGTERM,
        );
        server.ensure_started()?;
        self.server = Some(server);
        self.nodes = Some(Nodes {
            password,
            redis_cli,
        });
        Ok(())
    }

    fn is_manager(&self, spec: &ServiceNodeSpec) -> bool {
        spec.drain.is_none()
            && first_member(&spec.members, ROLE).is_some_and(|m| m.name == self.env.node)
    }

    fn look(&mut self, spec: &ServiceNodeSpec) {
        let Some(nodes) = self.nodes.clone() else {
            return;
        };
        let mut members: Vec<_> = spec.members.iter().filter(|m| m.role == ROLE).collect();
        members.sort_by_key(|m| ordinal(&m.name));
        let look = Look {
            nodes,
            address: self.env.address.clone(),
            members: members
                .into_iter()
                .map(|m| (m.name.clone(), m.address.clone()))
                .collect(),
            replicas: spec
                .settings
                .get("replicas")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            restore: spec
                .restore
                .clone()
                .filter(|saved| !self.restored_marker(saved).exists())
                .map(|saved| Restore {
                    marker: self.restored_marker(&saved),
                    file: self.dir().join("restore.dump"),
                    access: self.archive_access(spec),
                    saved,
                }),
        };
        let manager = self.is_manager(spec);
        self.looks.start(async move {
            if manager {
                look.manage().await
            } else {
                look.follow().await
            }
        });
    }

    fn archive_access(&self, spec: &ServiceNodeSpec) -> Archive {
        Archive {
            client: self.env.client.clone(),
            namespace: self.env.namespace.clone(),
            service: spec.service.clone(),
        }
    }
}

/// redis-server's configuration for the node at `address` named `node`.
fn config(address: &str, node: &str, data: &std::path::Path, password: &str) -> String {
    let data = data.display();
    format!(
        "# Written by the ConPaaS agent.
bind {address}
port {PORT}
protected-mode no
daemonize no
logfile \"\"
dir {data}
cluster-enabled yes
cluster-config-file {data}/nodes.conf
cluster-node-timeout 5000
# On loopback and behind NAT the node must say which address the others reach it at.
cluster-announce-ip {address}
cluster-announce-hostname {node}
cluster-preferred-endpoint-type ip
# A master whose slots all moved off stays a master until taken out (by default it would turn
# into a replica half-way through draining several, and the drain would fail).
cluster-allow-replica-migration no
appendonly yes
appendfsync everysec
save \"\"
requirepass \"{password}\"
masterauth \"{password}\"
"
    )
}

/// Where the saved dump is stored.
struct Archive {
    client: kube::Client,
    namespace: String,
    service: String,
}

/// A saved dump the cluster has not loaded yet.
struct Restore {
    saved: NodeCode,
    marker: PathBuf,
    file: PathBuf,
    access: Archive,
}

/// What the manager reports while it loads the saved keys.
const LOADING: &str = "loading the keys saved at the last stop";

impl Restore {
    /// Whether the load was not announced yet (it is now): a file beside the loaded marker
    /// notes it, so a restarted agent goes straight on to the load.
    fn announce(&self) -> bool {
        let announced = self.marker.with_extension("announced");
        !announced.exists() && std::fs::write(&announced, b"").is_ok()
    }
}

/// What one look at the cluster works with (a task of its own: the agent keeps reporting and
/// renewing its heartbeat while slots move).
struct Look {
    nodes: Nodes,
    address: String,
    /// The members (name, address), in ordinal order.
    members: Vec<(String, String)>,
    replicas: usize,
    restore: Option<Restore>,
}

impl Look {
    async fn view(&self, address: &str) -> Result<View, String> {
        let nodes = self.nodes.clone();
        let address = address.to_string();
        tokio::task::spawn_blocking(move || nodes.view(&address))
            .await
            .map_err(|e| format!("asking about the cluster broke off: {e}"))?
    }

    /// A node that does not manage: reports who the cluster counts.
    async fn follow(self) -> Outcome {
        match self.view(&self.address).await {
            Ok(view) => Outcome {
                ready: view.serving(),
                message: describe(&view),
                routes_to: Some(cluster::node_names(&view)),
                more: (),
            },
            Err(e) => Outcome {
                ready: false,
                message: e,
                routes_to: None,
                more: (),
            },
        }
    }

    /// The manager's look: every member's view, then the next step.
    async fn manage(self) -> Outcome {
        let own = match self.view(&self.address).await {
            Ok(view) => view,
            Err(e) => {
                return Outcome {
                    ready: false,
                    message: e,
                    routes_to: None,
                    more: (),
                };
            }
        };
        let mut members = Vec::new();
        for (name, address) in &self.members {
            let view = if *address == self.address {
                Some(own.clone())
            } else {
                self.view(address).await.ok()
            };
            members.push(Member {
                name: name.clone(),
                address: address.clone(),
                view,
            });
        }
        // The cluster is judged by this node's view, or, while it is not in the cluster (a
        // replaced first node), by a member that is.
        let seed = if own.in_cluster() {
            Some((self.address.clone(), own.clone()))
        } else {
            members.iter().find_map(|m| {
                let view = m.view.as_ref().filter(|v| v.in_cluster())?;
                Some((m.address.clone(), view.clone()))
            })
        };
        let step = cluster::next_step(&members, self.replicas, seed.as_ref().map(|(_, view)| view));
        let seed_address = seed
            .as_ref()
            .map_or(self.address.clone(), |(a, _)| a.clone());
        let mut message = describe(&own);
        // The manager is Ready only when the cluster needs nothing: while slots move, a new
        // master already serves its first (perhaps empty) slots, and a Service counted whole
        // then would not be.
        let settled = step.is_none();
        if let Some(step) = step {
            let done = self.act(&seed_address, &members, &step).await;
            message = match done {
                Ok(what) => what,
                Err(e) => e,
            };
        } else if let Some(restore) = &self.restore {
            // The first look only says what comes: the report goes out before the load holds
            // the next look up (a user, and a Stop, see what the node does meanwhile).
            message = if restore.announce() {
                LOADING.to_string()
            } else {
                match self.load(restore).await {
                    Ok(what) => what,
                    Err(e) => format!("loading the saved keys: {e}"),
                }
            };
            return Outcome {
                ready: false,
                message,
                routes_to: Some(cluster::node_names(&own)),
                more: (),
            };
        }
        Outcome {
            ready: own.serving() && self.restore.is_none() && settled,
            message,
            routes_to: Some(cluster::node_names(&own)),
            more: (),
        }
    }

    /// Takes `step`; what it did.
    async fn act(&self, seed: &str, members: &[Member], step: &Step) -> Result<String, String> {
        let at = |address: &str| format!("{address}:{PORT}");
        let run = |args: Vec<String>| async move { self.nodes.cluster_command(&args).await };
        match step {
            Step::Wait(why) => Ok(why.clone()),
            Step::Create(masters) => {
                let mut args = vec!["create".to_string()];
                args.extend(masters.iter().map(|m| at(m)));
                args.extend([
                    "--cluster-replicas".into(),
                    "0".into(),
                    "--cluster-yes".into(),
                ]);
                run(args).await?;
                tracing::info!(?masters, "cluster made");
                Ok(format!("cluster made of {} masters", masters.len()))
            }
            Step::Fix => {
                run(vec!["fix".into(), at(seed), "--cluster-yes".into()]).await?;
                tracing::info!("half-moved slots repaired");
                Ok("half-moved slots repaired".into())
            }
            Step::Drain(ids) => {
                let mut args = vec![
                    "rebalance".to_string(),
                    at(seed),
                    "--cluster-pipeline".into(),
                    "100".into(),
                    "--cluster-weight".into(),
                ];
                args.extend(ids.iter().map(|id| format!("{id}=0")));
                run(args).await?;
                tracing::info!(?ids, "slots moved off leaving masters");
                Ok(format!("slots moved off {} leaving masters", ids.len()))
            }
            Step::Remove {
                id,
                reachable: true,
            } => {
                run(vec!["del-node".into(), at(seed), id.clone()]).await?;
                tracing::info!(id, "node taken out of the cluster");
                Ok(format!("node {id} taken out of the cluster"))
            }
            Step::Remove {
                id,
                reachable: false,
            } => {
                let nodes = self.nodes.clone();
                let (id, addresses): (String, Vec<String>) = (
                    id.clone(),
                    members.iter().map(|m| m.address.clone()).collect(),
                );
                tokio::task::spawn_blocking(move || {
                    for address in addresses {
                        nodes.forget(&address, &id)?;
                    }
                    Ok(format!("failed node {id} forgotten"))
                })
                .await
                .map_err(|e| format!("forgetting a node broke off: {e}"))?
            }
            Step::AddMaster(address) => {
                run(vec!["add-node".into(), at(address), at(seed)]).await?;
                tracing::info!(address, "master added");
                Ok(format!("{address} added as a master"))
            }
            Step::AddReplica { address, master_id } => {
                run(vec![
                    "add-node".into(),
                    at(address),
                    at(seed),
                    "--cluster-slave".into(),
                    "--cluster-master-id".into(),
                    master_id.clone(),
                ])
                .await?;
                tracing::info!(address, master_id, "replica added");
                Ok(format!("{address} added as a replica of {master_id}"))
            }
            Step::Rebalance => {
                run(vec![
                    "rebalance".into(),
                    at(seed),
                    "--cluster-use-empty-masters".into(),
                    "--cluster-pipeline".into(),
                    "100".into(),
                ])
                .await?;
                tracing::info!("slots moved onto new masters");
                Ok("slots moved onto new masters".into())
            }
            Step::Failover { address } => {
                let (nodes, address) = (self.nodes.clone(), address.clone());
                tokio::task::spawn_blocking(move || {
                    nodes.failover(&address)?;
                    tracing::info!(address, "replica takes over from its leaving master");
                    Ok(format!("{address} takes over from its leaving master"))
                })
                .await
                .map_err(|e| format!("a failover broke off: {e}"))?
            }
            Step::Replicate { address, master_id } => {
                let (nodes, address, master_id) =
                    (self.nodes.clone(), address.clone(), master_id.clone());
                tokio::task::spawn_blocking(move || {
                    nodes.replicate(&address, &master_id)?;
                    tracing::info!(address, master_id, "node made a replica");
                    Ok(format!("{address} made a replica of {master_id}"))
                })
                .await
                .map_err(|e| format!("making a replica broke off: {e}"))?
            }
        }
    }

    /// Loads the saved dump into the made cluster, once: the cluster notes the dump it was
    /// loaded with, so a later manager (a replaced first node) does not load it again.
    async fn load(&self, restore: &Restore) -> Result<String, String> {
        let nodes = self.nodes.clone();
        let seeds: Vec<String> = self.members.iter().map(|(_, a)| a.clone()).collect();
        let sha256 = restore.saved.sha256.clone();
        let loaded_before = tokio::task::spawn_blocking({
            let (nodes, seeds) = (nodes.clone(), seeds.clone());
            move || nodes.restored(&seeds)
        })
        .await
        .map_err(|e| format!("asking the cluster broke off: {e}"))??;
        if loaded_before.as_deref() == Some(sha256.as_str()) {
            let _ = std::fs::write(&restore.marker, b"");
            return Ok("the saved keys were loaded before".into());
        }
        if !restore.file.exists() {
            let access = &restore.access;
            crate::code::download(
                &access.client,
                &access.namespace,
                &access.service,
                &restore.saved,
                &restore.file,
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        }
        let file = restore.file.clone();
        let (loaded, skipped) =
            tokio::task::spawn_blocking(move || nodes.restore(&seeds, &file, &sha256))
                .await
                .map_err(|e| format!("loading broke off: {e}"))??;
        std::fs::write(&restore.marker, b"")
            .map_err(|e| format!("write {}: {e}", restore.marker.display()))?;
        let _ = std::fs::remove_file(&restore.file);
        tracing::info!(loaded, skipped, "saved keys loaded");
        Ok(format!(
            "{loaded} saved keys loaded ({skipped} existed already)"
        ))
    }
}

/// One line on the node's part in the cluster.
fn describe(view: &View) -> String {
    let masters = view
        .nodes
        .iter()
        .filter(|n| n.master && n.slots > 0)
        .count();
    let state = if view.state_ok { "ok" } else { "not ok" };
    match view.myself() {
        _ if !view.in_cluster() => "not in a cluster yet".into(),
        Some(me) if me.replica_of.is_some() && !view.in_sync => {
            format!(
                "replica copying its master's data, in a cluster of {masters} masters ({state})"
            )
        }
        Some(me) if me.replica_of.is_some() => {
            format!("replica in a cluster of {masters} masters ({state})")
        }
        Some(me) => format!(
            "master of {} slots in a cluster of {masters} masters ({state})",
            me.slots
        ),
        None => "not in a cluster yet".into(),
    }
}

#[async_trait::async_trait]
impl Role for Kvstore {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec = Some(spec.clone());
        if self.server.is_none()
            && let Err(e) = self.start(spec).await
        {
            self.error = Some(e);
        }
        self.looks.soon();
        self.poll().await;
    }

    async fn poll(&mut self) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        if let Some(server) = self.server.as_mut() {
            if !server.running() {
                let message = server.exited_message();
                // Not Ready until a look finds it serving again.
                self.looks.found.ready = false;
                self.looks.found.message = message.clone();
                if let Err(e) = server.ensure_started() {
                    self.error = Some(format!("{message}; restarting it: {e}"));
                }
            } else {
                self.error = None;
            }
        } else if self.error.is_some()
            && let Err(e) = self.start(&spec).await
        {
            // A missing daemon or an unreadable Secret, tried again.
            self.error = Some(e);
        }
        self.stop_save.poll().await;
        if self.stop_save.retry_due(&spec) {
            self.drain().await;
        }
        self.looks.collect().await;
        if self.looks.due(&self.stop_save) {
            // The next look is due a period later, whether this one starts or not.
            self.looks.skip();
            if daemon::listening(&format!("{}:{PORT}", self.env.address)).await {
                self.look(&spec);
            }
        }
    }

    fn report(&self) -> RoleReport {
        self.looks.report(&self.stop_save, self.error.as_ref())
    }

    async fn drain(&mut self) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        if !self.stop_save.due(&spec) {
            return;
        }
        let Some(nodes) = self.nodes.clone() else {
            return;
        };
        let access = self.archive_access(&spec);
        let address = self.env.address.clone();
        let file = self.dir().join("saved.dump");
        self.stop_save.start(async move {
            let dumped = tokio::task::spawn_blocking({
                let file = file.clone();
                move || {
                    let view = nodes.view(&address)?;
                    let masters: Vec<String> = view
                        .nodes
                        .iter()
                        .filter(|n| n.master && n.slots > 0)
                        .map(|n| n.address.clone())
                        .collect();
                    let dumped = nodes.dump(&masters, &file)?;
                    Ok::<_, String>((dumped, nodes, masters))
                }
            })
            .await
            .map_err(|e| format!("dumping broke off: {e}"))?;
            let (dumped, nodes, masters) = dumped?;
            // The fence stands for as long as the upload runs.
            let renewing = tokio::spawn({
                let (nodes, masters) = (nodes.clone(), masters.clone());
                async move {
                    loop {
                        tokio::time::sleep(FENCE_RENEW_EVERY).await;
                        let (nodes, masters) = (nodes.clone(), masters.clone());
                        let _ =
                            tokio::task::spawn_blocking(move || nodes.hold_fence(&masters)).await;
                    }
                }
            });
            let stored =
                crate::code::upload(&access.client, &access.namespace, &access.service, &file)
                    .await
                    .map_err(|e| format!("{e:#}"));
            renewing.abort();
            let _ = std::fs::remove_file(&file);
            if stored.is_err() {
                // Not saved: writes go on until the next try, whose dump holds them.
                let _ = tokio::task::spawn_blocking(move || nodes.unpause(&masters)).await;
            }
            tracing::info!(keys = dumped, "keys saved");
            stored
        });
    }

    fn drained(&self) -> bool {
        self.stop_save.drained(self.spec.as_ref())
    }

    async fn shutdown(&mut self) {
        self.looks.abort();
        if let Some(mut server) = self.server.take() {
            server.stop(STOP_GRACE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_announces_the_node_and_keeps_an_aof() {
        let text = config(
            "127.0.9.1",
            "kv-node-0",
            std::path::Path::new("/w/redis/data"),
            "secret",
        );
        for line in [
            "bind 127.0.9.1\n",
            "cluster-announce-ip 127.0.9.1\n",
            "cluster-announce-hostname kv-node-0\n",
            "appendonly yes\n",
            "dir /w/redis/data\n",
            "requirepass \"secret\"\n",
            "masterauth \"secret\"\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
