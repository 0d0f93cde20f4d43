//! A new storage node at the address of a departed one takes over the departed glusterd's
//! identity. Clouds hand a freed address to the next VM (the local cloud and OpenNebula take the
//! lowest free one); the pool then knows that address as a peer that holds bricks, which
//! glusterd neither detaches nor lets be probed again, so the new node could never join. With
//! the departed peer's UUID and the pool's peers written into its state (GlusterFS' documented
//! way to replace a host by one of the same address), the new glusterd is that peer to the
//! pool: it syncs the volumes, and the manager moves the departed bricks onto the node's own
//! folder (replace-brick) and heals them.

use std::path::Path;

use super::gluster::Peer;

/// The identity to take over: the departed peer's UUID, and the other peers of its pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    pub uuid: String,
    /// `(uuid, address)` of every other peer.
    pub peers: Vec<(String, String)>,
}

/// A peer being probed is listed with this UUID until it answers.
const UNKNOWN_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// What a fresh node at `address` (its own glusterd's UUID `mine`) takes over from the pool
/// that member `member_address` is in (`pool`, as that member lists it): the peer listed at
/// this node's address, if it is another glusterd and holds bricks of another node
/// (`holds_bricks`: the pool's volumes have a brick at this address in another node's folder).
/// The pool may list that peer as connected: its glusterd reaches this address, where the new
/// glusterd answers (and refuses it). A probe of this very node in flight lists it too,
/// without a UUID yet, and holds no brick.
pub fn adoption(
    address: &str,
    mine: &str,
    member_address: &str,
    pool: &[Peer],
    holds_bricks: bool,
) -> Option<Adoption> {
    if mine.is_empty() {
        return None;
    }
    let departed = pool
        .iter()
        .find(|p| p.host == address && p.uuid != mine && p.uuid != UNKNOWN_UUID)?;
    if !holds_bricks {
        return None;
    }
    let peers = pool
        .iter()
        .filter(|p| p.uuid != departed.uuid)
        .map(|p| {
            let host = if p.host == "localhost" {
                member_address
            } else {
                &p.host
            };
            (p.uuid.clone(), host.to_string())
        })
        .collect();
    Some(Adoption {
        uuid: departed.uuid.clone(),
        peers,
    })
}

/// Writes `adoption` into a stopped glusterd's working directory.
pub fn write(state: &Path, adoption: &Adoption) -> Result<(), String> {
    let info = state.join("glusterd.info");
    let old = std::fs::read_to_string(&info).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.starts_with("UUID="))
        .map(str::to_string)
        .collect();
    lines.insert(0, format!("UUID={}", adoption.uuid));
    std::fs::write(&info, lines.join("\n") + "\n")
        .map_err(|e| format!("write {}: {e}", info.display()))?;
    let peers = state.join("peers");
    std::fs::create_dir_all(&peers).map_err(|e| format!("create {}: {e}", peers.display()))?;
    for (uuid, host) in &adoption.peers {
        let file = peers.join(uuid);
        // State 3: a peer in the cluster.
        std::fs::write(&file, format!("uuid={uuid}\nstate=3\nhostname1={host}\n"))
            .map_err(|e| format!("write {}: {e}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uuid: &str, host: &str, connected: bool) -> Peer {
        Peer {
            uuid: uuid.into(),
            host: host.into(),
            connected,
        }
    }

    #[test]
    fn the_departed_peer_at_this_address_is_taken_over_with_the_pools_other_peers() {
        let pool = [
            peer("u-old", "10.0.0.1", false),
            peer("u-three", "10.0.0.3", true),
            peer("u-two", "localhost", true),
        ];
        let taken = adoption("10.0.0.1", "u-new", "10.0.0.2", &pool, true).unwrap();
        assert_eq!(taken.uuid, "u-old");
        assert_eq!(
            taken.peers,
            vec![
                ("u-three".to_string(), "10.0.0.3".to_string()),
                ("u-two".to_string(), "10.0.0.2".to_string())
            ]
        );
        // Listed as connected (its pool reaches the new glusterd at that address): the same.
        let reached = [
            peer("u-old", "10.0.0.1", true),
            peer("u-two", "localhost", true),
        ];
        assert_eq!(
            adoption("10.0.0.1", "u-new", "10.0.0.2", &reached, true).map(|a| a.uuid),
            Some("u-old".to_string())
        );
        // Not this node itself, not one at another address, not one without bricks, and not
        // this node while a probe of it is in flight.
        let me = [
            peer("u-new", "10.0.0.1", true),
            peer("u-two", "localhost", true),
        ];
        assert_eq!(adoption("10.0.0.1", "u-new", "10.0.0.2", &me, true), None);
        assert_eq!(adoption("10.0.0.9", "u-new", "10.0.0.2", &pool, true), None);
        assert_eq!(
            adoption("10.0.0.1", "u-new", "10.0.0.2", &pool, false),
            None
        );
        let probing = [
            peer(UNKNOWN_UUID, "10.0.0.1", false),
            peer("u-two", "localhost", true),
        ];
        assert_eq!(
            adoption("10.0.0.1", "u-new", "10.0.0.2", &probing, true),
            None
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("glusterd.info"),
            "UUID=u-new\noperating-version=100000\n",
        )
        .unwrap();
        write(dir.path(), &taken).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("glusterd.info")).unwrap(),
            "UUID=u-old\noperating-version=100000\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("peers/u-three")).unwrap(),
            "uuid=u-three\nstate=3\nhostname1=10.0.0.3\n"
        );
    }
}
