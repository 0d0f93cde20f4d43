//! The write fence of a stop, across the Galera cluster: the saving node writes a row into a
//! replicated table; every member, at its next check, turns itself read-only (`read_only`:
//! the Service's user may no longer write; a transaction it had open fails at its commit) and
//! acknowledges with a row of its own. Galera orders each member's earlier commits before its
//! acknowledgement, so once every member's is in on the saver (read causally), the saver holds
//! every write that was ever acknowledged, and its dump is the database's last state. A save
//! that fails lowers the fence: writes go on until the next try. A fence stands for at most
//! [`HOLD`] (the nodes normally go seconds after the save): a stop called off just after its
//! save (the Service started again while its members still ran) leaves the cluster read-only
//! no longer than that.
//!
//! The tables live in a schema of their own that no dump includes (a restored database must not
//! come back fenced) and that no Service's `database` setting can name (it has a `-`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::super::mysql_dump::{quote, run_sql};

const TABLES: &str = "CREATE DATABASE IF NOT EXISTS `conpaas-stop`;
     CREATE TABLE IF NOT EXISTS `conpaas-stop`.fence (id INT PRIMARY KEY, raised TIMESTAMP NOT NULL) ENGINE=InnoDB;
     CREATE TABLE IF NOT EXISTS `conpaas-stop`.fenced (member VARCHAR(255) PRIMARY KEY) ENGINE=InnoDB;";

/// How long the saver waits for every member to acknowledge.
const WAIT: Duration = Duration::from_secs(60);
/// How long a fence stands at most.
const HOLD: Duration = Duration::from_secs(900);

/// On the saver: raises the fence and waits until every member of the cluster (named by the
/// address it serves on, `address:port`, as `wsrep_incoming_addresses` lists them) is
/// read-only.
pub async fn raise(socket: &Path, me: &str) -> Result<(), String> {
    run_sql(
        socket,
        &format!(
            "{TABLES}
             SET GLOBAL read_only = 1;
             REPLACE INTO `conpaas-stop`.fence (id, raised) VALUES (1, NOW());
             REPLACE INTO `conpaas-stop`.fenced (member) VALUES ('{}');",
            quote(me)
        ),
    )
    .await
    .map_err(|e| format!("raise the write fence: {e}"))?;
    let deadline = Instant::now() + WAIT;
    loop {
        // Causal: the answer includes every write set the cluster ordered before it.
        let seen = run_sql(
            socket,
            "SET SESSION wsrep_sync_wait = 1;
             SHOW STATUS LIKE 'wsrep_incoming_addresses';
             SELECT member FROM `conpaas-stop`.fenced;",
        )
        .await
        .map_err(|e| format!("read the write fence: {e}"))?;
        let missing = not_fenced(&seen);
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the cluster's members {} did not turn read-only within {} s (their agents keep the fence); the save waits for them",
                missing.into_iter().collect::<Vec<_>>().join(", "),
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// On the saver, after a save that failed: writes may go on until the next try.
pub async fn lower(socket: &Path) {
    let lowered = run_sql(
        socket,
        &format!(
            "{TABLES}
             DELETE FROM `conpaas-stop`.fence;
             DELETE FROM `conpaas-stop`.fenced;
             SET GLOBAL read_only = 0;"
        ),
    )
    .await;
    if let Err(e) = lowered {
        tracing::warn!(error = %e, "lower the write fence");
    }
}

/// On every member, at each check: follows the fence (read-only and acknowledged while it
/// stands, writable again once it is lowered); whether this member is fenced now.
pub async fn follow(socket: &Path, me: &str, fenced: bool) -> Result<bool, String> {
    let raised = run_sql(
        socket,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'conpaas-stop' AND table_name = 'fence';",
    )
    .await?;
    let raised = raised.trim() == "1"
        && run_sql(
            socket,
            &format!(
                "SELECT COUNT(*) FROM `conpaas-stop`.fence WHERE raised > NOW() - INTERVAL {} SECOND;",
                HOLD.as_secs()
            ),
        )
        .await?
        .trim()
            != "0";
    match (raised, fenced) {
        (true, false) => {
            run_sql(
                socket,
                &format!(
                    "SET GLOBAL read_only = 1;
                     REPLACE INTO `conpaas-stop`.fenced (member) VALUES ('{}');",
                    quote(me)
                ),
            )
            .await?;
            tracing::info!("the Service stops: this member is read-only");
            Ok(true)
        }
        (false, true) => {
            run_sql(socket, "SET GLOBAL read_only = 0;").await?;
            tracing::info!("the stop's fence is down: this member takes writes again");
            Ok(false)
        }
        _ => Ok(fenced),
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
}
