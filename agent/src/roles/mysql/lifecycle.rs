//! The mysql node's decisions as pure functions of what it saw at one look: whether to wait,
//! bootstrap the cluster or join it; what a MariaDB that exited means; what a running node does
//! next. `mod.rs` gathers the facts (a few connects, one SQL query) and carries the step out.

use std::time::Duration;

use super::recovery::{self, FromData, Peer, Position};

/// Looks finding no peer answering before node 0 bootstraps (about half a second each).
pub const QUIET_LOOKS: u32 = 6;
/// Looks before a first node that is not ordinal 0 bootstraps (about 30 s).
pub const QUIET_LOOKS_NOT_NODE_0: u32 = 60;
/// Failed state transfers after which the node reports Failed.
pub const MAX_FAILED_JOINS: u32 = 5;
/// The wait before joining again after a failed state transfer, times the failures so far: a
/// donor that was too busy (a load, a transfer to another joiner) gets time to settle.
pub const JOIN_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two failed reads of the data's last transaction.
pub const RECOVER_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait before reading the data's last transaction again after `failures` failed reads:
/// growing with each, up to [`RECOVER_BACKOFF_MAX`].
pub fn recover_again_after(failures: u32) -> Duration {
    (JOIN_BACKOFF * failures.max(1)).min(RECOVER_BACKOFF_MAX)
}

/// Where the node's MariaDB is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Daemon {
    /// Not started (or given up after a failed join).
    Absent,
    Running,
    Exited,
}

/// The node at one look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    /// Released from its drain: only the save for a stop is left to do.
    pub released: bool,
    pub daemon: Daemon,
    /// It was Synced once: from then on an exit is a failure, not a transfer to retry.
    pub joined: bool,
    /// State transfers that failed so far.
    pub failed_joins: u32,
    /// A failed join's wait is not over.
    pub backing_off: bool,
    /// The last look at the running daemon is older than the check period.
    pub check_due: bool,
}

/// What the node does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Follow the save for the stop (MariaDB stops once it is stored).
    FollowSave,
    /// Nothing now.
    Idle,
    /// Look at the peers and start MariaDB, or say what it waits for ([`next_start`]).
    Start,
    /// MariaDB exited after the node had joined: a failure (restarting it alone could
    /// bootstrap a second cluster if no peer answered at that moment).
    Fail,
    /// Every state transfer tried failed.
    GiveUpJoining { attempts: u32 },
    /// The state transfer broke off: start again from an empty data folder, after a wait.
    JoinAgain { after: Duration },
    /// Read Galera's state, then prepare, load dumps, retire users ([`when_checked`]).
    Check,
}

/// The next step of a node.
pub fn next_step(node: &Node) -> Step {
    if node.released {
        return Step::FollowSave;
    }
    match node.daemon {
        Daemon::Absent if node.backing_off => Step::Idle,
        Daemon::Absent => Step::Start,
        Daemon::Exited if node.joined => Step::Fail,
        Daemon::Exited if node.failed_joins >= MAX_FAILED_JOINS => Step::GiveUpJoining {
            attempts: node.failed_joins + 1,
        },
        Daemon::Exited => Step::JoinAgain {
            after: JOIN_BACKOFF * (node.failed_joins + 1),
        },
        Daemon::Running if node.check_due => Step::Check,
        Daemon::Running => Step::Idle,
    }
}

/// What a node without MariaDB saw of its peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers {
    /// The node is in the spec's member list (only then does it know who is first).
    pub listed: bool,
    /// It is the first mysql member (the lowest ordinal).
    pub first: bool,
    pub node_zero: bool,
    /// The other mysql members with an address.
    pub others: usize,
    /// Those answering on Galera's port.
    pub answering: Vec<String>,
    /// A member of a lower ordinal whose MariaDB does not serve yet.
    pub lower_not_serving: Option<String>,
    /// Earlier looks that found no peer answering.
    pub quiet_looks: u32,
    /// Its data folder held the cluster's data (it was Synced with it once).
    pub holds_data: bool,
    /// The last transaction its data holds, once read.
    pub own_position: Option<Position>,
    /// Its own position as the member list shows it.
    pub listed_position: Option<Position>,
    /// Its ordinal.
    pub ordinal: u32,
    /// The other listed mysql members, with the positions they reported.
    pub peers: Vec<Peer>,
}

/// How a node without MariaDB goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Not yet, and why.
    Wait(String),
    /// No peer answered: count the look and look again before bootstrapping.
    LookAgain,
    /// Make a new cluster.
    Bootstrap,
    /// Join the cluster of these peers (addresses) by a state transfer.
    Join(Vec<String>),
    /// Every member is down: read the last transaction this node's data holds.
    Recover,
    /// Every member is down and this node's data is the newest: start the cluster again from
    /// it.
    BootstrapFromData(Position),
}

/// Whether and how a node without MariaDB starts it.
pub fn next_start(p: &Peers) -> Start {
    if !p.listed {
        return Start::Wait("waiting for the member list".into());
    }
    let bootstrap = p.answering.is_empty();
    if bootstrap && p.holds_data {
        return match recovery::from_data(
            p.own_position.as_ref(),
            p.listed_position.as_ref(),
            p.ordinal,
            &p.peers,
        ) {
            FromData::Recover => Start::Recover,
            FromData::Wait(why) => Start::Wait(why),
            FromData::Bootstrap(position) => Start::BootstrapFromData(position),
        };
    }
    // A node without the cluster's data never starts a cluster while a member reports some:
    // the members would then take its empty data.
    if bootstrap && let Some(holder) = recovery::data_elsewhere(&p.peers) {
        return Start::Wait(format!(
            "every member is down and {holder} holds the cluster's data: waiting for the member \
             with the newest data to start the cluster again"
        ));
    }
    // Nor while a member that held it is silent (its VM still off after a power loss): a
    // node given up with `--accept-data-loss` and made again starts empty, and the members
    // with data that come back later would join its empty cluster and lose theirs.
    if bootstrap && let Some(holder) = recovery::holder_silent(&p.peers) {
        return Start::Wait(format!(
            "every member is down and {holder} held the cluster's data: waiting for it to come \
             back and report what its data holds"
        ));
    }
    if bootstrap && !p.first {
        return Start::Wait("waiting for the first node to bootstrap the cluster".into());
    }
    // The first member bootstraps; one that is not ordinal 0 waits much longer first: in a
    // fresh cluster node 0 may get its address (and join the member list) after node 1, which
    // then took itself for the first and bootstrapped a second cluster (seen when three nodes
    // started at once), while a cluster whose node 0 was replaced under a new ordinal has no
    // node 0 at all. A peer only slow to answer must not make this node start a second cluster.
    let looks = if p.node_zero {
        QUIET_LOOKS
    } else {
        QUIET_LOOKS_NOT_NODE_0
    };
    if bootstrap && (p.others > 0 || !p.node_zero) && p.quiet_looks + 1 < looks {
        return Start::LookAgain;
    }
    // One state transfer at a time: every lower ordinal serves before this one joins.
    if let Some(lower) = &p.lower_not_serving {
        return Start::Wait(format!("waiting for {lower} to join first"));
    }
    if bootstrap {
        Start::Bootstrap
    } else {
        Start::Join(p.answering.clone())
    }
}

/// Galera's state as a running node reads it, and what it may do in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    /// Serving reads and writes: Synced, or donating a state transfer (mariabackup does not
    /// stop writes, and were a donor not Ready the glb would drop the only node it has while
    /// the second one joins).
    pub serving: bool,
    /// Synced: the node's own writes (users, dumps) may go ahead. They wait while it donates
    /// a state transfer: a load racing a transfer broke joins.
    pub may_write: bool,
}

/// Reads `SHOW STATUS LIKE 'wsrep_local_state_comment'`'s answer (`None`: no answer).
pub fn when_checked(state: Option<&str>) -> Checked {
    let state = state.and_then(|s| s.split('\t').nth(1)).unwrap_or_default();
    Checked {
        serving: matches!(state, "Synced" | "Donor/Desynced"),
        may_write: state == "Synced",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_read_of_the_last_transaction_is_tried_ever_more_slowly() {
        let waits: Vec<u64> = [1, 2, 3, 100]
            .map(|n| recover_again_after(n).as_secs())
            .into();
        assert_eq!(waits, vec![5, 10, 15, 300]);
    }

    fn node(daemon: Daemon) -> Node {
        Node {
            released: false,
            daemon,
            joined: false,
            failed_joins: 0,
            backing_off: false,
            check_due: true,
        }
    }

    #[test]
    fn a_released_node_only_follows_its_save() {
        for daemon in [Daemon::Absent, Daemon::Running, Daemon::Exited] {
            let n = Node {
                released: true,
                ..node(daemon)
            };
            assert_eq!(next_step(&n), Step::FollowSave);
        }
    }

    #[test]
    fn a_node_that_joined_is_never_restarted_by_itself() {
        let n = Node {
            joined: true,
            ..node(Daemon::Exited)
        };
        assert_eq!(next_step(&n), Step::Fail);
    }

    #[test]
    fn a_broken_state_transfer_is_tried_again_later_each_time_then_given_up() {
        let mut waits = Vec::new();
        let mut n = node(Daemon::Exited);
        loop {
            match next_step(&n) {
                Step::JoinAgain { after } => waits.push(after.as_secs()),
                Step::GiveUpJoining { attempts } => {
                    assert_eq!(attempts, MAX_FAILED_JOINS + 1);
                    break;
                }
                other => panic!("{other:?}"),
            }
            n.failed_joins += 1;
        }
        assert_eq!(waits, [5, 10, 15, 20, 25]);
        let waiting = Node {
            backing_off: true,
            ..node(Daemon::Absent)
        };
        assert_eq!(next_step(&waiting), Step::Idle);
        assert_eq!(next_step(&node(Daemon::Absent)), Step::Start);
    }

    #[test]
    fn a_running_node_is_looked_at_once_per_period() {
        assert_eq!(next_step(&node(Daemon::Running)), Step::Check);
        let early = Node {
            check_due: false,
            ..node(Daemon::Running)
        };
        assert_eq!(next_step(&early), Step::Idle);
    }

    fn peers(first: bool, node_zero: bool, others: usize, answering: &[&str]) -> Peers {
        Peers {
            listed: true,
            first,
            node_zero,
            others,
            answering: answering.iter().map(|a| a.to_string()).collect(),
            lower_not_serving: None,
            quiet_looks: 0,
            holds_data: false,
            own_position: None,
            listed_position: None,
            ordinal: if node_zero { 0 } else { 1 },
            peers: Vec::new(),
        }
    }

    /// Looks until the node does something other than look again; the looks it took.
    fn settle(mut p: Peers) -> (Start, u32) {
        loop {
            match next_start(&p) {
                Start::LookAgain => p.quiet_looks += 1,
                other => return (other, p.quiet_looks),
            }
        }
    }

    #[test]
    fn only_a_listed_node_decides() {
        let p = Peers {
            listed: false,
            ..peers(true, true, 0, &[])
        };
        assert_eq!(
            next_start(&p),
            Start::Wait("waiting for the member list".into())
        );
    }

    #[test]
    fn a_lone_node_zero_bootstraps_at_once() {
        assert_eq!(settle(peers(true, true, 0, &[])), (Start::Bootstrap, 0));
    }

    #[test]
    fn a_first_node_with_silent_peers_looks_a_while_before_bootstrapping() {
        assert_eq!(
            settle(peers(true, true, 2, &[])),
            (Start::Bootstrap, QUIET_LOOKS - 1)
        );
        // A first node that is not node 0 (node 0 was replaced, or has no address yet)
        // waits much longer: node 0 may still come.
        assert_eq!(
            settle(peers(true, false, 0, &[])),
            (Start::Bootstrap, QUIET_LOOKS_NOT_NODE_0 - 1)
        );
    }

    #[test]
    fn a_node_that_is_not_first_never_bootstraps() {
        assert_eq!(
            settle(peers(false, false, 1, &[])),
            (
                Start::Wait("waiting for the first node to bootstrap the cluster".into()),
                0
            )
        );
    }

    #[test]
    fn a_node_joins_the_peers_that_answer_once_every_lower_ordinal_serves() {
        let mut p = peers(false, false, 2, &["127.0.0.2"]);
        p.lower_not_serving = Some("db-mysql-1".into());
        assert_eq!(
            next_start(&p),
            Start::Wait("waiting for db-mysql-1 to join first".into())
        );
        p.lower_not_serving = None;
        assert_eq!(next_start(&p), Start::Join(vec!["127.0.0.2".into()]));
    }

    #[test]
    fn a_node_holding_data_never_bootstraps_a_fresh_cluster_when_every_member_is_down() {
        let mut p = Peers {
            holds_data: true,
            ..peers(true, true, 1, &[])
        };
        assert_eq!(next_start(&p), Start::Recover);
        let at = |seqno| Position {
            uuid: "8bd1c0e2-0000-11ef-9a7a-5e0c1a2b3c4d".into(),
            seqno,
        };
        p.own_position = Some(at(4));
        p.listed_position = Some(at(4));
        p.peers = vec![Peer {
            name: "db-mysql-1".into(),
            ordinal: 1,
            position: Some(at(7)),
            held_data: true,
        }];
        assert!(matches!(next_start(&p), Start::Wait(_)));
        p.peers[0].position = Some(at(3));
        assert_eq!(next_start(&p), Start::BootstrapFromData(at(4)));
        // Once a member answers, it joins as any node does.
        p.answering = vec!["127.0.0.2".into()];
        assert_eq!(next_start(&p), Start::Join(vec!["127.0.0.2".into()]));
    }

    #[test]
    fn a_fresh_first_node_leaves_the_start_to_a_member_with_data() {
        let mut p = peers(true, true, 1, &[]);
        p.peers = vec![Peer {
            name: "db-mysql-1".into(),
            ordinal: 1,
            position: Some(Position {
                uuid: "8bd1c0e2-0000-11ef-9a7a-5e0c1a2b3c4d".into(),
                seqno: 12,
            }),
            held_data: true,
        }];
        assert!(matches!(settle(p), (Start::Wait(why), 0) if why.contains("db-mysql-1")));
    }

    #[test]
    fn a_fresh_first_node_waits_for_a_silent_member_that_held_the_data() {
        let mut p = peers(true, true, 2, &[]);
        let member = |ordinal: u32, held_data| Peer {
            name: format!("db-mysql-{ordinal}"),
            ordinal,
            position: None,
            held_data,
        };
        // Node 0 was given up and made again; nodes 1 and 2 held the data and are still off.
        p.peers = vec![member(1, true), member(2, false)];
        assert!(matches!(settle(p.clone()), (Start::Wait(why), 0) if why.contains("db-mysql-1")));
        // Node 1 is back and reports that its data is gone: nobody has data to wait for.
        p.peers[0].position = Some(Position::nothing());
        assert_eq!(settle(p.clone()).0, Start::Bootstrap);
        // A new cluster's members held nothing: the first starts it.
        p.peers = vec![member(1, false), member(2, false)];
        assert_eq!(settle(p).0, Start::Bootstrap);
    }

    #[test]
    fn a_donor_serves_but_writes_nothing_of_its_own() {
        let donor = when_checked(Some("wsrep_local_state_comment\tDonor/Desynced"));
        assert_eq!(
            donor,
            Checked {
                serving: true,
                may_write: false
            }
        );
        let synced = when_checked(Some("wsrep_local_state_comment\tSynced"));
        assert!(synced.serving && synced.may_write);
        for other in [Some("wsrep_local_state_comment\tJoiner"), None] {
            let c = when_checked(other);
            assert!(!c.serving && !c.may_write);
        }
    }
}
