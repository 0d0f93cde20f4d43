//! The write fence of a stop, across the Galera cluster: the saving node writes a fence row
//! (with a generation of its own) into a replicated table; every member, at its next check,
//! turns itself read-only (`read_only`: the Service's user may no longer write; a transaction
//! it had open fails at its commit) and acknowledges that generation with a row of its own.
//! Galera orders each member's earlier commits before its acknowledgement, so once every
//! member's is in on the saver (read causally), the saver holds every write that was ever
//! acknowledged, and its dump is the database's last state.
//!
//! The saver renews the fence while it saves; a member drops it when it has not seen it renewed
//! for [`HOLD`] by its own clock (a saver that died, or a stop called off just after its save:
//! the nodes normally go seconds after the save). A save that fails lowers its own generation
//! only (a later saver's fence stands): the members take writes again until the next try. The
//! tables live in a schema of their own that no dump includes (a restored database must not
//! come back fenced) and that no Service's `database` setting can name (it has a `-`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::super::mysql_dump::{quote, run_sql};

const TABLES: &str = "CREATE DATABASE IF NOT EXISTS `conpaas-stop`;
     CREATE TABLE IF NOT EXISTS `conpaas-stop`.fence (id INT PRIMARY KEY, generation VARCHAR(64) NOT NULL, renewed BIGINT NOT NULL) ENGINE=InnoDB;
     CREATE TABLE IF NOT EXISTS `conpaas-stop`.fenced (member VARCHAR(255) PRIMARY KEY, generation VARCHAR(64) NOT NULL) ENGINE=InnoDB;";

/// How long the saver waits for every member to acknowledge.
const WAIT: Duration = Duration::from_secs(60);
/// How long a member keeps a fence it does not see renewed.
const HOLD: Duration = Duration::from_secs(900);
/// How often the saver renews its fence.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);

/// On the saver: raises a fence of generation `generation` and waits until every member of the
/// cluster (named by the address it serves on, `address:port`, as `wsrep_incoming_addresses`
/// lists them) acknowledged it.
pub async fn raise(socket: &Path, me: &str, generation: &str) -> Result<(), String> {
    let (me, generation) = (quote(me), quote(generation));
    run_sql(
        socket,
        &format!(
            "{TABLES}
             SET GLOBAL read_only = 1;
             DELETE FROM `conpaas-stop`.fenced;
             REPLACE INTO `conpaas-stop`.fence (id, generation, renewed) VALUES (1, '{generation}', 0);
             REPLACE INTO `conpaas-stop`.fenced (member, generation) VALUES ('{me}', '{generation}');"
        ),
    )
    .await
    .map_err(|e| format!("raise the write fence: {e}"))?;
    let deadline = Instant::now() + WAIT;
    loop {
        // Causal: the answer includes every write set the cluster ordered before it.
        let seen = run_sql(
            socket,
            &format!(
                "SET SESSION wsrep_sync_wait = 1;
                 SHOW STATUS LIKE 'wsrep_incoming_addresses';
                 SELECT member FROM `conpaas-stop`.fenced WHERE generation = '{generation}';"
            ),
        )
        .await
        .map_err(|e| format!("read the write fence: {e}"))?;
        let missing = not_fenced(&seen);
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the cluster's members {} did not turn read-only within {} s (their agents keep the fence; a member that is not Synced, or whose agent is frozen, does not); the save waits for them",
                missing.into_iter().collect::<Vec<_>>().join(", "),
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// On the saver, while it saves: the fence of `generation` is renewed.
pub async fn renew(socket: &Path, generation: &str) {
    let renewed = run_sql(
        socket,
        &format!(
            "UPDATE `conpaas-stop`.fence SET renewed = renewed + 1 WHERE generation = '{}';",
            quote(generation)
        ),
    )
    .await;
    if let Err(e) = renewed {
        tracing::warn!(error = %e, "renew the write fence");
    }
}

/// On the saver, after a save that failed: its fence (not a later saver's) is lowered, and
/// writes may go on until the next try. The saver itself stays read-only: it is leaving.
pub async fn lower(socket: &Path, generation: &str) {
    let generation = quote(generation);
    let lowered = run_sql(
        socket,
        &format!(
            "{TABLES}
             DELETE FROM `conpaas-stop`.fence WHERE generation = '{generation}';
             DELETE FROM `conpaas-stop`.fenced WHERE generation = '{generation}';"
        ),
    )
    .await;
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "lower the write fence");
    }
}

/// A member's view of the fence.
#[derive(Debug, Default)]
pub struct Follower {
    /// The fence last seen (generation and renewal count), and when it last changed by this
    /// member's clock.
    seen: Option<(String, String, Instant)>,
    /// The generation this member is read-only for and acknowledged.
    fenced: Option<String>,
}

impl Follower {
    /// At each check of a Synced member: follows the fence (read-only and acknowledged while it
    /// stands and is renewed, writable again once it is lowered or stale).
    pub async fn follow(&mut self, socket: &Path, me: &str) -> Result<(), String> {
        let exists = run_sql(
            socket,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'conpaas-stop' AND table_name = 'fence';",
        )
        .await?;
        let row = match exists.trim() {
            "1" => {
                run_sql(
                    socket,
                    "SELECT generation, renewed FROM `conpaas-stop`.fence;",
                )
                .await?
            }
            _ => String::new(),
        };
        let standing = self.standing(&row, Instant::now());
        match (standing, &self.fenced) {
            (Some(generation), fenced) if fenced.as_ref() != Some(&generation) => {
                run_sql(
                    socket,
                    &format!(
                        "SET GLOBAL read_only = 1;
                         REPLACE INTO `conpaas-stop`.fenced (member, generation) VALUES ('{}', '{}');",
                        quote(me),
                        quote(&generation)
                    ),
                )
                .await?;
                tracing::info!(%generation, "the Service stops: this member is read-only");
                self.fenced = Some(generation);
            }
            (None, Some(_)) => {
                run_sql(socket, "SET GLOBAL read_only = 0;").await?;
                tracing::info!("the stop's fence is down: this member takes writes again");
                self.fenced = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// The generation of the fence that stands, given the fence table's row (`generation\trenewed`,
    /// or nothing) seen at `now`.
    fn standing(&mut self, row: &str, now: Instant) -> Option<String> {
        let (generation, renewed) = row.trim().split_once('\t')?;
        let changed = match &self.seen {
            Some((g, r, at)) if g == generation && r == renewed => *at,
            _ => now,
        };
        self.seen = Some((generation.to_string(), renewed.to_string(), changed));
        (now.duration_since(changed) < HOLD).then(|| generation.to_string())
    }
}

/// The members that `seen` (the incoming addresses' status row, then the acknowledged members,
/// one a line) lists as in the cluster and not fenced.
fn not_fenced(seen: &str) -> BTreeSet<String> {
    let mut lines = seen.lines();
    let members: BTreeSet<String> = lines
        .next()
        .and_then(|l| l.split('\t').nth(1))
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let fenced: BTreeSet<String> = lines.map(|l| l.trim().to_string()).collect();
    members.difference(&fenced).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saver_waits_for_every_member_the_cluster_lists() {
        let seen = "wsrep_incoming_addresses\t10.0.0.1:3306,10.0.0.2:3306,10.0.0.3:3306\n10.0.0.1:3306\n10.0.0.3:3306";
        assert_eq!(
            not_fenced(seen),
            BTreeSet::from(["10.0.0.2:3306".to_string()])
        );
        let all =
            "wsrep_incoming_addresses\t10.0.0.1:3306,10.0.0.2:3306\n10.0.0.2:3306\n10.0.0.1:3306";
        assert!(not_fenced(all).is_empty());
    }

    #[test]
    fn a_fence_stands_while_renewed_and_lapses_by_the_members_own_clock() {
        let mut follower = Follower::default();
        let start = Instant::now();
        assert_eq!(follower.standing("", start), None, "no fence");
        assert_eq!(follower.standing("g1\t0", start).as_deref(), Some("g1"));
        // Renewed: stands on, however long the save takes.
        let later = start + HOLD + Duration::from_secs(1);
        assert_eq!(follower.standing("g1\t7", later).as_deref(), Some("g1"));
        // Not renewed for HOLD (a saver that died): lapses, whatever the saver's clock said.
        let stale = later + HOLD;
        assert_eq!(follower.standing("g1\t7", stale), None);
        // A new saver's fence stands at once.
        assert_eq!(follower.standing("g2\t0", stale).as_deref(), Some("g2"));
    }
}
