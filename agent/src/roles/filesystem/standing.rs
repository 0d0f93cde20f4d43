//! Which storage node manages the pool. The lowest ordinal does, among the nodes inside the
//! pool: a node that took the place of the first one starts a glusterd of its own, which a
//! member must add to the existing pool (glusterd refuses a probe from outside a pool to one of
//! its members) and which must never start a pool of its own. Pure: the look gathers what each
//! node's glusterd says.

use std::collections::BTreeSet;

use super::layout::Node;

/// What a storage node does at a look.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    Manages,
    Follows,
    /// Not in the pool yet: it waits for the manager to add it (not Ready), and why.
    Waits(String),
}

/// A node whose glusterd is in a pool (it has peers or volumes): the lowest ordinal among the
/// members its pool connects, and itself, manages. A node no longer a member only follows.
pub fn in_pool(me: &str, members: &[Node], connected_peers: &BTreeSet<String>) -> Standing {
    if !members.iter().any(|m| m.name == me) {
        return Standing::Follows;
    }
    let manager = members
        .iter()
        .find(|m| m.name == me || connected_peers.contains(&m.address));
    match manager {
        Some(m) if m.name == me => Standing::Manages,
        _ => Standing::Follows,
    }
}

/// A node whose glusterd is alone (no peers, no volumes). The first member starts the pool,
/// unless another member's glusterd is in a pool already (`others`: what each said, `true` for
/// in a pool) or could not be asked; every other node waits to be added.
pub fn alone(me: &str, members: &[Node], others: &[(String, Result<bool, String>)]) -> Standing {
    let Some(first) = members.first() else {
        return Standing::Follows;
    };
    if first.name != me {
        return Standing::Waits(format!(
            "waiting for the pool's manager to add this node (the first storage node is {})",
            first.name
        ));
    }
    if let Some((name, _)) = others.iter().find(|(_, said)| matches!(said, Ok(true))) {
        return Standing::Waits(format!(
            "storage node {name} is in a pool already: this node waits to be added to it, rather than starting a pool of its own"
        ));
    }
    if let Some((name, Err(e))) = others.iter().find(|(_, said)| said.is_err()) {
        return Standing::Waits(format!(
            "cannot ask storage node {name} whether it is in a pool (a pool of its own is started only once every member says it is in none): {e}"
        ));
    }
    Standing::Manages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ordinals: &[u32]) -> Vec<Node> {
        ordinals
            .iter()
            .map(|i| Node {
                name: format!("fs-storage-{i}"),
                address: format!("10.0.0.{i}"),
            })
            .collect()
    }

    fn peers(ordinals: &[u32]) -> BTreeSet<String> {
        ordinals.iter().map(|i| format!("10.0.0.{i}")).collect()
    }

    #[test]
    fn a_new_first_node_waits_to_be_added_and_then_takes_over() {
        let members = nodes(&[0, 1, 2]);
        // The new node 0 is alone; node 1 says it is in a pool.
        let said = vec![
            ("fs-storage-1".to_string(), Ok(true)),
            ("fs-storage-2".to_string(), Ok(true)),
        ];
        assert!(matches!(
            alone("fs-storage-0", &members, &said),
            Standing::Waits(_)
        ));
        // Meanwhile node 1 manages the pool it shares with node 2, and adds node 0.
        assert_eq!(
            in_pool("fs-storage-1", &members, &peers(&[2])),
            Standing::Manages
        );
        assert_eq!(
            in_pool("fs-storage-2", &members, &peers(&[1])),
            Standing::Follows
        );
        // Once added, node 0 manages and node 1 follows.
        assert_eq!(
            in_pool("fs-storage-0", &members, &peers(&[1, 2])),
            Standing::Manages
        );
        assert_eq!(
            in_pool("fs-storage-1", &members, &peers(&[0, 2])),
            Standing::Follows
        );
    }

    #[test]
    fn a_pool_starts_at_the_first_node_once_every_member_says_it_is_in_none() {
        let members = nodes(&[0, 1]);
        let none = vec![("fs-storage-1".to_string(), Ok(false))];
        assert_eq!(alone("fs-storage-0", &members, &none), Standing::Manages);
        let unknown = vec![("fs-storage-1".to_string(), Err("timed out".to_string()))];
        assert!(matches!(
            alone("fs-storage-0", &members, &unknown),
            Standing::Waits(_)
        ));
        assert!(matches!(
            alone("fs-storage-1", &members, &none),
            Standing::Waits(_)
        ));
    }

    #[test]
    fn a_leaving_node_never_manages() {
        // Node 0 drains: it is no longer a member, though still the lowest ordinal.
        assert_eq!(
            in_pool("fs-storage-0", &nodes(&[1, 2]), &peers(&[1, 2])),
            Standing::Follows
        );
        // A member its peers cannot reach does not keep the others from managing.
        assert_eq!(
            in_pool("fs-storage-1", &nodes(&[0, 1, 2]), &peers(&[2])),
            Standing::Manages
        );
    }
}
