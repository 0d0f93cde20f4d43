//! Where a volume's bricks go, decided from the storage members and what glusterd shows. Pure.
//!
//! A volume's bricks form groups of `replicas` (or `disperse`) bricks on as many nodes, and
//! files are distributed over the groups. Groups follow the ordinals: the first nodes form the
//! first group, and nodes without a brick join in whole groups of the next ordinals, once every
//! node of the group answers. A scale-in removes the highest ordinals, so it takes whole groups;
//! a group with a brick on a node that left the members gets a new copy on a member without
//! bricks (replace-brick, then self-heal from the group's other bricks), or, with no such
//! member, has its data moved onto the other groups, then leaves. While a new copy heals, the
//! volume changes nothing else: one copy is rebuilt at a time. Bricks are never taken off a
//! member because it is unreachable for a moment: only leaving the member list moves data.

use std::collections::BTreeSet;

use conpaas_crds::v1alpha1::VolumeSpec;

use super::gluster::{Brick, VolumeInfo};

/// A storage member: its node name and address.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub address: String,
}

/// The next thing to do for a volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Vec<Brick>),
    Start,
    Add(Vec<Brick>),
    /// Put a new brick in place of a departed node's, and heal it from its group.
    Replace {
        old: Brick,
        new: Brick,
    },
    /// Move the data off these bricks (whole groups), then drop them.
    Remove(Vec<Brick>),
    /// Nothing can be done yet, and why.
    Wait(String),
}

/// The volume option that notes a replacement's heal while it runs, `OLD,NEW` (node names): the
/// departed node is still reported as holding data (it is kept) and the new one is not Ready
/// until the new brick holds a whole copy.
pub const HEALING_OPTION: &str = "user.conpaas-healing";

/// A replacement's heal in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Healing {
    pub from: String,
    pub onto: String,
}

impl Healing {
    pub fn option_value(&self) -> String {
        format!("{},{}", self.from, self.onto)
    }
}

/// The heal `volume` notes as running, if any: once the replacement it notes happened (the new
/// node holds a brick, the departed one none; a replace-brick that failed after the note, say
/// because the new peer was not fully in the pool yet, is tried again instead).
pub fn healing(volume: &VolumeInfo) -> Option<Healing> {
    let (from, onto) = volume.options.get(HEALING_OPTION)?.split_once(',')?;
    let holds = |node: &str| volume.bricks.iter().any(|b| owner(b) == node);
    (holds(onto) && !holds(from)).then(|| Healing {
        from: from.to_string(),
        onto: onto.to_string(),
    })
}

/// The next step for `volume`, given the members in ordinal order, the addresses glusterd
/// reaches, and the volume as it is (`None`: not created). `path` names a new brick's folder on
/// a node. `None` when the volume is as it should be.
pub fn next_step(
    volume: &VolumeSpec,
    members: &[Node],
    connected: &BTreeSet<String>,
    current: Option<&VolumeInfo>,
    path: &dyn Fn(&Node) -> String,
) -> Option<Step> {
    let group = volume.group_size() as usize;
    let brick = |n: &Node| Brick {
        host: n.address.clone(),
        path: path(n),
    };
    // The next whole groups of `nodes` (in ordinal order), once each of their nodes answers.
    let whole_groups = |nodes: &[&Node]| -> Result<Vec<Brick>, String> {
        let chosen = &nodes[..nodes.len() / group * group];
        match chosen.iter().find(|n| !connected.contains(&n.address)) {
            Some(n) => Err(format!(
                "volume {} waits for storage node {} to answer",
                volume.name, n.name
            )),
            None => Ok(chosen.iter().map(|n| brick(n)).collect()),
        }
    };
    let Some(current) = current else {
        if members.len() < group {
            return Some(Step::Wait(format!(
                "volume {} waits for {group} storage nodes ({} now)",
                volume.name,
                members.len()
            )));
        }
        let all: Vec<&Node> = members.iter().collect();
        return Some(match whole_groups(&all) {
            Ok(bricks) => Step::Create(bricks),
            Err(why) => Step::Wait(why),
        });
    };
    if !current.started {
        return Some(Step::Start);
    }
    // Bricks belong to nodes by their folder, not their host: a cloud may give a departed
    // node's address to a new one.
    let member_names: BTreeSet<&str> = members.iter().map(|n| n.name.as_str()).collect();
    let (leaving, staying): (Vec<&[Brick]>, Vec<&[Brick]>) = current
        .bricks
        .chunks(group)
        .partition(|g| g.iter().any(|b| !member_names.contains(owner(b))));
    let holders: BTreeSet<&str> = current.bricks.iter().map(owner).collect();
    let joining: Vec<&Node> = members
        .iter()
        .filter(|n| !holders.contains(n.name.as_str()))
        .collect();
    let step =
        replacement(volume, &leaving, &member_names, connected, &joining, &brick).or_else(|| {
            (joining.len() >= group).then(|| match whole_groups(&joining) {
                Ok(bricks) => Step::Add(bricks),
                Err(why) => Step::Wait(why),
            })
        });
    if let Some(step) = step {
        return Some(match (healing(current), step) {
            (Some(h), Step::Replace { .. } | Step::Add(_)) => Step::Wait(format!(
                "volume {}: the new copy on {} heals from its group (replacing {}'s brick); the next change waits for it",
                volume.name, h.onto, h.from
            )),
            (_, step) => step,
        });
    }
    if leaving.is_empty() {
        return None;
    }
    if staying.is_empty() {
        return Some(Step::Wait(format!(
            "volume {}: every group of {group} bricks has one on a leaving node; the data moves once {group} other storage nodes can take it",
            volume.name
        )));
    }
    if let Some(h) = healing(current) {
        return Some(Step::Wait(format!(
            "volume {}: the new copy on {} heals from its group (replacing {}'s brick); moving data waits for it",
            volume.name, h.onto, h.from
        )));
    }
    Some(Step::Remove(leaving.concat()))
}

/// A new brick for a group that lost one to a departed node, on a member without bricks that
/// answers, while the group's bricks on members answer (they are the copies it heals from). A
/// replicated group heals from any one remaining brick; a dispersed one (redundancy 1) can
/// rebuild one brick only. A volume without copies has nothing to heal from.
fn replacement(
    volume: &VolumeSpec,
    leaving: &[&[Brick]],
    members: &BTreeSet<&str>,
    connected: &BTreeSet<String>,
    joining: &[&Node],
    brick: &dyn Fn(&Node) -> Brick,
) -> Option<Step> {
    let group = volume.group_size() as usize;
    if group < 2 {
        return None;
    }
    let onto = joining.iter().find(|n| connected.contains(&n.address))?;
    leaving.iter().find_map(|bricks| {
        let (stay, gone): (Vec<&Brick>, Vec<&Brick>) =
            bricks.iter().partition(|b| members.contains(owner(b)));
        let rebuildable = if volume.disperse.is_some() {
            gone.len() == 1
        } else {
            !stay.is_empty()
        };
        (rebuildable && stay.iter().all(|b| connected.contains(&b.host))).then(|| Step::Replace {
            old: gone[0].clone(),
            new: brick(onto),
        })
    })
}

/// The node a brick belongs to: the name of the folder its own folder is in.
fn owner(brick: &Brick) -> &str {
    std::path::Path::new(&brick.path)
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or(&brick.host)
}

/// The node a brick's folder belongs to: brick folders are `<root>/<namespace>/<node>/<name>`.
pub fn node_of(path: &str, root: &str) -> Option<String> {
    let rest = path.strip_prefix(root)?.trim_start_matches('/');
    let mut parts = rest.split('/');
    let _namespace = parts.next()?;
    parts.next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                name: format!("fs-storage-{i}"),
                address: format!("10.0.0.{i}"),
            })
            .collect()
    }

    fn volume(replicas: i32) -> VolumeSpec {
        VolumeSpec {
            name: "v".into(),
            replicas,
            disperse: None,
        }
    }

    fn all(nodes: &[Node]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.address.clone()).collect()
    }

    fn path(n: &Node) -> String {
        format!("/b/{}/v", n.name)
    }

    fn info(hosts: &[usize]) -> VolumeInfo {
        VolumeInfo {
            name: "v".into(),
            started: true,
            bricks: hosts
                .iter()
                .map(|i| Brick {
                    host: format!("10.0.0.{i}"),
                    path: format!("/b/fs-storage-{i}/v"),
                })
                .collect(),
            options: Default::default(),
        }
    }

    fn hosts(bricks: &[Brick]) -> Vec<&str> {
        bricks.iter().map(|b| b.host.as_str()).collect()
    }

    #[test]
    fn a_volume_is_created_on_the_first_whole_groups_once_they_answer() {
        let three = nodes(3);
        let Some(Step::Create(bricks)) = next_step(&volume(2), &three, &all(&three), None, &path)
        else {
            panic!("expected a create");
        };
        assert_eq!(hosts(&bricks), ["10.0.0.0", "10.0.0.1"]);
        // Nodes 0 and 2 answer first: the first group waits for node 1 rather than pairing
        // node 0 with node 2, which a scale-in to 2 nodes would then break.
        let early: BTreeSet<String> = ["10.0.0.0".to_string(), "10.0.0.2".to_string()].into();
        assert!(matches!(
            next_step(&volume(2), &three, &early, None, &path),
            Some(Step::Wait(_))
        ));
    }

    #[test]
    fn new_nodes_join_in_whole_groups() {
        // 3 -> 4 nodes with replica 2: nodes 2 and 3 form the second group.
        let four = nodes(4);
        let step = next_step(&volume(2), &four, &all(&four), Some(&info(&[0, 1])), &path);
        let Some(Step::Add(bricks)) = step else {
            panic!("expected an add, got {step:?}");
        };
        assert_eq!(hosts(&bricks), ["10.0.0.2", "10.0.0.3"]);
        // Node 3 answers before node 2: the group waits for node 2.
        let early: BTreeSet<String> = ["10.0.0.0", "10.0.0.1", "10.0.0.3"]
            .map(String::from)
            .into();
        assert!(matches!(
            next_step(&volume(2), &four, &early, Some(&info(&[0, 1])), &path),
            Some(Step::Wait(_))
        ));
        // One node without a brick is not a group yet.
        let three = nodes(3);
        assert_eq!(
            next_step(
                &volume(2),
                &three,
                &all(&three),
                Some(&info(&[0, 1])),
                &path
            ),
            None
        );
    }

    #[test]
    fn a_leaving_nodes_group_moves_off_whole() {
        // 4 -> 2 with replica 2: nodes 2 and 3 left, their group goes.
        let two = nodes(2);
        let step = next_step(
            &volume(2),
            &two,
            &all(&two),
            Some(&info(&[0, 1, 2, 3])),
            &path,
        );
        let Some(Step::Remove(bricks)) = step else {
            panic!("expected a removal, got {step:?}");
        };
        assert_eq!(hosts(&bricks), ["10.0.0.2", "10.0.0.3"]);
        // 4 -> 3: node 3 left; its group mate (node 2) stays without a brick.
        let three = nodes(3);
        let step = next_step(
            &volume(2),
            &three,
            &all(&three),
            Some(&info(&[0, 1, 2, 3])),
            &path,
        );
        let Some(Step::Remove(bricks)) = step else {
            panic!("expected a removal, got {step:?}");
        };
        assert_eq!(hosts(&bricks), ["10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn an_unreachable_member_keeps_its_bricks_and_the_last_group_never_goes() {
        let three = nodes(3);
        let reachable: BTreeSet<String> = ["10.0.0.0".to_string()].into();
        assert_eq!(
            next_step(&volume(2), &three, &reachable, Some(&info(&[0, 1])), &path),
            None
        );
        // The only group holds a leaving brick, and a single node cannot take its data.
        let alone = vec![three[0].clone()];
        let step = next_step(
            &volume(2),
            &alone,
            &all(&alone),
            Some(&info(&[0, 1])),
            &path,
        );
        assert!(matches!(step, Some(Step::Wait(_))), "{step:?}");
    }

    #[test]
    fn a_departed_nodes_brick_is_replaced_on_a_brickless_member_one_heal_at_a_time() {
        // Node 1 was replaced by node 2: node 2 takes node 1's place in the group and heals
        // from node 0.
        let three = nodes(3);
        let survivors = vec![three[0].clone(), three[2].clone()];
        let before = info(&[0, 1]);
        let step = next_step(
            &volume(2),
            &survivors,
            &all(&survivors),
            Some(&before),
            &path,
        );
        let Some(Step::Replace { old, new }) = step else {
            panic!("expected a replacement, got {step:?}");
        };
        assert_eq!(
            (old.host.as_str(), new.host.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        assert_eq!(new.path, "/b/fs-storage-2/v");

        // A cloud gave node 1's address to node 2: its brick is still node 1's (by its folder).
        let mut at_old_address = three[2].clone();
        at_old_address.address = three[1].address.clone();
        let members = vec![three[0].clone(), at_old_address];
        let step = next_step(&volume(2), &members, &all(&members), Some(&before), &path);
        let Some(Step::Replace { old, new }) = step else {
            panic!("expected a replacement, got {step:?}");
        };
        assert_eq!(old.path, "/b/fs-storage-1/v");
        assert_eq!(
            (new.host.as_str(), new.path.as_str()),
            ("10.0.0.1", "/b/fs-storage-2/v")
        );

        // Not while the copy it heals from does not answer, and not for a volume without copies.
        let only_new: BTreeSet<String> = ["10.0.0.2".to_string()].into();
        assert!(matches!(
            next_step(&volume(2), &survivors, &only_new, Some(&before), &path),
            None | Some(Step::Wait(_))
        ));
        let step = next_step(
            &volume(1),
            &survivors,
            &all(&survivors),
            Some(&before),
            &path,
        );
        assert!(matches!(step, Some(Step::Add(_))), "{step:?}");

        // A replacement noted but not made (replace-brick failed) is made again.
        let mut noted = before.clone();
        noted
            .options
            .insert(HEALING_OPTION.into(), "fs-storage-1,fs-storage-2".into());
        assert_eq!(healing(&noted), None);
        let step = next_step(
            &volume(2),
            &survivors,
            &all(&survivors),
            Some(&noted),
            &path,
        );
        assert!(matches!(step, Some(Step::Replace { .. })), "{step:?}");

        // While a heal runs, the next replacement waits for it.
        let mut healing_one = info(&[0, 1, 2, 3]);
        healing_one
            .options
            .insert(HEALING_OPTION.into(), "fs-storage-9,fs-storage-0".into());
        assert!(healing(&healing_one).is_some());
        let five = nodes(5);
        let without_3 = vec![
            five[0].clone(),
            five[1].clone(),
            five[2].clone(),
            five[4].clone(),
        ];
        let step = next_step(
            &volume(2),
            &without_3,
            &all(&five),
            Some(&healing_one),
            &path,
        );
        assert!(matches!(step, Some(Step::Wait(_))), "{step:?}");
        healing_one.options.clear();
        let step = next_step(
            &volume(2),
            &without_3,
            &all(&five),
            Some(&healing_one),
            &path,
        );
        assert!(matches!(step, Some(Step::Replace { .. })), "{step:?}");
    }

    #[test]
    fn a_distributed_volume_drains_a_single_node() {
        let two = nodes(2);
        let step = next_step(&volume(1), &two, &all(&two), Some(&info(&[0, 1, 2])), &path);
        let Some(Step::Remove(bricks)) = step else {
            panic!("expected a removal, got {step:?}");
        };
        assert_eq!(hosts(&bricks), ["10.0.0.2"]);
    }

    #[test]
    fn a_bricks_node_is_read_from_its_folder() {
        assert_eq!(
            node_of(
                "/run/conpaas-gluster/ns/fs-storage-2/v-17",
                "/run/conpaas-gluster"
            ),
            Some("fs-storage-2".into())
        );
        assert_eq!(node_of("/elsewhere/x", "/run/conpaas-gluster"), None);
    }
}
