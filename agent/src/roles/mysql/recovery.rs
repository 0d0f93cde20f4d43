//! Starting a Galera cluster again after every member went down at once (a power loss, a
//! reset of all VMs): no member is marked safe to bootstrap then, and the one that starts the
//! cluster must be the one whose data holds the last transaction, or the others' newer writes are
//! replaced by a state transfer from older data. As Galera's own procedure (`galera_recovery`,
//! then `galera_new_cluster` on the most advanced node) and the Galera operators do it: each
//! member whose data was the cluster's reads its last transaction with `--wsrep-recover` and
//! reports it; every member sees the others' in its member list; the newest (the lowest ordinal
//! among equals) bootstraps from its data, the others join it. Nobody guesses: while a member
//! that may hold newer data has not reported, everyone waits and says for whom.

use std::fmt;

/// The last transaction a member's data holds, as Galera's recovery prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub uuid: String,
    pub seqno: i64,
}

/// The cluster id of a node that never held a cluster's data.
const NO_CLUSTER: &str = "00000000-0000-0000-0000-000000000000";

impl Position {
    /// A member that never held the cluster's data.
    pub fn nothing() -> Self {
        Self {
            uuid: NO_CLUSTER.into(),
            seqno: -1,
        }
    }

    /// `uuid:seqno`.
    pub fn parse(text: &str) -> Option<Self> {
        let (uuid, seqno) = text.trim().rsplit_once(':')?;
        let valid_uuid =
            uuid.len() == 36 && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        Some(Self {
            uuid: valid_uuid.then(|| uuid.to_ascii_lowercase())?,
            seqno: seqno.parse().ok().filter(|s: &i64| *s >= -1)?,
        })
    }

    /// Whether the data holds any transaction of a cluster.
    fn holds_data(&self) -> bool {
        self.seqno >= 0 && self.uuid != NO_CLUSTER
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uuid, self.seqno)
    }
}

/// The position in `mariadbd --wsrep-recover`'s log (`WSREP: Recovered position: uuid:seqno`).
pub fn recovered_from_log(log: &str) -> Option<Position> {
    log.lines()
        .rev()
        .find_map(|line| line.split_once("WSREP: Recovered position:"))
        .and_then(|(_, position)| Position::parse(position))
}

/// Another member of the role, as the member list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub name: String,
    pub ordinal: u32,
    /// The position it reported; none yet.
    pub position: Option<Position>,
    /// It held the cluster's data (it was Ready once), as the member list says.
    pub held_data: bool,
}

/// What a member whose data was the cluster's does while no member answers.
#[derive(Debug, Clone, PartialEq)]
pub enum FromData {
    /// Read its own last transaction first.
    Recover,
    /// Not yet, and why.
    Wait(String),
    /// Its data is the newest: start the cluster again from it.
    Bootstrap(Position),
}

/// How a member whose data was the cluster's (`own` once recovered; `listed`, its own position
/// as its member list shows it) goes on while no member answers.
pub fn from_data(
    own: Option<&Position>,
    listed: Option<&Position>,
    ordinal: u32,
    peers: &[Peer],
) -> FromData {
    let Some(own) = own else {
        return FromData::Recover;
    };
    // A member list from before this node's report (a controller that was away) may carry
    // positions from an earlier outage: older than the members' data now, and each node would
    // take itself for the newest. One that carries this node's report is as new as it.
    if listed != Some(own) {
        return FromData::Wait(
            "every member is down: waiting for the member list to carry this node's last \
             transaction (and with it the others' as new)"
                .into(),
        );
    }
    if let Some(silent) = peers.iter().find(|p| p.position.is_none()) {
        return FromData::Wait(format!(
            "every member is down: waiting for {} to report the last transaction its data \
             holds (the cluster starts again from the newest data)",
            silent.name
        ));
    }
    let reported = peers.iter().filter_map(|p| {
        p.position
            .as_ref()
            .map(|pos| (p.name.as_str(), p.ordinal, pos))
    });
    let holders: Vec<(&str, u32, &Position)> = std::iter::once(("this node", ordinal, own))
        .chain(reported)
        .filter(|(_, _, pos)| pos.holds_data())
        .collect();
    if let Some((a, _, one)) = holders.first()
        && let Some((b, _, other)) = holders.iter().find(|(_, _, pos)| pos.uuid != one.uuid)
    {
        return FromData::Wait(format!(
            "every member is down and their data is of different clusters ({a} holds {one}, \
             {b} {other}): none is started, to lose neither"
        ));
    }
    // The newest data; among equals the lowest ordinal, so that every member picks the same.
    let newest = holders
        .iter()
        .max_by_key(|(_, ordinal, pos)| (pos.seqno, std::cmp::Reverse(*ordinal)));
    match newest {
        Some((_, o, _)) if *o == ordinal => FromData::Bootstrap(own.clone()),
        Some((name, _, pos)) => FromData::Wait(format!(
            "every member is down: waiting for {name}, whose data is the newest (transaction \
             {}; this node's {}), to start the cluster again",
            pos.seqno, own.seqno
        )),
        // No member's data holds a transaction (a position could not be read anywhere): the
        // lowest ordinal starts, as Galera's own instructions do then.
        None if peers.iter().all(|p| p.ordinal > ordinal) => FromData::Bootstrap(own.clone()),
        None => FromData::Wait(
            "every member is down and no data holds a known transaction: waiting for the \
             lowest ordinal to start the cluster again"
                .into(),
        ),
    }
}

/// Whether a member that never held the cluster's data must leave the start to a member that
/// did: some member reports data (it would otherwise be replaced by a fresh node's empty one).
pub fn data_elsewhere(peers: &[Peer]) -> Option<&str> {
    peers
        .iter()
        .find(|p| p.position.as_ref().is_some_and(Position::holds_data))
        .map(|p| p.name.as_str())
}

/// Whether a member that never held the cluster's data must wait for one that did and has not
/// reported since every member went down (its VM still off): that one's data may be the only
/// copy, and a cluster started empty would replace it.
pub fn holder_silent(peers: &[Peer]) -> Option<&str> {
    peers
        .iter()
        .find(|p| p.held_data && p.position.is_none())
        .map(|p| p.name.as_str())
}

/// `grastate.dat` marked safe to bootstrap from (Galera refuses otherwise after a crash).
pub fn safe_to_bootstrap(grastate: &str) -> String {
    grastate
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("safe_to_bootstrap:") {
                "safe_to_bootstrap: 1".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8bd1c0e2-0000-11ef-9a7a-5e0c1a2b3c4d";

    fn at(seqno: i64) -> Position {
        Position {
            uuid: UUID.into(),
            seqno,
        }
    }

    fn peer(ordinal: u32, position: Option<Position>) -> Peer {
        Peer {
            name: format!("db-mysql-{ordinal}"),
            ordinal,
            position,
            held_data: true,
        }
    }

    #[test]
    fn the_recovered_position_is_read_from_the_log() {
        let log = format!(
            "2026-12-07 10:00:00 0 [Note] InnoDB: Starting crash recovery\n\
             2026-12-07 10:00:01 0 [Note] WSREP: Recovered position: {UUID}:1742\n"
        );
        assert_eq!(recovered_from_log(&log), Some(at(1742)));
        assert_eq!(
            recovered_from_log("[Note] WSREP: skipping position recovery"),
            None
        );
        assert_eq!(Position::parse(&at(7).to_string()), Some(at(7)));
        assert_eq!(Position::parse("nonsense:7"), None);
        assert_eq!(Position::parse(&format!("{UUID}:-2")), None);
    }

    /// `from_data` with a member list that carries `own` already.
    fn decide(own: &Position, ordinal: u32, peers: &[Peer]) -> FromData {
        from_data(Some(own), Some(own), ordinal, peers)
    }

    #[test]
    fn a_member_first_reads_its_own_position() {
        assert_eq!(from_data(None, None, 0, &[]), FromData::Recover);
    }

    #[test]
    fn a_member_list_older_than_this_nodes_report_decides_nothing() {
        // Positions of an earlier outage: this node would take itself for the newest.
        let stale = [peer(1, Some(at(3)))];
        let waits = from_data(Some(&at(10)), None, 0, &stale);
        assert!(
            matches!(&waits, FromData::Wait(why) if why.contains("member list")),
            "{waits:?}"
        );
        assert_eq!(
            from_data(Some(&at(10)), Some(&at(9)), 0, &stale),
            waits,
            "a position of its own from before"
        );
        assert_eq!(decide(&at(10), 0, &stale), FromData::Bootstrap(at(10)));
    }

    #[test]
    fn the_newest_data_starts_the_cluster_and_the_others_wait_for_it() {
        let peers = [peer(0, Some(at(10))), peer(2, Some(at(9)))];
        assert_eq!(decide(&at(12), 1, &peers), FromData::Bootstrap(at(12)));
        let from_0 = decide(&at(10), 0, &[peer(1, Some(at(12))), peer(2, Some(at(9)))]);
        assert!(
            matches!(&from_0, FromData::Wait(why) if why.contains("db-mysql-1")),
            "{from_0:?}"
        );
    }

    #[test]
    fn among_equals_the_lowest_ordinal_starts() {
        let peers = [peer(1, Some(at(10))), peer(2, Some(at(10)))];
        assert_eq!(decide(&at(10), 0, &peers), FromData::Bootstrap(at(10)));
        let from_1 = decide(&at(10), 1, &[peer(0, Some(at(10))), peer(2, Some(at(10)))]);
        assert!(matches!(from_1, FromData::Wait(_)), "{from_1:?}");
    }

    #[test]
    fn nobody_starts_while_a_member_that_may_hold_newer_data_is_silent() {
        let peers = [peer(1, Some(at(3))), peer(2, None)];
        let waits = decide(&at(10), 0, &peers);
        assert!(
            matches!(&waits, FromData::Wait(why) if why.contains("db-mysql-2")),
            "{waits:?}"
        );
    }

    #[test]
    fn a_fresh_member_never_outranks_data() {
        // Node 0 was replaced by a fresh one (its loss accepted): node 1's data starts.
        let peers = [peer(0, Some(Position::nothing())), peer(2, Some(at(4)))];
        assert_eq!(decide(&at(5), 1, &peers), FromData::Bootstrap(at(5)));
        assert_eq!(data_elsewhere(&peers), Some("db-mysql-2"));
        assert_eq!(
            data_elsewhere(&[peer(1, Some(Position::nothing())), peer(2, None)]),
            None
        );
    }

    #[test]
    fn data_of_two_clusters_starts_neither() {
        let other = Position {
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            seqno: 99,
        };
        let waits = decide(&at(10), 0, &[peer(1, Some(other))]);
        assert!(
            matches!(&waits, FromData::Wait(why) if why.contains("different clusters")),
            "{waits:?}"
        );
    }

    #[test]
    fn grastate_is_marked_safe_to_bootstrap() {
        let grastate =
            "# GALERA saved state\nversion: 2.1\nuuid:    x\nseqno:   -1\nsafe_to_bootstrap: 0\n";
        let marked = safe_to_bootstrap(grastate);
        assert!(marked.contains("safe_to_bootstrap: 1\n"), "{marked}");
        assert!(marked.contains("seqno:   -1\n"));
    }
}
