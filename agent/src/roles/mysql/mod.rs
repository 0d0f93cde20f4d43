//! mysql: a MariaDB Galera node. The first node (lowest ordinal) bootstraps the cluster when no
//! peer answers on Galera's port; the others join one at a time (each once every lower ordinal
//! serves), getting the data by a mariabackup state transfer (which does not stop writes on the
//! donor, as rsync's would); a transfer that fails is retried from an empty data folder. Once up, the node makes
//! the database of the setting `database` and the user of the Secret `<service>-mysql`. Ready
//! means Synced (or donating a state transfer, which mariabackup does without stopping writes)
//! and answering a query.
//!
//! The Secret is read again every few seconds; a new one is applied at once (the user made or
//! its password changed, replicated by Galera), and reported as accepted. Linked services switch
//! to it only once every node accepts it. When it names another user (`cpsctl mysql password`
//! alternates two), the previous user keeps working for the setting `previous_user_seconds`, so
//! their requests in between still connect, and is then locked and its connections closed.
//! State transfers authenticate by unix socket as the daemon's own user, apart from the
//! Service's password. Leaving (released from its drain), it shuts down cleanly,
//! so the cluster sees a member go rather than fail.
//!
//! A code version of a mysql Service is an SQL dump (plain or gzipped; ConPaaS' `Dump`): the
//! first node loads each activated version once into the database, and notes it in the
//! replicated table `conpaas-agent`.`dumps`, which the other nodes read. Until the first version loaded,
//! the nodes are not Ready; a dump MariaDB refuses makes the node Failed with MariaDB's words.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conpaas_crds::types::mysql;
use conpaas_crds::v1alpha1::{AgentState, DrainReason, Member, NodeCode, ServiceNodeSpec};
use nix::sys::signal::Signal;

use self::config::{
    chown_mysql, database, install_db, my_cnf, previous_user_seconds, run_as, tail,
};
use self::lifecycle::{Node, Peers, Start, Step};
use self::recovery::{Peer, Position};
use super::mysql_dump::{
    DumpError, DumpLoad, LOADED_TABLE, LoadProgress, SaveData, quote, run_sql,
};
use super::stop_save::Retries;
use super::{Credentials, Role, RoleEnv, RoleReport, first_member, ordinal};
use crate::daemon::{self, Daemon};

mod config;
mod datadir;
mod fence;
mod lifecycle;
mod recovery;

const PORT: u16 = 3306;
const GALERA_PORT: u16 = 4567;
/// How often the node's state is read while it runs.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a clean shutdown may take.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How long reading the data's last transaction may take (InnoDB's crash recovery runs first).
const RECOVER_WITHIN: Duration = Duration::from_secs(30 * 60);
/// How often the credentials Secret is read for a change.
const CREDENTIALS_EVERY: Duration = Duration::from_secs(5);

/// A dump being loaded by a task of its own.
type Loading = tokio::task::JoinHandle<Result<(), DumpError>>;

pub struct Mysql {
    env: RoleEnv,
    dir: PathBuf,
    spec: Option<ServiceNodeSpec>,
    credentials: Option<Credentials>,
    /// When the Secret was last read.
    credentials_read: Option<Instant>,
    /// The user the Secret named before it changed, and when to lock it.
    retiring: Option<(String, Instant)>,
    mariadbd: Option<Daemon>,
    /// The database and the credentials' user exist (made once the node is up).
    prepared: bool,
    /// The version of the credentials last made (again after the Secret changed; the node
    /// stays Ready meanwhile, with the previous ones working).
    accepted: Option<String>,
    synced: bool,
    /// Galera's word for the node's state (`Synced`, `Donor/Desynced`, ...).
    galera_state: String,
    last_check: Option<Instant>,
    /// Why it does not run yet, when it waits for something.
    waiting: Option<String>,
    error: Option<String>,
    /// It was Synced once: from then on an exit is a failure, not a transfer to retry.
    joined: bool,
    /// State transfers that failed.
    failed_joins: u32,
    /// No join before then (after a failed one), nor a new read of the data's last transaction
    /// (after a failed one).
    join_again_at: Option<Instant>,
    /// Reads of the data's last transaction (`--wsrep-recover`) that failed in a row.
    failed_recoveries: u32,
    /// Looks that found no peer answering, before a bootstrap.
    quiet_looks: u32,
    /// The last transaction its data holds, read while every member was down (forgotten when
    /// MariaDB starts: from then on the data moves on).
    position: Option<Position>,
    /// What it tells the other members of its data while no member answers, until it is
    /// Synced again: its position, or that it holds nothing (while others report theirs).
    reported_position: Option<String>,
    /// Its MariaDB was started to bring the cluster back from this node's data.
    bootstrapping_from_data: bool,
    /// The SQL dump (code version) loaded into the database.
    loaded: Option<NodeCode>,
    /// What loading the spec's dump waits for (the first node, the node's credentials).
    dump_waiting: Option<String>,
    /// A dump that failed to load, and MariaDB's words; not tried again.
    dump_failed: Option<(NodeCode, String)>,
    /// The dump being loaded (and whether it is the data saved at the last stop), by a task of
    /// its own.
    loading: Option<(NodeCode, bool, Loading)>,
    /// How far that load is.
    load_progress: Arc<LoadProgress>,
    /// The data saved at the last stop is in (or there is none to restore).
    restored: bool,
    /// Saving the database for a stop: the task dumping and uploading it.
    saving: Option<tokio::task::JoinHandle<Result<String, String>>>,
    /// The SHA-256 of the database saved for the stop, once stored.
    saved: Option<String>,
    /// Saves that failed, and when the next one starts.
    save_retries: Retries,
    /// The stop's write fence, as this member follows it.
    fence: fence::Follower,
}

impl Mysql {
    pub fn new(env: RoleEnv) -> Self {
        Self {
            dir: env.work_dir.join("mysql"),
            env,
            spec: None,
            credentials: None,
            credentials_read: None,
            retiring: None,
            mariadbd: None,
            prepared: false,
            accepted: None,
            synced: false,
            galera_state: String::new(),
            last_check: None,
            waiting: None,
            error: None,
            joined: false,
            failed_joins: 0,
            join_again_at: None,
            failed_recoveries: 0,
            quiet_looks: 0,
            position: None,
            reported_position: None,
            bootstrapping_from_data: false,
            loaded: None,
            dump_waiting: None,
            dump_failed: None,
            loading: None,
            load_progress: Arc::default(),
            restored: false,
            saving: None,
            saved: None,
            save_retries: Retries::default(),
            fence: fence::Follower::default(),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The other mysql nodes with an address.
    fn peers<'a>(&self, spec: &'a ServiceNodeSpec) -> Vec<&'a Member> {
        spec.members
            .iter()
            .filter(|m| m.role == "mysql" && m.name != self.env.node)
            .collect()
    }

    /// What a node without MariaDB sees of its peers (a connect to each).
    async fn look_at_peers(&self, spec: &ServiceNodeSpec) -> Peers {
        let mut answering = Vec::new();
        let mut lower_not_serving = None;
        let mine = ordinal(&self.env.node);
        let peers = self.peers(spec);
        for peer in &peers {
            if daemon::listening(&format!("{}:{GALERA_PORT}", peer.address)).await {
                answering.push(peer.address.clone());
            }
            if lower_not_serving.is_none()
                && ordinal(&peer.name) < mine
                && !daemon::listening(&format!("{}:{PORT}", peer.address)).await
            {
                lower_not_serving = Some(peer.name.clone());
            }
        }
        Peers {
            listed: spec.members.iter().any(|m| m.name == self.env.node),
            first: first_member(&spec.members, "mysql").is_some_and(|m| m.name == self.env.node),
            node_zero: mine == 0,
            others: peers.len(),
            answering,
            lower_not_serving,
            quiet_looks: self.quiet_looks,
            holds_data: datadir::held_data(&self.dir),
            own_position: self.position.clone(),
            listed_position: spec
                .members
                .iter()
                .find(|m| m.name == self.env.node)
                .and_then(|m| m.position.as_deref())
                .and_then(Position::parse),
            ordinal: mine,
            peers: peers
                .iter()
                .map(|m| Peer {
                    name: m.name.clone(),
                    ordinal: ordinal(&m.name),
                    position: m.position.as_deref().and_then(Position::parse),
                    held_data: m.held_data,
                })
                .collect(),
        }
    }

    /// Writes the configuration, initialises the data folder once, and starts the node:
    /// bootstrapping the cluster, or joining the peers that answer.
    async fn start(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let run_as = run_as(&self.env.work_dir);
        // The database lives on the node's own volume when it has one.
        super::on_data_volume(&self.dir.join("data"), "mysql")?;
        for sub in ["data", "tmp"] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
        }
        let logs = self.env.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
        let peers = self.look_at_peers(spec).await;
        let decision = lifecycle::next_start(&peers);
        self.reported_position = match (&decision, peers.answering.is_empty()) {
            (_, false) => None,
            _ if peers.holds_data => self.position.as_ref().map(Position::to_string),
            // A node without the cluster's data says so while other members report theirs,
            // and when the member list says it held some (its data folder lost), so that they
            // wait for no one (a fresh cluster's start changes no member list).
            _ => (peers.peers.iter().any(|p| p.position.is_some())
                || spec
                    .members
                    .iter()
                    .any(|m| m.name == self.env.node && m.held_data))
            .then(|| Position::nothing().to_string()),
        };
        let (bootstrap, answering) = match decision {
            Start::Wait(why) => {
                self.waiting = Some(why);
                return Ok(());
            }
            Start::LookAgain => {
                self.quiet_looks += 1;
                self.waiting =
                    Some("making sure no peer runs a cluster before bootstrapping".into());
                return Ok(());
            }
            Start::Recover => {
                self.write_config(spec, &[], run_as)?;
                // A read that fails (a damaged InnoDB log, a full disk) starts mariadbd each
                // time: tried again ever more slowly, not at every look.
                let position = match recover_position(&self.config(), run_as).await {
                    Ok(position) => position,
                    Err(e) => {
                        self.failed_recoveries += 1;
                        let after = lifecycle::recover_again_after(self.failed_recoveries);
                        self.join_again_at = Some(Instant::now() + after);
                        return Err(format!("{e}; trying again in {} s", after.as_secs()));
                    }
                };
                self.failed_recoveries = 0;
                tracing::info!(%position, "every member is down; the data's last transaction read");
                self.waiting = Some(format!(
                    "every member is down: this node's data holds transaction {} of the \
                     cluster; comparing with the other members'",
                    position.seqno
                ));
                self.reported_position = Some(position.to_string());
                self.position = Some(position);
                self.error = None;
                return Ok(());
            }
            Start::BootstrapFromData(position) => {
                tracing::info!(%position, "starting the cluster again from this node's data, the newest");
                mark_safe_to_bootstrap(&self.dir.join("data/grastate.dat"))?;
                self.bootstrapping_from_data = true;
                (true, Vec::new())
            }
            Start::Bootstrap => (true, Vec::new()),
            Start::Join(peers) => (false, peers),
        };
        self.waiting = None;
        self.write_config(spec, &answering, run_as)?;
        if !self.dir.join("data/mysql").is_dir() {
            install_db(&self.config(), run_as).await?;
        }
        let program = daemon::find(&["mariadbd", "mysqld"], "mariadb-server")?;
        let mut args = vec![
            format!("--defaults-file={}", self.config().display()),
            format!("--user={run_as}"),
        ];
        if bootstrap {
            args.push("--wsrep-new-cluster".into());
        }
        // Where its data is, as read while every member was down: a joiner may then catch up
        // by an incremental transfer, and a bootstrap carries the cluster's history on.
        if let Some(position) = self.position.take().filter(|p| p.seqno >= 0) {
            args.push(format!("--wsrep-start-position={position}"));
        }
        tracing::info!(bootstrap, peers = ?answering, "starting MariaDB");
        let mut mariadbd = Daemon::new(
            "mariadbd",
            program,
            args,
            logs.join("mariadbd.out"),
            Signal::SIGTERM,
        );
        mariadbd.ensure_started()?;
        self.mariadbd = Some(mariadbd);
        Ok(())
    }

    /// Writes the configuration (joining `answering`) and gives the folders to MariaDB's user.
    fn write_config(
        &self,
        spec: &ServiceNodeSpec,
        answering: &[String],
        run_as: &str,
    ) -> Result<(), String> {
        let cnf = my_cnf(
            &self.dir,
            &self.env.address,
            &spec.service,
            &self.env.node,
            answering,
            run_as,
        );
        daemon::write_if_changed(&self.config(), &cnf)?;
        if run_as == "mysql" {
            chown_mysql(&self.dir)?;
            // chown -R does not follow the link to the data volume.
            chown_mysql(&self.dir.join("data/"))?;
        }
        Ok(())
    }

    /// This member as the cluster lists it (`wsrep_incoming_addresses`).
    fn member(&self) -> String {
        format!("{}:{PORT}", self.env.address)
    }

    /// Runs SQL as the node's root (unix-socket authentication); its output.
    async fn sql(&self, statement: &str) -> Result<String, String> {
        run_sql(&self.socket(), statement).await
    }

    /// The database and the Secret's user with its password, made on each node once and after
    /// each change of the Secret (Galera replicates them; doing it again is harmless).
    async fn prepare(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        let credentials = self.credentials.clone().expect("read before start");
        let (user, password) = (quote(&credentials.user), quote(&credentials.password));
        let database = database(spec);
        // Only where it is missing, never again: in Galera a DDL statement aborts the
        // transactions it meets in that database, even when it changes nothing; and a joiner's
        // `CREATE DATABASE IF NOT EXISTS` waits on the first node for the schema lock of a load
        // under way (a dump's `LOCK TABLES`) while that load waits for it in Galera's order:
        // both, for good.
        let exists = format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
            quote(&database)
        );
        let create = if self.prepared || self.sql(&exists).await? == "1" {
            String::new()
        } else {
            format!("CREATE DATABASE IF NOT EXISTS `{database}`;")
        };
        let statement = format!(
            "{create}
             CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}';
             ALTER USER '{user}'@'%' IDENTIFIED BY '{password}' ACCOUNT UNLOCK;
             GRANT ALL ON `{database}`.* TO '{user}'@'%';"
        );
        self.sql(&statement).await.map(|_| ())
    }

    /// Reads the Secret again every few seconds; a new user or password is prepared on the
    /// next check, and a user the Secret no longer names is locked after its grace.
    async fn follow_credentials(&mut self, spec: &ServiceNodeSpec) -> Result<(), String> {
        if self
            .credentials_read
            .is_some_and(|t| t.elapsed() < CREDENTIALS_EVERY)
        {
            return Ok(());
        }
        let read = super::read_credentials(&self.env, &mysql::secret_name(&spec.service)).await;
        self.credentials_read = Some(Instant::now());
        let read = read?;
        let Some(before) = self.credentials.replace(read.clone()) else {
            return Ok(());
        };
        if before.version == read.version {
            return Ok(());
        }
        tracing::info!(version = %read.version, user = %read.user, "the credentials changed");
        if before.user != read.user {
            let grace = previous_user_seconds(spec);
            self.retiring = Some((before.user, Instant::now() + Duration::from_secs(grace)));
        }
        Ok(())
    }

    /// Locks the previous user once its grace is over and ends its connections on this node
    /// (a lock only refuses new ones; `KILL` is not replicated, so each node does it).
    async fn retire_previous_user(&mut self) {
        let Some((user, at)) = self.retiring.clone() else {
            return;
        };
        let current = self.credentials.as_ref().map(|c| c.user.as_str());
        if Some(user.as_str()) == current {
            self.retiring = None;
            return;
        }
        if Instant::now() < at {
            return;
        }
        let user = quote(&user);
        match self
            .sql(&format!(
                "ALTER USER IF EXISTS '{user}'@'%' ACCOUNT LOCK; KILL USER '{user}'"
            ))
            .await
        {
            Ok(_) => {
                tracing::info!(%user, "the previous user is locked");
                self.retiring = None;
            }
            Err(e) => tracing::warn!(%user, error = %e, "lock the previous user"),
        }
    }

    /// What to load next: the data saved at the last stop first, then the active code version.
    fn next_dump(&self, spec: &ServiceNodeSpec) -> Option<(NodeCode, bool)> {
        match (&spec.restore, self.restored) {
            (Some(saved), false) => Some((saved.clone(), true)),
            _ => spec.code.clone().map(|code| (code, false)),
        }
    }

    /// Notes that `dump` is in the database.
    fn note_loaded(&mut self, dump: NodeCode, saved: bool) {
        if saved {
            self.restored = true;
        } else {
            self.loaded = Some(dump);
        }
        self.dump_waiting = None;
    }

    /// Loads the data saved at the last stop, then the spec's SQL dump, once each for the whole
    /// cluster: the first node loads it (in a task, looked at on each poll), every node learns
    /// it is in from `conpaas-agent`.`dumps`.
    async fn converge_dump(&mut self, spec: &ServiceNodeSpec) {
        if let Some((_, _, task)) = &self.loading {
            if !task.is_finished() {
                return;
            }
            let (code, saved, task) = self.loading.take().expect("checked above");
            match task.await {
                Ok(Ok(())) => {
                    tracing::info!(version = %code.version, saved, "SQL dump loaded");
                    self.note_loaded(code, saved);
                }
                Ok(Err(DumpError::Waiting(why))) => self.dump_waiting = Some(why),
                Ok(Err(DumpError::Failed(why))) => {
                    tracing::warn!(version = %code.version, %why, "SQL dump refused");
                    self.dump_failed = Some((code, why));
                }
                Err(e) => {
                    self.dump_failed = Some((code, format!("loading the dump broke off: {e}")))
                }
            }
            return;
        }
        let Some((code, saved)) = self.next_dump(spec) else {
            return;
        };
        let failed = self.dump_failed.as_ref().is_some_and(|(c, _)| *c == code);
        if (!saved && self.loaded.as_ref() == Some(&code)) || failed {
            return;
        }
        let what = if saved {
            "the data saved at the last stop".to_string()
        } else {
            format!("the SQL dump of code version {}", code.version)
        };
        let marker = format!(
            "SELECT COUNT(*) FROM {LOADED_TABLE} WHERE sha256 = '{}'",
            quote(&code.sha256)
        );
        // No table yet is nothing loaded yet.
        let marked = self.sql(&marker).await;
        if marked.as_deref() == Ok("1") {
            tracing::info!(version = %code.version, saved, "SQL dump in the database");
            self.note_loaded(code, saved);
            return;
        }
        tracing::debug!(?marked, version = %code.version, "SQL dump not noted as loaded");
        let first = first_member(&spec.members, "mysql");
        if first.is_none_or(|m| m.name != self.env.node) {
            if self.loaded.is_some() && !saved {
                // The cluster has a database already and the first node loads the new dump
                // (it switches last in a rollout): nothing to do here.
                self.note_loaded(code, saved);
                return;
            }
            let first = first.map_or("the first node", |m| m.name.as_str());
            self.dump_waiting = Some(format!("waiting for {first} to load {what}"));
            return;
        }
        // Not while nodes join: a load racing a state transfer broke joins here.
        let members = spec.members.iter().filter(|m| m.role == "mysql").count();
        let size = self
            .sql("SHOW STATUS LIKE 'wsrep_cluster_size'")
            .await
            .ok()
            .and_then(|s| s.split_whitespace().last()?.parse::<usize>().ok());
        if size != Some(members) {
            self.dump_waiting = Some(format!(
                "waiting for the {members} mysql nodes to join before loading {what}"
            ));
            return;
        }
        let Credentials { user, password, .. } =
            self.credentials.clone().expect("read before start");
        let load = DumpLoad {
            client: self.env.client.clone(),
            namespace: self.env.namespace.clone(),
            service: spec.service.clone(),
            socket: self.socket(),
            address: format!("{}:{PORT}", self.env.address),
            user,
            password,
            database: database(spec),
            work_dir: self.env.work_dir.clone(),
            saved,
            progress: Arc::default(),
        };
        self.load_progress = load.progress.clone();
        self.dump_waiting = None;
        self.loading = Some((code.clone(), saved, tokio::spawn(load.run(code))));
    }

    /// Starts saving the database for a stop: dumped and uploaded by a task of its own (the
    /// agent keeps renewing its heartbeat meanwhile), MariaDB stopped once it is stored.
    fn start_saving(&mut self, spec: &ServiceNodeSpec) {
        if self.saving.is_some() || self.saved.is_some() || !self.save_retries.due() {
            return;
        }
        let save = SaveData {
            client: self.env.client.clone(),
            namespace: self.env.namespace.clone(),
            service: spec.service.clone(),
            socket: self.socket(),
            database: database(spec),
            work_dir: self.env.work_dir.clone(),
        };
        let (socket, me) = (self.socket(), self.member());
        // Its own for this try: a later saver's fence is not this one's to lower.
        let generation = format!(
            "{}-{}",
            self.env.node,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        tracing::info!(%generation, "the Service stops: saving the database");
        self.saving = Some(tokio::spawn(async move {
            let saved = match fence::raise(&socket, &me, &generation).await {
                Ok(()) => {
                    // Renewed for as long as the save runs, however long that is.
                    let renewing = tokio::spawn({
                        let (socket, generation) = (socket.clone(), generation.clone());
                        async move {
                            loop {
                                tokio::time::sleep(fence::RENEW_EVERY).await;
                                fence::renew(&socket, &generation).await;
                            }
                        }
                    });
                    let saved = save.run().await;
                    renewing.abort();
                    saved
                }
                Err(e) => Err(e),
            };
            if saved.is_err() {
                fence::lower(&socket, &generation).await;
            }
            saved
        }));
    }

    /// Looks at the save: stored (MariaDB then stops), or failed (the node reports it; the
    /// controller hands the save to another node).
    async fn follow_saving(&mut self) {
        if self.save_retries.waiting()
            && self.saving.is_none()
            && let Some(spec) = self.spec.clone()
        {
            self.start_saving(&spec);
        }
        if !self.saving.as_ref().is_some_and(|t| t.is_finished()) {
            return;
        }
        let task = self.saving.take().expect("checked above");
        match task.await {
            Ok(Ok(sha256)) => {
                tracing::info!(%sha256, "database saved for the stop");
                self.saved = Some(sha256);
                if let Some(mut d) = self.mariadbd.take() {
                    d.stop(STOP_GRACE).await;
                }
            }
            // The store refusing, a controller restarting: tried again after a growing wait,
            // for as long as the stop asks (the controller keeps the nodes meanwhile).
            Ok(Err(e)) => self.save_retries.failed(e),
            Err(e) => self.save_retries.failed(format!("the save broke off: {e}")),
        }
    }
    /// Reads Galera's state; a Synced node then makes its database and users, retires the
    /// previous user and loads dumps.
    async fn check(&mut self, spec: &ServiceNodeSpec) {
        self.last_check = Some(Instant::now());
        let state = self
            .sql("SHOW STATUS LIKE 'wsrep_local_state_comment'")
            .await;
        let checked = lifecycle::when_checked(state.as_deref().ok());
        self.synced = checked.serving;
        self.galera_state = state
            .as_deref()
            .ok()
            .and_then(|s| s.split('\t').nth(1))
            .unwrap_or_default()
            .to_string();
        self.joined |= self.synced;
        if self.synced {
            // The cluster runs again: what this node's data held is history.
            self.reported_position = None;
            self.bootstrapping_from_data = false;
            self.failed_recoveries = 0;
            // Noted with the data, so that no later agent deletes it to retry a join.
            if let Err(e) = datadir::mark_held(&self.dir) {
                tracing::warn!(error = %e);
            }
            let (socket, member) = (self.socket(), self.member());
            if let Err(e) = self.fence.follow(&socket, &member).await {
                tracing::warn!(error = %e, "follow the stop's write fence");
            }
        }
        if !checked.may_write {
            return;
        }
        let current = self.credentials.as_ref().map(|c| c.version.clone());
        if !self.prepared || self.accepted != current {
            match self.prepare(spec).await {
                Ok(()) => {
                    self.prepared = true;
                    self.accepted = current;
                    self.error = None;
                }
                Err(e) => self.error = Some(format!("create the database and user: {e}")),
            }
        }
        if self.prepared {
            self.retire_previous_user().await;
            self.converge_dump(spec).await;
        }
    }
}

#[async_trait::async_trait]
impl Role for Mysql {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        self.spec = Some(spec.clone());
        self.poll().await;
    }

    async fn poll(&mut self) {
        let Some(spec) = self.spec.clone() else {
            return;
        };
        let released = spec.drain.as_ref().is_some_and(|d| d.released);
        if !released && let Err(e) = self.follow_credentials(&spec).await {
            if self.credentials.is_none() {
                self.waiting = Some(e);
                return;
            }
            // The credentials known keep working; the Secret is read again later.
            tracing::warn!(error = %e, "read the credentials again");
        }
        let node = Node {
            released,
            daemon: match self.mariadbd.as_mut().map(Daemon::running) {
                None => lifecycle::Daemon::Absent,
                Some(true) => lifecycle::Daemon::Running,
                Some(false) => lifecycle::Daemon::Exited,
            },
            joined: self.joined,
            failed_joins: self.failed_joins,
            backing_off: self.join_again_at.is_some_and(|t| Instant::now() < t),
            check_due: self.last_check.is_none_or(|t| t.elapsed() >= CHECK_EVERY),
        };
        let log = || tail(&self.env.work_dir.join("logs/mariadbd.out"));
        match lifecycle::next_step(&node) {
            Step::FollowSave => self.follow_saving().await,
            Step::Idle => {}
            Step::Start => {
                if let Err(e) = self.start(&spec).await {
                    self.error = Some(e);
                }
            }
            Step::Fail => {
                let exited = self.mariadbd.as_ref().map(Daemon::exited_message);
                self.synced = false;
                self.error = Some(format!(
                    "{}; its log: {}",
                    exited.unwrap_or_default(),
                    log()
                ));
            }
            Step::GiveUpJoining { attempts } if self.bootstrapping_from_data => {
                self.error = Some(format!(
                    "starting the cluster again from this node's data (the newest of the \
                     members') failed {attempts} times; the others wait for it: {}",
                    log()
                ));
            }
            Step::GiveUpJoining { attempts } => {
                self.synced = false;
                self.error = Some(format!(
                    "joining the cluster failed {attempts} times (the state transfer broke \
                     off; the donor's reason is in its data folder's mariabackup.backup.log); \
                     the last time: {}",
                    log()
                ));
            }
            Step::JoinAgain { after } if self.bootstrapping_from_data => {
                // The cluster's newest data is here: tried again after a wait, never deleted.
                let log = log();
                self.failed_joins += 1;
                tracing::warn!(attempt = self.failed_joins, %log, "starting the cluster from this node's data failed");
                self.mariadbd = None;
                self.join_again_at = Some(Instant::now() + after);
                self.waiting = Some(format!(
                    "starting the cluster again from this node's data (the newest) failed {} \
                     times, retrying in {} s: {log}",
                    self.failed_joins,
                    after.as_secs()
                ));
            }
            Step::JoinAgain { after } => {
                // A join that failed (its state transfer broke off) starts again from nothing,
                // unless the folder held the cluster's data: that is never deleted here (the
                // next state transfer replaces it if it must).
                let log = log();
                self.failed_joins += 1;
                tracing::warn!(attempt = self.failed_joins, %log, "joining the cluster failed");
                self.mariadbd = None;
                self.synced = false;
                self.join_again_at = Some(Instant::now() + after);
                if !datadir::held_data(&self.dir) {
                    let _ = std::fs::remove_dir_all(self.dir.join("data"));
                }
                self.waiting = Some(format!(
                    "joining failed {} times, retrying in {} s: {log}",
                    self.failed_joins,
                    after.as_secs()
                ));
            }
            Step::Check => self.check(&spec).await,
        }
    }

    fn report(&self) -> RoleReport {
        let spec_code = self.spec.as_ref().and_then(|s| s.code.as_ref());
        let restore = self.spec.as_ref().and_then(|s| s.restore.as_ref());
        let dump_failed = self
            .dump_failed
            .as_ref()
            .filter(|(c, _)| Some(c) == spec_code || Some(c) == restore)
            .map(|(_, why)| why);
        // Before its data and first dump are in, the database is not what the Service asks for.
        let dump_pending =
            (spec_code.is_some() && self.loaded.is_none()) || (restore.is_some() && !self.restored);
        let (state, message) = if let Some(e) = self.error.as_ref().or(dump_failed) {
            (AgentState::Failed, e.clone())
        } else if let Some(w) = self.waiting.as_ref().filter(|_| self.mariadbd.is_none()) {
            (AgentState::Starting, w.clone())
        } else if self.synced && self.prepared && dump_pending {
            let version = spec_code.map_or("", |c| c.version.as_str());
            let what = self.dump_waiting.clone().unwrap_or_else(|| {
                let progress = match &self.loading {
                    Some(_) => self.load_progress.describe(),
                    None => String::new(),
                };
                if restore.is_some() && !self.restored {
                    format!("loading the data saved at the last stop{progress}")
                } else {
                    format!("loading the SQL dump of code version {version}{progress}")
                }
            });
            (AgentState::Starting, what)
        } else if self.saving.is_some() {
            (
                AgentState::Ready,
                "saving the database for the stop".to_string(),
            )
        } else if self.saved.is_none() && self.save_retries.waiting() {
            (AgentState::Ready, self.save_retries.message("the database"))
        } else if self.synced && self.prepared {
            (
                AgentState::Ready,
                format!("{}, serving {}:{PORT}", self.galera_state, self.env.address),
            )
        } else {
            (AgentState::Starting, "starting MariaDB".into())
        };
        RoleReport {
            state: Some(state),
            message: Some(message),
            code_version: self.loaded.as_ref().map(|c| c.version.clone()),
            // A dump MariaDB refused leaves the database as it was.
            failed_code_version: dump_failed
                .filter(|_| self.error.is_none())
                .and(spec_code)
                .map(|c| c.version.clone()),
            credentials_version: self.accepted.clone(),
            // Kept until the node is Synced: a bootstrap from its data that fails leaves it
            // told, so the others wait for it by name rather than for a report.
            recovered_position: self.reported_position.clone().filter(|_| !self.synced),
            saved: self.saved.clone(),
            save_failure: self
                .saved
                .is_none()
                .then(|| self.save_retries.last_failure())
                .flatten(),
            ..Default::default()
        }
    }

    async fn drain(&mut self) {
        let spec = self.spec.clone();
        let drain = spec.as_ref().and_then(|s| s.drain.as_ref());
        if let Some(spec) = spec
            .as_ref()
            .filter(|_| drain.is_some_and(|d| d.reason == DrainReason::ServiceStopped))
        {
            // The Service stops: the database is saved first; MariaDB stops once it is stored.
            self.start_saving(spec);
            return;
        }
        // A clean shutdown: the cluster sees the member leave.
        if let Some(mut d) = self.mariadbd.take() {
            d.stop(STOP_GRACE).await;
        }
    }

    fn drained(&self) -> bool {
        self.mariadbd.is_none() && self.saving.is_none()
    }

    async fn shutdown(&mut self) {
        if let Some(d) = self.mariadbd.as_mut() {
            d.stop(STOP_GRACE).await;
        }
    }
}

/// The last transaction the data folder holds, as `mariadbd --wsrep-recover` reads it from
/// InnoDB (it starts, recovers, prints the position and exits; what `galera_recovery` does).
async fn recover_position(config: &std::path::Path, run_as: &str) -> Result<Position, String> {
    let program = daemon::find(&["mariadbd", "mysqld"], "mariadb-server")?;
    let run = tokio::process::Command::new(&program)
        .arg(format!("--defaults-file={}", config.display()))
        .arg(format!("--user={run_as}"))
        .args(["--wsrep-recover", "--disable-log-error"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RECOVER_WITHIN, run)
        .await
        .map_err(|_| {
            format!(
                "{} --wsrep-recover did not end within {} s",
                program.display(),
                RECOVER_WITHIN.as_secs()
            )
        })?
        .map_err(|e| format!("run {} --wsrep-recover: {e}", program.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    recovery::recovered_from_log(&log).ok_or_else(|| {
        let last: Vec<&str> = log.lines().rev().take(5).collect();
        format!(
            "could not read the last transaction of the data ({}): {}",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
    })
}

/// Marks the data folder's `grastate.dat` safe to bootstrap from (after a crash Galera marks no
/// member so, and refuses to start a cluster from it otherwise).
fn mark_safe_to_bootstrap(grastate: &std::path::Path) -> Result<(), String> {
    use std::io::Write as _;
    let text = match std::fs::read_to_string(grastate) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read {}: {e}", grastate.display())),
    };
    // Written aside and renamed over it, each step on disk before the next.
    let marked = grastate.with_extension("marked");
    let written = std::fs::File::create(&marked).and_then(|mut f| {
        f.write_all(recovery::safe_to_bootstrap(&text).as_bytes())?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&marked, grastate));
    let synced = renamed.and_then(|()| match grastate.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    });
    synced.map_err(|e| {
        let _ = std::fs::remove_file(&marked);
        format!("mark {} safe to bootstrap: {e}", grastate.display())
    })
}
