//! filesystem (ConPaaS' XtreemFS) on GlusterFS: every storage node runs its own glusterd (its
//! state, sockets and logs in the node's folder, bound to the node's address) and keeps its
//! bricks in `<work>/bricks`, reachable under `/run/conpaas-gluster/<namespace>/<node>` so that
//! brick paths are known to every node without asking it (on the local cloud many nodes share
//! one filesystem).
//!
//! The storage member with the lowest ordinal in the pool manages it ([`standing`]: a node that
//! replaced the first one is added to the pool first): it probes the other members, creates,
//! starts, grows and shrinks the volumes of the spec ([`layout`]), gives a departed node's
//! bricks new copies on new nodes (healed before the next change) or moves a leaving node's data
//! off before dropping its bricks, detaches peers that left, and deletes volumes the spec no
//! longer has. Every storage node reports the nodes that hold bricks (`routesTo`): a
//! leaving node is released once no brick of it is left.
//!
//! Stopping: the first storage node archives every volume into the artifact store (one tar with
//! a folder per volume); the next start puts each volume's folder back once, noted on the volume
//! itself (the option `user.conpaas-restored`) so no later manager restores it again.

mod archive;
pub mod gluster;
mod identity;
pub mod layout;
mod standing;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use conpaas_crds::v1alpha1::{NodeCode, ServiceNodeSpec, VolumeSpec};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::looks::{Found, Looks};
use super::stop_save::StopSave;
use super::{Role, RoleEnv, RoleReport, ordinal};
use crate::daemon::{self, Daemon};
use gluster::{Cli, Peer, VolumeInfo};
use layout::{HEALING_OPTION, Healing, Node, Step};
use standing::Standing;

/// Where every node's brick folder is reachable by a path the other nodes can name.
pub const BRICK_LINKS: &str = "/run/conpaas-gluster";
/// The storage role.
const ROLE: &str = "storage";
/// How long a brick removal that could not move every file waits before it is tried again.
const REMOVAL_RETRY: Duration = Duration::from_secs(20);
/// The volume option noting which saved archive was put back into the volume.
const RESTORED_OPTION: &str = "user.conpaas-restored";
/// The volume option that refuses writes (EROFS), set while a stop saves the volumes.
const READ_ONLY: &str = "features.read-only";
/// When the stop's fence was last renewed (Unix seconds): the saver renews it while it saves;
/// a manager lifts a fence not renewed for [`FENCE_HOLD`] (a stop called off, a saver gone).
const FENCE_OPTION: &str = "user.conpaas-fence";
const FENCE_HOLD: Duration = Duration::from_secs(900);
const FENCE_RENEW_EVERY: Duration = Duration::from_secs(30);

/// Notes on `volume` that its stop's fence is renewed now.
async fn renew_fence(cli: &gluster::Cli, volume: &str) -> Result<(), String> {
    let now = unix_seconds().to_string();
    cli.run(&["volume", "set", volume, FENCE_OPTION, &now])
        .await
        .map(|_| ())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Filesystem {
    env: RoleEnv,
    spec: Option<ServiceNodeSpec>,
    glusterd: Option<Daemon>,
    cli: Option<Cli>,
    error: Option<String>,
    looks: Looks<Carried>,
    /// Removals that could not move every file, by volume: when to try again.
    retry_removal: RetryRemoval,
    /// Daemon processes already noted for the local cloud's power-off.
    recorded: BTreeSet<i32>,
    stop_save: StopSave,
}

/// Removals that could not move every file, by volume: when to try again.
type RetryRemoval = BTreeMap<String, Instant>;

/// What a look hands back besides its report.
#[derive(Default)]
struct Carried {
    retry_removal: RetryRemoval,
    /// A departed peer's identity this node's glusterd takes over ([`identity`]).
    adopt: Option<identity::Adoption>,
}

/// What one look at the pool found, with what it hands back.
type Outcome = Found<Carried>;

impl Filesystem {
    pub fn new(env: RoleEnv) -> Self {
        Self {
            env,
            spec: None,
            glusterd: None,
            cli: None,
            error: None,
            looks: Looks::new("glusterd"),
            retry_removal: BTreeMap::new(),
            recorded: BTreeSet::new(),
            stop_save: StopSave::new("the volumes"),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.env.work_dir.join("glusterfs").join(name)
    }

    /// The folder every brick path of this node starts with.
    fn brick_link(&self) -> PathBuf {
        PathBuf::from(BRICK_LINKS)
            .join(&self.env.namespace)
            .join(&self.env.node)
    }

    /// Starts glusterd (in the foreground, as the agent's child) with its own folders and the
    /// node's address, and links the brick folder where the other nodes look for it.
    fn start(&mut self) -> Result<(), String> {
        let program = daemon::find(&["glusterd"], "glusterfs-server")?;
        let gluster = daemon::find(&["gluster"], "glusterfs-server")?;
        // The bricks live on the node's own volume when it has one.
        super::on_data_volume(&self.dir("bricks"), "bricks")?;
        for name in ["state", "run", "logs", "bricks"] {
            let dir = self.dir(name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let link = self.brick_link();
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(self.dir("bricks"), &link)
            .map_err(|e| format!("link {}: {e}", link.display()))?;
        let socket = self.dir("state").join("glusterd.socket");
        let option = |o: String| ["--xlator-option".to_string(), o];
        let mut args = vec!["-N".to_string()];
        args.extend(option(format!(
            "management.working-directory={}",
            self.dir("state").display()
        )));
        args.extend(option(format!(
            "management.transport.socket.bind-address={}",
            self.env.address
        )));
        args.extend(option(format!(
            "management.run-directory={}",
            self.dir("run").display()
        )));
        args.extend(option(format!(
            "management.glusterd-sockfile={}",
            socket.display()
        )));
        args.push(format!(
            "--log-file={}",
            self.dir("logs").join("glusterd.log").display()
        ));
        let mut glusterd = Daemon::new(
            "glusterd",
            program,
            args,
            self.dir("logs").join("glusterd.out"),
            Signal::SIGTERM,
        );
        glusterd.ensure_started()?;
        self.glusterd = Some(glusterd);
        self.cli = Some(Cli {
            program: gluster,
            socket,
        });
        Ok(())
    }

    /// Restarts glusterd as the departed peer whose address this node has ([`identity`]).
    async fn adopt(&mut self, adoption: &identity::Adoption) -> Result<(), String> {
        tracing::info!(uuid = %adoption.uuid, "taking over the departed storage node's identity at this address");
        if let Some(mut glusterd) = self.glusterd.take() {
            glusterd.stop(STOP_GRACE).await;
        }
        identity::write(&self.dir("state"), adoption)?;
        self.start()
    }

    /// Notes the processes glusterd started (bricks, self-heal, data movers), which leave its
    /// process group, so the local cloud's power-off stops them too.
    fn record_daemons(&mut self) {
        let mut pids = gluster::pids_under(&self.dir("run"));
        pids.extend(gluster::pids_under(&self.dir("state")));
        for pid in pids {
            if self.recorded.insert(pid) {
                daemon::record_group(pid as u32);
            }
        }
    }

    /// Where the Service's saved archive is stored and unpacked.
    fn archive_access(&self, spec: &ServiceNodeSpec) -> archive::Access {
        archive::Access {
            client: self.env.client.clone(),
            namespace: self.env.namespace.clone(),
            service: spec.service.clone(),
            work_dir: self.env.work_dir.join("glusterfs"),
        }
    }

    fn look(&mut self, spec: &ServiceNodeSpec) {
        let Some(cli) = self.cli.clone() else { return };
        let members: Vec<Node> = {
            let mut m: Vec<_> = spec.members.iter().filter(|m| m.role == ROLE).collect();
            m.sort_by_key(|m| ordinal(&m.name));
            m.into_iter()
                .map(|m| Node {
                    name: m.name.clone(),
                    address: m.address.clone(),
                })
                .collect()
        };
        let pool = Pool {
            cli,
            node: self.env.node.clone(),
            address: self.env.address.clone(),
            namespace: self.env.namespace.clone(),
            leaving: spec.drain.is_some(),
            members,
            volumes: spec
                .filesystem
                .as_ref()
                .map(|f| f.volumes.clone())
                .unwrap_or_default(),
            min_free_disk: spec
                .settings
                .get("min_free_disk_percent")
                .cloned()
                .unwrap_or_else(|| "10".into()),
            restore: spec.restore.clone(),
            archive: self.archive_access(spec),
            retry_removal: self.retry_removal.clone(),
        };
        self.looks.start(pool.look());
    }
}

/// What a look at the pool works with (a task of its own: the agent keeps reporting and renewing
/// its heartbeat while data moves).
struct Pool {
    cli: Cli,
    /// This node's name and address.
    node: String,
    address: String,
    namespace: String,
    /// This node drains (it is no longer a member).
    leaving: bool,
    /// The storage members, in ordinal order.
    members: Vec<Node>,
    volumes: Vec<VolumeSpec>,
    min_free_disk: String,
    restore: Option<NodeCode>,
    archive: archive::Access,
    retry_removal: BTreeMap<String, Instant>,
}

impl Pool {
    fn brick_path(&self, node: &Node, volume: &str) -> String {
        // A fresh folder each time: GlusterFS refuses a folder that held a brick before.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!(
            "{BRICK_LINKS}/{}/{}/{volume}-{stamp}",
            self.namespace, node.name
        )
    }

    /// The options every volume gets.
    fn options(&self) -> [(&'static str, String); 2] {
        [
            ("cluster.min-free-disk", format!("{}%", self.min_free_disk)),
            // With lookups optimized, files that a rebalance has not reached yet are not found
            // for a moment after bricks join (tried here: 29 of 60 files for about a second).
            ("cluster.lookup-optimize", "off".into()),
        ]
    }

    async fn volume_info(&self) -> Result<Vec<VolumeInfo>, String> {
        self.cli
            .run(&["volume", "info"])
            .await
            .map(|text| gluster::parse_volume_info(&text))
    }

    /// The nodes that hold data: those with bricks, and those whose brick was replaced by a
    /// copy that still heals (their data may be the only whole copy until it has).
    fn holders(&self, volumes: &[VolumeInfo]) -> Vec<String> {
        let mut names: Vec<String> = volumes
            .iter()
            .flat_map(|v| &v.bricks)
            .filter_map(|b| layout::node_of(&b.path, BRICK_LINKS))
            .chain(volumes.iter().filter_map(layout::healing).map(|h| h.from))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Why this node is not Ready yet: a new brick of it still heals, or a volume lost a brick
    /// to a departed node and this node, holding none of that volume, is to take its place.
    /// Until then it is no copy of anything, and a node whose copy it would be must not go.
    fn not_ready_here(&self, volumes: &[VolumeInfo]) -> Option<String> {
        if self.leaving {
            return None;
        }
        let members: BTreeSet<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        volumes.iter().find_map(|v| {
            if let Some(h) = layout::healing(v).filter(|h| h.onto == self.node) {
                return Some(format!(
                    "volume {}: the new brick here heals from its group (it replaces {}'s)",
                    v.name, h.from
                ));
            }
            let owners: Vec<String> = v
                .bricks
                .iter()
                .filter_map(|b| layout::node_of(&b.path, BRICK_LINKS))
                .collect();
            let departed: Vec<&String> = owners
                .iter()
                .filter(|o| !members.contains(o.as_str()))
                .collect();
            (!departed.is_empty() && !owners.contains(&self.node)).then(|| {
                format!(
                    "volume {}: waiting for a brick in place of departed node {}'s",
                    v.name, departed[0]
                )
            })
        })
    }

    /// One look: first who manages ([`standing`]), then what that node does.
    async fn look(self) -> Outcome {
        let pool = match self.cli.run(&["pool", "list"]).await {
            Ok(text) => gluster::parse_pool_list(&text),
            Err(e) => return self.outcome(false, e, None),
        };
        let volumes = match self.volume_info().await {
            Ok(v) => v,
            Err(e) => return self.outcome(false, e, None),
        };
        let peers: BTreeSet<String> = pool
            .iter()
            .filter(|p| p.host != "localhost")
            .map(|p| p.host.clone())
            .collect();
        let standing = if self.leaving {
            Standing::Follows
        } else if !peers.is_empty() || !volumes.is_empty() {
            let connected = pool
                .iter()
                .filter(|p| p.connected && p.host != "localhost")
                .map(|p| p.host.clone())
                .collect();
            standing::in_pool(&self.node, &self.members, &connected)
        } else {
            // Alone: what the other members' glusterds say.
            let mine = pool
                .iter()
                .find(|p| p.host == "localhost")
                .map(|p| p.uuid.clone())
                .unwrap_or_default();
            let first = self.members.first().is_some_and(|m| m.name == self.node);
            let mut said = Vec::new();
            for other in self.members.iter().filter(|m| m.name != self.node) {
                let listed = match self.cli.run_on(&other.address, &["pool", "list"]).await {
                    Ok(text) => gluster::parse_pool_list(&text),
                    Err(e) => {
                        said.push((other.name.clone(), Err(e)));
                        continue;
                    }
                };
                if listed.iter().any(|p| p.host == self.address)
                    && let Ok(volumes) = self.cli.run_on(&other.address, &["volume", "info"]).await
                {
                    let theirs = gluster::parse_volume_info(&volumes)
                        .iter()
                        .flat_map(|v| &v.bricks)
                        .any(|b| {
                            b.host == self.address
                                && layout::node_of(&b.path, BRICK_LINKS).as_ref()
                                    != Some(&self.node)
                        });
                    if let Some(adoption) =
                        identity::adoption(&self.address, &mine, &other.address, &listed, theirs)
                    {
                        return self.adopting(adoption);
                    }
                }
                let pooled = if listed.len() > 1 {
                    Ok(true)
                } else if first {
                    self.has_volumes(&other.address).await
                } else {
                    Ok(false)
                };
                said.push((other.name.clone(), pooled));
            }
            standing::alone(&self.node, &self.members, &said)
        };
        match standing {
            Standing::Manages => self.manage(pool).await,
            Standing::Follows => self.follow(volumes),
            Standing::Waits(why) => self.outcome(false, why, None),
        }
    }

    /// Whether the glusterd at `address` has volumes.
    async fn has_volumes(&self, address: &str) -> Result<bool, String> {
        let volumes = self.cli.run_on(address, &["volume", "info"]).await?;
        Ok(!gluster::parse_volume_info(&volumes).is_empty())
    }

    /// The look's end when this node takes over a departed peer's identity.
    fn adopting(self, adoption: identity::Adoption) -> Outcome {
        let message = format!(
            "this node has the address of a departed storage node (glusterd {}): taking over its identity to join the pool",
            adoption.uuid
        );
        let mut outcome = self.outcome(false, message, None);
        outcome.more.adopt = Some(adoption);
        outcome
    }

    /// A storage node that does not manage: reports who holds bricks.
    fn follow(self, volumes: Vec<VolumeInfo>) -> Outcome {
        let holders = self.holders(&volumes);
        // Just added to the pool, glusterd may not have every volume yet.
        let missing = self
            .volumes
            .iter()
            .filter(|_| !self.leaving)
            .find(|spec| !volumes.iter().any(|v| v.name == spec.name))
            .map(|spec| format!("volume {} is not known here yet", spec.name));
        match missing.or_else(|| self.not_ready_here(&volumes)) {
            Some(why) => self.outcome(false, why, Some(holders)),
            None => {
                let message = format!("storage node of {} volumes", volumes.len());
                self.outcome(true, message, Some(holders))
            }
        }
    }

    /// The manager's look: peers, then each volume's next step.
    async fn manage(mut self, pool: Vec<Peer>) -> Outcome {
        let mut notes: Vec<String> = Vec::new();
        // Members not in the pool yet are added once their glusterd listens.
        for member in self.members.iter().filter(|m| m.name != self.node) {
            if pool.iter().any(|p| p.host == member.address) {
                continue;
            }
            let port = conpaas_crds::types::filesystem::GLUSTERD_PORT;
            if daemon::listening(&format!("{}:{port}", member.address)).await
                && let Err(e) = self.cli.run(&["peer", "probe", &member.address]).await
            {
                notes.push(e);
            }
        }
        let mut connected: BTreeSet<String> = pool
            .iter()
            .filter(|p| p.connected && p.host != "localhost")
            .map(|p| p.host.clone())
            .collect();
        connected.insert(self.address.clone());
        let volumes = match self.volume_info().await {
            Ok(v) => v,
            Err(e) => return self.outcome(false, e, None),
        };
        let holders = self.holders(&volumes);
        let mut ready = true;
        if let Some(why) = self.not_ready_here(&volumes) {
            ready = false;
            notes.push(why);
        }
        for spec in self.volumes.clone() {
            let current = volumes.iter().find(|v| v.name == spec.name);
            if let Some(healing) = current.and_then(layout::healing) {
                notes.push(self.check_heal(&spec.name, &healing).await);
            }
            let path = |n: &Node| self.brick_path(n, &spec.name);
            let step = layout::next_step(&spec, &self.members, &connected, current, &path);
            let exists = current.is_some_and(|v| v.started);
            match step {
                None => {}
                Some(Step::Wait(why)) => notes.push(why),
                Some(step) => {
                    if let Err(e) = self.act(&spec, step).await {
                        notes.push(e);
                    }
                }
            }
            if !exists {
                ready = false;
                continue;
            }
            for (option, value) in self.options() {
                if current.and_then(|v| v.options.get(option)) != Some(&value)
                    && let Err(e) = self
                        .cli
                        .run(&["volume", "set", &spec.name, option, &value])
                        .await
                {
                    notes.push(e);
                }
            }
            // A stop's fence that is no longer renewed (the stop called off after its save, or
            // its saver gone) is lifted.
            let option = |name| {
                current
                    .and_then(|v| v.options.get(name))
                    .map(String::as_str)
            };
            let renewed = option(FENCE_OPTION).and_then(|t| t.parse::<u64>().ok());
            if option(READ_ONLY) == Some("on")
                && renewed.is_none_or(|t| unix_seconds().saturating_sub(t) > FENCE_HOLD.as_secs())
                && let Err(e) = self
                    .cli
                    .run(&["volume", "set", &spec.name, READ_ONLY, "off"])
                    .await
            {
                notes.push(e);
            }
            if let Some(restore) = self.restore.clone()
                && current.and_then(|v| v.options.get(RESTORED_OPTION)) != Some(&restore.sha256)
            {
                ready = false;
                if archive::announce(&self.archive, &spec.name, &restore) {
                    notes.push(format!(
                        "volume {}: putting the data saved at the last stop back",
                        spec.name
                    ));
                } else {
                    match self.put_back(&spec.name, &restore).await {
                        Ok(()) => notes.push(format!("volume {}: saved data put back", spec.name)),
                        Err(e) => notes.push(format!(
                            "volume {}: putting the saved data back: {e}",
                            spec.name
                        )),
                    }
                }
            }
        }
        for volume in &volumes {
            if !self.volumes.iter().any(|v| v.name == volume.name) {
                let _ = self
                    .cli
                    .run(&["volume", "stop", &volume.name, "force"])
                    .await;
                match self.cli.run(&["volume", "delete", &volume.name]).await {
                    Ok(_) => notes.push(format!("volume {} deleted", volume.name)),
                    Err(e) => notes.push(e),
                }
            }
        }
        let members: BTreeSet<&str> = self.members.iter().map(|n| n.address.as_str()).collect();
        for peer in pool.iter().filter(|p| p.host != "localhost") {
            let holds = volumes
                .iter()
                .flat_map(|v| &v.bricks)
                .any(|b| b.host == peer.host);
            if !members.contains(peer.host.as_str()) && !holds {
                let detached = self.cli.run(&["peer", "detach", &peer.host]).await;
                if detached.is_err() {
                    let _ = self.cli.run(&["peer", "detach", &peer.host, "force"]).await;
                }
            }
        }
        let message = if notes.is_empty() {
            let names: Vec<&str> = self.volumes.iter().map(|v| v.name.as_str()).collect();
            format!(
                "managing {} storage nodes; volumes: {}",
                self.members.len(),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        } else {
            notes.join("; ")
        };
        self.outcome(ready, message, Some(holders))
    }

    fn outcome(self, ready: bool, message: String, routes_to: Option<Vec<String>>) -> Outcome {
        Outcome {
            ready,
            message,
            routes_to,
            more: Carried {
                retry_removal: self.retry_removal,
                adopt: None,
            },
        }
    }

    async fn act(&mut self, spec: &VolumeSpec, step: Step) -> Result<(), String> {
        let name = spec.name.as_str();
        let group = spec.group_size().to_string();
        let kind: Vec<&str> = match spec.disperse {
            Some(_) => vec!["disperse", &group, "redundancy", "1"],
            None if spec.replicas > 1 => vec!["replica", &group],
            None => vec![],
        };
        match step {
            Step::Create(bricks) => {
                let specs: Vec<String> = bricks.iter().map(|b| b.spec()).collect();
                let mut args = vec!["volume", "create", name];
                args.extend(&kind);
                args.extend(specs.iter().map(String::as_str));
                args.push("force");
                self.cli.run(&args).await?;
                for (option, value) in self.options() {
                    self.cli
                        .run(&["volume", "set", name, option, &value])
                        .await?;
                }
                self.cli.run(&["volume", "start", name]).await?;
                tracing::info!(volume = name, bricks = ?specs, "volume created");
            }
            Step::Start => {
                self.cli.run(&["volume", "start", name]).await?;
            }
            Step::Add(bricks) => {
                let specs: Vec<String> = bricks.iter().map(|b| b.spec()).collect();
                let mut args = vec!["volume", "add-brick", name];
                if spec.disperse.is_none() && spec.replicas > 1 {
                    args.extend(&kind);
                }
                args.extend(specs.iter().map(String::as_str));
                args.push("force");
                self.cli.run(&args).await?;
                tracing::info!(volume = name, bricks = ?specs, "bricks added");
                // Existing files spread onto the new bricks; new files use them at once either way.
                if let Err(e) = self.cli.run(&["volume", "rebalance", name, "start"]).await {
                    tracing::warn!(error = %e, "rebalance after adding bricks");
                }
            }
            Step::Replace { old, new } => {
                let from = layout::node_of(&old.path, BRICK_LINKS).unwrap_or(old.host.clone());
                let onto = layout::node_of(&new.path, BRICK_LINKS).unwrap_or(new.host.clone());
                // Noted before the brick goes: until the heal is done, the departed node still
                // counts as holding data (it is not released) and the new one is not Ready.
                let healing = Healing { from, onto }.option_value();
                self.cli
                    .run(&["volume", "set", name, HEALING_OPTION, &healing])
                    .await?;
                self.cli
                    .run(&[
                        "volume",
                        "replace-brick",
                        name,
                        &old.spec(),
                        &new.spec(),
                        "commit",
                        "force",
                    ])
                    .await?;
                tracing::info!(volume = name, old = %old.spec(), new = %new.spec(), "brick replaced; healing");
            }
            Step::Remove(bricks) => self.remove(name, &bricks).await?,
            Step::Wait(_) => {}
        }
        Ok(())
    }

    /// How a replacement's heal is doing: once every brick answers with nothing left to heal,
    /// the note goes (the departed node is released, the new one Ready).
    async fn check_heal(&self, volume: &str, healing: &Healing) -> String {
        let heal = format!(
            "volume {volume}: healing the new brick on {} (replacing {}'s)",
            healing.onto, healing.from
        );
        match self.cli.heal_summary(volume).await {
            Ok(counts) if gluster::healed(&counts) => {
                // A user option cannot be reset, only set: "none" notes no heal.
                match self
                    .cli
                    .run(&["volume", "set", volume, HEALING_OPTION, "none"])
                    .await
                {
                    Ok(_) => {
                        tracing::info!(volume, onto = %healing.onto, "replacement healed");
                        format!("{heal}: done")
                    }
                    Err(e) => format!("{heal}: done, but {e}"),
                }
            }
            Ok(counts) => {
                let pending: u64 = counts.iter().filter_map(|c| c.pending).sum();
                format!("{heal}: {pending} entries left")
            }
            Err(e) => format!("{heal}: {e}"),
        }
    }

    /// Moves the data off `bricks` and drops them once every file moved; a removal that left
    /// files behind (a brick without space) is stopped and tried again later, never committed.
    async fn remove(&mut self, name: &str, bricks: &[gluster::Brick]) -> Result<(), String> {
        let specs: Vec<String> = bricks.iter().map(|b| b.spec()).collect();
        let command = |verb: &'static str| {
            let mut args = vec!["volume", "remove-brick", name];
            args.extend(specs.iter().map(String::as_str));
            args.push(verb);
            args
        };
        let moving = format!("volume {name}: moving data off {}", specs.join(" "));
        let status = self.cli.run(&command("status")).await;
        let migration = status.as_deref().ok().and_then(gluster::parse_migration);
        let Some(migration) = migration else {
            if self
                .retry_removal
                .get(name)
                .is_some_and(|at| *at > Instant::now())
            {
                return Err(format!("{moving}: waiting to try again"));
            }
            self.cli.run(&command("start")).await?;
            tracing::info!(volume = name, bricks = ?specs, "moving data off the bricks");
            return Err(format!("{moving}: started"));
        };
        let left_behind = migration.failures + migration.skipped;
        if migration.completed && left_behind == 0 && !migration.failed {
            self.cli.run(&command("commit")).await?;
            self.retry_removal.remove(name);
            tracing::info!(volume = name, bricks = ?specs, moved = migration.moved, "bricks removed");
            return Ok(());
        }
        if migration.completed || migration.failed {
            let _ = self.cli.run(&command("stop")).await;
            self.retry_removal
                .insert(name.to_string(), Instant::now() + REMOVAL_RETRY);
            return Err(format!(
                "{moving}: {left_behind} files could not be moved (no space left on the other bricks? see the volume's rebalance log); the bricks stay until every file moved, tried again in {}s",
                REMOVAL_RETRY.as_secs()
            ));
        }
        Err(format!("{moving}: {} files moved so far", migration.moved))
    }

    /// Puts the volume's part of the saved archive back, and notes it on the volume.
    async fn put_back(&self, volume: &str, saved: &NodeCode) -> Result<(), String> {
        archive::restore(&self.archive, &self.address, volume, saved).await?;
        self.cli
            .run(&["volume", "set", volume, RESTORED_OPTION, &saved.sha256])
            .await?;
        // Only once the volume says it is restored: a retry before that copies again.
        archive::forget_unpacked(&self.archive, volume, saved);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Role for Filesystem {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec = Some(spec.clone());
        if self.glusterd.is_none()
            && let Err(e) = self.start()
        {
            self.error = Some(e);
        }
        self.looks.soon();
        self.poll().await;
    }

    async fn poll(&mut self) {
        if let Some(glusterd) = self.glusterd.as_mut() {
            if !glusterd.running() {
                let message = glusterd.exited_message();
                if let Err(e) = glusterd.ensure_started() {
                    self.error = Some(format!("{message}; restarting it: {e}"));
                }
            } else {
                self.error = None;
            }
        } else if self.error.is_some()
            && let Err(e) = self.start()
        {
            // A missing daemon or folder, tried again.
            self.error = Some(e);
        }
        self.record_daemons();
        self.stop_save.poll().await;
        if self.looks.collect().await {
            self.retry_removal = self.looks.found.more.retry_removal.clone();
            if let Some(adoption) = self.looks.found.more.adopt.take()
                && let Err(e) = self.adopt(&adoption).await
            {
                self.error = Some(e);
            }
        }
        let Some(spec) = self.spec.clone() else {
            return;
        };
        if self.stop_save.retry_due(&spec) {
            self.drain().await;
        }
        if self.looks.due(&self.stop_save) {
            let listening = daemon::listening(&format!(
                "{}:{}",
                self.env.address,
                conpaas_crds::types::filesystem::GLUSTERD_PORT
            ))
            .await;
            // The next look is due a period later, whether this one starts or not.
            self.looks.skip();
            if listening {
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
        let Some(cli) = self.cli.clone() else { return };
        let access = self.archive_access(&spec);
        let address = self.env.address.clone();
        self.stop_save.start(async move {
            let text = cli.run(&["volume", "info"]).await?;
            let volumes: Vec<String> = gluster::parse_volume_info(&text)
                .into_iter()
                .filter(|v| v.started)
                .map(|v| v.name)
                .collect();
            // The fence: no write lands after the archive is made (it would be acknowledged,
            // then lost with the nodes), renewed while the save runs. A save that fails lifts
            // it until the next try.
            let fence = |on: &'static str| {
                let (cli, volumes) = (cli.clone(), volumes.clone());
                async move {
                    for volume in &volumes {
                        renew_fence(&cli, volume).await?;
                        cli.run(&["volume", "set", volume, READ_ONLY, on]).await?;
                    }
                    Ok::<(), String>(())
                }
            };
            let saved = match fence("on").await {
                Ok(()) => {
                    let renewing = tokio::spawn({
                        let (cli, volumes) = (cli.clone(), volumes.clone());
                        async move {
                            loop {
                                tokio::time::sleep(FENCE_RENEW_EVERY).await;
                                for volume in &volumes {
                                    if let Err(e) = renew_fence(&cli, volume).await {
                                        tracing::warn!(error = %e, "renew the volumes' fence");
                                    }
                                }
                            }
                        }
                    });
                    let saved = archive::save(&access, &address, &volumes).await;
                    renewing.abort();
                    saved
                }
                Err(e) => Err(format!("make the volumes read-only for the save: {e}")),
            };
            if saved.is_err()
                && let Err(e) = fence("off").await
            {
                tracing::warn!(error = %e, "lift the volumes' read-only fence");
            }
            saved
        });
    }

    fn drained(&self) -> bool {
        self.stop_save.drained(self.spec.as_ref())
    }

    async fn shutdown(&mut self) {
        self.looks.abort();
        self.record_daemons();
        if let Some(mut glusterd) = self.glusterd.take() {
            glusterd.stop(STOP_GRACE).await;
        }
        // The bricks and helpers glusterd started run on by themselves (checked by name: a pid
        // noted long ago may belong to another process now).
        for pid in &self.recorded {
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&command).contains("gluster") {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
            }
        }
        let _ = std::fs::remove_file(self.brick_link());
    }
}
