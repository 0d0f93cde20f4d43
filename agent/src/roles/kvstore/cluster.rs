//! What a Redis Cluster looks like (`CLUSTER NODES`, `CLUSTER INFO`) and the manager's next
//! step towards the members the spec names. Pure: tested on text.

use std::collections::BTreeSet;

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterNode {
    pub id: String,
    /// The announced IP address.
    pub address: String,
    /// The announced hostname: the node's ServiceNode name.
    pub hostname: Option<String>,
    pub myself: bool,
    pub master: bool,
    /// The master it replicates, for a replica.
    pub replica_of: Option<String>,
    /// Flagged `fail` (most masters agree it is unreachable).
    pub failed: bool,
    /// Still being introduced (`handshake`, `noaddr`): not a member yet.
    pub joining: bool,
    /// The hash slots it serves.
    pub slots: u32,
    /// A slot of it is half moved (`[slot->-id]` or `[slot-<-id]`).
    pub open_slots: bool,
}

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let (endpoint, hostname) = match fields[1].split_once(',') {
                Some((e, h)) if !h.is_empty() => (e, Some(h.to_string())),
                Some((e, _)) => (e, None),
                None => (fields[1], None),
            };
            let address = endpoint
                .split('@')
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(ip, _)| ip.to_string())
                .unwrap_or_default();
            let flags: Vec<&str> = fields[2].split(',').collect();
            let mut slots = 0;
            let mut open_slots = false;
            for range in &fields[8..] {
                if range.starts_with('[') {
                    open_slots = true;
                } else if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                        slots += b.saturating_sub(a) + 1;
                    }
                } else if range.parse::<u32>().is_ok() {
                    slots += 1;
                }
            }
            Some(ClusterNode {
                id: fields[0].to_string(),
                address,
                hostname,
                myself: flags.contains(&"myself"),
                master: flags.contains(&"master"),
                replica_of: (fields[3] != "-").then(|| fields[3].to_string()),
                failed: flags.contains(&"fail"),
                joining: flags.contains(&"handshake") || flags.contains(&"noaddr"),
                slots,
                open_slots,
            })
        })
        .collect()
}

/// `cluster_state:ok` in `CLUSTER INFO`.
pub fn state_ok(info: &str) -> bool {
    info.lines().any(|l| l.trim() == "cluster_state:ok")
}

/// What one node said when asked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    pub nodes: Vec<ClusterNode>,
    pub state_ok: bool,
    /// A replica's link to its master is up and no full copy runs (`INFO replication`); always
    /// true for a master.
    pub in_sync: bool,
}

/// Whether `INFO replication` says the node holds what its master holds: a master, or a
/// replica whose link is up with no full copy under way.
pub fn in_sync(replication: &str) -> bool {
    let field = |name: &str| {
        replication
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
    };
    field("role") == Some("master")
        || (field("master_link_status") == Some("up")
            && field("master_sync_in_progress") == Some("0"))
}

impl View {
    /// The node itself.
    pub fn myself(&self) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.myself)
    }

    /// Whether it belongs to a cluster with slots (a fresh node knows only itself, without any).
    pub fn in_cluster(&self) -> bool {
        self.nodes.iter().any(|n| n.slots > 0)
    }

    /// Whether it is a fresh node: alone, without slots.
    pub fn fresh(&self) -> bool {
        self.nodes.len() == 1 && !self.in_cluster()
    }

    /// Whether it serves: the cluster is ok, and it holds slots or replicates a master and has
    /// caught up with it (a replica still copying holds no copy yet: a move goes on only once
    /// it does).
    pub fn serving(&self) -> bool {
        self.state_ok
            && self
                .myself()
                .is_some_and(|m| m.slots > 0 || (m.replica_of.is_some() && self.in_sync))
    }
}

/// A member of the role, as the spec lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub address: String,
    /// What it said, if it answered.
    pub view: Option<View>,
}

/// The manager's next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do yet, and why.
    Wait(String),
    /// Make the cluster of these masters (addresses), spreading the slots evenly.
    Create(Vec<String>),
    /// Repair half-moved slots (`redis-cli --cluster fix`).
    Fix,
    /// Move every slot off these masters (ids) onto the others.
    Drain(Vec<String>),
    /// Take this node (id) out of the cluster: `del-node` when reachable, else every member
    /// forgets it.
    Remove { id: String, reachable: bool },
    /// Add a member (address) as a master.
    AddMaster(String),
    /// Add a member (address) as a replica of the master with this id.
    AddReplica { address: String, master_id: String },
    /// Give the masters without slots their share.
    Rebalance,
    /// Make the replica at this address its master's master (`CLUSTER FAILOVER`: the replica
    /// catches up with its master first, then takes its slots over, and the data moves nowhere).
    Failover { address: String },
    /// Make the node at this address (an empty master, or a replica of another master) a
    /// replica of the master with this id (`CLUSTER REPLICATE`).
    Replicate { address: String, master_id: String },
}

/// As many masters as the members make whole groups, and at least 3 (Redis Cluster's least):
/// members beyond whole groups are extra replicas, so a node added for a move (one over the
/// count) replicates a master instead of taking slots that would move back when an old node
/// leaves.
fn wanted_masters(members: usize, group: usize) -> usize {
    (members / group).max(3)
}

/// The next step towards a cluster of exactly `members` (in ordinal order), grouped in masters
/// with `replicas` replicas each; `seed` is the view the cluster is judged by (`None`: no member
/// belongs to a cluster yet). `None`: nothing to do.
pub fn next_step(members: &[Member], replicas: usize, seed: Option<&View>) -> Option<Step> {
    let group = replicas + 1;
    let Some(seed) = seed else {
        let silent: Vec<&str> = members
            .iter()
            .filter(|m| m.view.is_none())
            .map(|m| m.name.as_str())
            .collect();
        if !silent.is_empty() {
            return Some(Step::Wait(format!(
                "waiting for {} to answer before the cluster is made",
                silent.join(", ")
            )));
        }
        let masters: Vec<String> = members
            .iter()
            .step_by(group)
            .take(wanted_masters(members.len(), group))
            .map(|m| m.address.clone())
            .collect();
        if masters.len() < 3 {
            return Some(Step::Wait(format!(
                "{} members make {} masters; Redis Cluster needs 3",
                members.len(),
                masters.len()
            )));
        }
        return Some(Step::Create(masters));
    };
    if seed.nodes.iter().any(|n| n.open_slots) {
        return Some(Step::Fix);
    }
    let addresses: BTreeSet<&str> = members.iter().map(|m| m.address.as_str()).collect();
    let staying = |n: &ClusterNode| addresses.contains(n.address.as_str());
    let leaving: Vec<&ClusterNode> = seed
        .nodes
        .iter()
        .filter(|n| !n.joining && !staying(n))
        .collect();
    let holding: Vec<&ClusterNode> = leaving
        .iter()
        .filter(|n| n.master && n.slots > 0 && !n.failed)
        .copied()
        .collect();
    // A leaving master whose replica stays hands its slots to that replica once it has caught
    // up: the groups keep their number, and the data moves nowhere.
    let caught_up = |address: &str| {
        members
            .iter()
            .any(|m| m.address == address && m.view.as_ref().is_some_and(|v| v.in_sync))
    };
    for master in &holding {
        let replicas: Vec<&ClusterNode> = seed
            .nodes
            .iter()
            .filter(|r| !r.failed && r.replica_of.as_deref() == Some(&master.id) && staying(r))
            .collect();
        if let Some(replica) = replicas.iter().find(|r| caught_up(&r.address)) {
            return Some(Step::Failover {
                address: replica.address.clone(),
            });
        }
        if let Some(replica) = replicas.first() {
            return Some(Step::Wait(format!(
                "waiting for {} to catch up with its leaving master before it takes over",
                replica.hostname.as_deref().unwrap_or(&replica.address)
            )));
        }
    }
    if !holding.is_empty() {
        return Some(Step::Drain(holding.iter().map(|n| n.id.clone()).collect()));
    }
    if let Some(lost) = leaving.iter().find(|n| n.failed && n.slots > 0) {
        return Some(Step::Wait(format!(
            "node {} ({}) failed holding {} slots and no replica took over: its keys are unavailable until it comes back",
            lost.hostname.as_deref().unwrap_or(&lost.id),
            lost.address,
            lost.slots
        )));
    }
    // Replicas first: a master is removed once nothing replicates it.
    let removable = leaving
        .iter()
        .find(|n| n.replica_of.is_some())
        .or_else(|| leaving.first());
    if let Some(node) = removable {
        return Some(Step::Remove {
            id: node.id.clone(),
            reachable: !node.failed,
        });
    }
    let wanted = wanted_masters(members.len(), group);
    let masters: Vec<&ClusterNode> = seed
        .nodes
        .iter()
        .filter(|n| n.master && !n.failed && staying(n))
        .collect();
    let replicas_of = |id: &str| {
        seed.nodes
            .iter()
            .filter(|n| !n.failed && n.replica_of.as_deref() == Some(id))
            .count()
    };
    // The master with slots that has the fewest replicas (a master short of replicas, such as
    // one whose replica was promoted after it failed, first), but `except`.
    let fewest_replicas = |except: &str| {
        masters
            .iter()
            .filter(|m| m.slots > 0 && m.id != except)
            .min_by_key(|m| (replicas_of(&m.id), m.address.clone()))
            .map(|m| m.id.clone())
    };
    let in_seed = |address: &str| seed.nodes.iter().find(|n| n.address == address);
    for member in members {
        if in_seed(&member.address).is_some() {
            continue;
        }
        let Some(view) = &member.view else {
            return Some(Step::Wait(format!("waiting for {} to answer", member.name)));
        };
        if !view.fresh() {
            return Some(Step::Wait(format!(
                "{} belongs to another cluster: it is left alone",
                member.name
            )));
        }
        if masters.len() < wanted {
            return Some(Step::AddMaster(member.address.clone()));
        }
        return Some(match fewest_replicas("") {
            Some(master_id) => Step::AddReplica {
                address: member.address.clone(),
                master_id,
            },
            None => Step::Wait(format!("{} waits for a master with slots", member.name)),
        });
    }
    // Every member is in the cluster: the groups are put right while the cluster is ok (a
    // move or a failover can leave one master too many, or one too few).
    if seed.state_ok
        && let Some(step) = regroup(
            &masters,
            wanted,
            replicas,
            &replicas_of,
            &fewest_replicas,
            seed,
        )
    {
        return Some(step);
    }
    let empty: Vec<&Member> = members
        .iter()
        .filter(|m| in_seed(&m.address).is_some_and(|n| n.master && n.slots == 0 && !n.failed))
        .collect();
    if !empty.is_empty() {
        // Slots move onto a new master only once it sees the cluster whole (else CLUSTERDOWN
        // half-way through a slot).
        if let Some(waiting) = empty
            .iter()
            .find(|m| !m.view.as_ref().is_some_and(|v| v.state_ok))
        {
            return Some(Step::Wait(format!(
                "waiting for {} to see the cluster ok before slots move onto it",
                waiting.name
            )));
        }
        return Some(Step::Rebalance);
    }
    None
}

/// The step that brings a cluster whose members are all in it to `wanted` masters with
/// `replicas` replicas each, if one is needed.
fn regroup(
    masters: &[&ClusterNode],
    wanted: usize,
    replicas: usize,
    replicas_of: &dyn Fn(&str) -> usize,
    fewest_replicas: &dyn Fn(&str) -> Option<String>,
    seed: &View,
) -> Option<Step> {
    let replicas_list = |id: &str| -> Vec<&ClusterNode> {
        seed.nodes
            .iter()
            .filter(|n| !n.failed && n.replica_of.as_deref() == Some(id))
            .collect()
    };
    if masters.len() > wanted {
        // One master too many: the one with the fewest replicas and slots gives its slots to
        // the others (its replicas keep their copy meanwhile), then its replicas, and becomes
        // a replica itself.
        let surplus = masters
            .iter()
            .min_by_key(|m| (replicas_of(&m.id), m.slots, m.address.clone()))?;
        let target = fewest_replicas(&surplus.id)?;
        if surplus.slots > 0 {
            return Some(Step::Drain(vec![surplus.id.clone()]));
        }
        if let Some(replica) = replicas_list(&surplus.id).first() {
            return Some(Step::Replicate {
                address: replica.address.clone(),
                master_id: target,
            });
        }
        return Some(Step::Replicate {
            address: surplus.address.clone(),
            master_id: target,
        });
    }
    let crowded = masters
        .iter()
        .filter(|m| m.slots > 0)
        .max_by_key(|m| (replicas_of(&m.id), m.address.clone()))?;
    let spare = replicas_list(&crowded.id).into_iter().next();
    if masters.len() < wanted {
        // One master too few: a replica of the master with the most replicas is taken out (a
        // node taken out is emptied) and comes back as a master; never a master's only one.
        return spare
            .filter(|_| replicas_of(&crowded.id) > 1)
            .map(|r| Step::Remove {
                id: r.id.clone(),
                reachable: true,
            });
    }
    // As many masters as wanted: a master with a replica too many gives it to one short of
    // replicas.
    let short = masters
        .iter()
        .filter(|m| m.slots > 0)
        .find(|m| replicas_of(&m.id) < replicas)?;
    if replicas_of(&crowded.id) > replicas {
        return spare.map(|r| Step::Replicate {
            address: r.address.clone(),
            master_id: short.id.clone(),
        });
    }
    None
}

/// The nodes (by hostname, our node names) the cluster still counts.
pub fn node_names(view: &View) -> Vec<String> {
    let mut names: Vec<String> = view
        .nodes
        .iter()
        .filter_map(|n| n.hostname.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.9.2:6379@16379,kv-node-1 master - 0 1426238317239 2 connected 5461-10922
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.9.1:6379@16379,kv-node-0 myself,master - 0 0 1 connected 0-5460
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.9.3:6379@16379,kv-node-2 master - 0 1426238318243 3 connected 10923-16383 [10923->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.9.4:6379@16379,kv-node-3 slave 07c37dfeb235213a872192d90877d0cd55635b91 0 1426238316232 2 connected
";

    fn view(text: &str) -> View {
        View {
            nodes: parse_nodes(text),
            state_ok: true,
            in_sync: true,
        }
    }

    #[test]
    fn a_replica_is_in_sync_once_its_link_is_up_and_no_full_copy_runs() {
        assert!(in_sync(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
        ));
        let replica = |link: &str, copying: u8| {
            format!(
                "role:slave\r\nmaster_link_status:{link}\r\nmaster_sync_in_progress:{copying}\r\n"
            )
        };
        assert!(in_sync(&replica("up", 0)));
        assert!(!in_sync(&replica("down", 0)));
        assert!(!in_sync(&replica("up", 1)));
        let mut copying = view(NODES);
        copying
            .nodes
            .iter_mut()
            .for_each(|n| n.myself = n.id.starts_with("6ec2"));
        assert!(copying.serving());
        copying.in_sync = false;
        assert!(!copying.serving(), "a replica still copying does not serve");
    }

    fn line(id: &str, n: u32, flags: &str, master: &str, slots: &str) -> String {
        format!(
            "{id} 127.0.9.{}:6379@16379,kv-node-{n} {flags} {master} 0 0 1 connected {slots}\n",
            n + 1
        )
    }

    fn members(n: u32, views: &dyn Fn(u32) -> Option<View>) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                name: format!("kv-node-{i}"),
                address: format!("127.0.9.{}", i + 1),
                view: views(i),
            })
            .collect()
    }

    fn fresh(i: u32) -> Option<View> {
        Some(view(&line(&format!("f{i}"), i, "myself,master", "-", "")))
    }

    #[test]
    fn nodes_parse_with_hostnames_slots_and_open_slots() {
        let nodes = parse_nodes(NODES);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].address, "127.0.9.2");
        assert_eq!(nodes[0].hostname.as_deref(), Some("kv-node-1"));
        assert_eq!(nodes[0].slots, 5462);
        assert!(nodes[1].myself && nodes[1].master);
        assert_eq!(nodes[2].slots, 5461);
        assert!(nodes[2].open_slots && !nodes[0].open_slots);
        assert_eq!(
            nodes[3].replica_of.as_deref(),
            Some("07c37dfeb235213a872192d90877d0cd55635b91")
        );
        assert!(!nodes[3].master);
        assert!(state_ok("cluster_enabled:1\r\ncluster_state:ok\r\n"));
        assert!(!state_ok("cluster_state:fail\r\n"));
    }

    #[test]
    fn a_cluster_is_made_of_the_groups_first_nodes_once_all_answer() {
        let some = members(3, &|i| (i != 1).then(|| fresh(i)).flatten());
        assert!(
            matches!(next_step(&some, 0, None), Some(Step::Wait(w)) if w.contains("kv-node-1"))
        );
        let all = members(6, &fresh);
        assert_eq!(
            next_step(&all, 1, None),
            Some(Step::Create(vec![
                "127.0.9.1".into(),
                "127.0.9.3".into(),
                "127.0.9.5".into()
            ]))
        );
        // A last group short of replicas still has its master.
        assert!(
            matches!(next_step(&members(5, &fresh), 1, None), Some(Step::Create(m)) if m.len() == 3)
        );
        assert!(
            matches!(next_step(&members(4, &fresh), 1, None), Some(Step::Wait(w)) if w.contains("needs 3"))
        );
    }

    #[test]
    fn new_members_join_as_masters_or_replicas_then_get_slots() {
        let three = line("a", 0, "myself,master", "-", "0-5460")
            + &line("b", 1, "master", "-", "5461-10922")
            + &line("c", 2, "master", "-", "10923-16383");
        let seed = view(&three);
        let grown = members(5, &|i| if i < 3 { Some(seed.clone()) } else { fresh(i) });
        assert_eq!(
            next_step(&grown, 0, Some(&seed)),
            Some(Step::AddMaster("127.0.9.4".into()))
        );
        // With one replica per master, the second node of a group replicates its first.
        let pairs = line("a", 0, "myself,master", "-", "0-5460")
            + &line("b", 2, "master", "-", "5461-10922")
            + &line("c", 4, "master", "-", "10923-16383");
        let seed = view(&pairs);
        let six = members(6, &|i| {
            if i % 2 == 0 {
                Some(seed.clone())
            } else {
                fresh(i)
            }
        });
        assert_eq!(
            next_step(&six, 1, Some(&seed)),
            Some(Step::AddReplica {
                address: "127.0.9.2".into(),
                master_id: "a".into()
            })
        );
        // Added, without slots: they move once the new master sees the cluster ok.
        let added = three + &line("d", 3, "master", "-", "") + &line("e", 4, "master", "-", "");
        let seed = view(&added);
        let mut five = members(5, &|_| Some(seed.clone()));
        five[4].view.as_mut().unwrap().state_ok = false;
        assert!(
            matches!(next_step(&five, 0, Some(&seed)), Some(Step::Wait(w)) if w.contains("kv-node-4"))
        );
        five[4].view.as_mut().unwrap().state_ok = true;
        assert_eq!(next_step(&five, 0, Some(&seed)), Some(Step::Rebalance));
    }

    #[test]
    fn a_replacement_replicates_the_master_that_lost_its_replica() {
        // Node 0 (a master) failed, its replica node 1 took its slots, and node 0 left; node 6
        // replaced it. By ordinal, node 6 would pair with node 5 (a replica): it replicates the
        // master short of one instead.
        let failed_over = line("b", 1, "master", "-", "0-5460")
            + &line("c", 2, "master", "-", "5461-10922")
            + &line("d", 3, "slave", "c", "")
            + &line("e", 4, "master", "-", "10923-16383")
            + &line("f", 5, "slave", "e", "");
        let seed = view(&failed_over);
        let six: Vec<Member> = members(7, &|i| {
            if i == 6 { fresh(i) } else { Some(seed.clone()) }
        })
        .into_iter()
        .skip(1)
        .collect();
        assert_eq!(
            next_step(&six, 1, Some(&seed)),
            Some(Step::AddReplica {
                address: "127.0.9.7".into(),
                master_id: "b".into()
            })
        );
    }

    #[test]
    fn a_move_with_replicas_hands_slots_to_replicas_and_keeps_the_groups() {
        // Node 0 (a master) leaves a six-node cluster with one replica per master; node 6 came
        // in as a fourth master for the move.
        let before = line("a", 0, "myself,master", "-", "0-4000")
            + &line("b", 1, "slave", "a", "")
            + &line("c", 2, "master", "-", "4001-8000")
            + &line("d", 3, "slave", "c", "")
            + &line("e", 4, "master", "-", "8001-12000")
            + &line("f", 5, "slave", "e", "")
            + &line("g", 6, "master", "-", "12001-16383");
        let staying = |text: &str| {
            let seed = view(text);
            let members: Vec<Member> = members(7, &|_| Some(seed.clone()))
                .into_iter()
                .skip(1)
                .collect();
            next_step(&members, 1, Some(&seed))
        };
        // The node added for the move (one over the count) came in as a replica, not as a
        // master whose slots would move back; here it is a fourth master of an earlier cluster.
        let six = view(
            &before
                .lines()
                .take(6)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        );
        let seven = members(7, &|i| if i < 6 { Some(six.clone()) } else { fresh(i) });
        assert!(matches!(
            next_step(&seven, 1, Some(&six)),
            Some(Step::AddReplica { address, .. }) if address == "127.0.9.7"
        ));
        // Its replica stays: it takes the slots over where they are.
        assert_eq!(
            staying(&before),
            Some(Step::Failover {
                address: "127.0.9.2".into()
            })
        );
        // One still copying its master's data is waited for.
        let seed = view(&before);
        let mut copying: Vec<Member> = members(7, &|_| Some(seed.clone()))
            .into_iter()
            .skip(1)
            .collect();
        copying[0].view.as_mut().unwrap().in_sync = false;
        assert!(matches!(
            next_step(&copying, 1, Some(&seed)),
            Some(Step::Wait(w)) if w.contains("kv-node-1")
        ));
        let failed_over = before
            .replace(
                "myself,master - 0 0 1 connected 0-4000",
                "myself,slave b 0 0 1 connected",
            )
            .replace("slave a 0 0 1 connected", "master - 0 0 1 connected 0-4000");
        assert_eq!(
            staying(&failed_over),
            Some(Step::Remove {
                id: "a".into(),
                reachable: true
            })
        );
        // Four masters for six members: the one with the fewest replicas and slots gives its
        // slots up, then replicates the master without a replica.
        let removed: String = failed_over
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(staying(&removed), Some(Step::Drain(vec!["b".into()])));
        let drained = removed
            .replace(
                "master - 0 0 1 connected 0-4000",
                "master - 0 0 1 connected",
            )
            .replace("12001-16383", "0-4000 12001-16383");
        assert_eq!(
            staying(&drained),
            Some(Step::Replicate {
                address: "127.0.9.2".into(),
                master_id: "g".into()
            })
        );
        let regrouped = drained.replace(
            "b 127.0.9.2:6379@16379,kv-node-1 master - 0 0 1 connected",
            "b 127.0.9.2:6379@16379,kv-node-1 slave g 0 0 1 connected",
        );
        assert_eq!(staying(&regrouped), None);
    }

    #[test]
    fn too_few_masters_get_one_from_a_crowded_group() {
        // Two masters with two replicas each, for six members: a replica of one comes back as
        // a master.
        let crowded = line("a", 0, "myself,master", "-", "0-8000")
            + &line("b", 1, "slave", "a", "")
            + &line("c", 2, "slave", "a", "")
            + &line("d", 3, "master", "-", "8001-16383")
            + &line("e", 4, "slave", "d", "")
            + &line("f", 5, "slave", "d", "");
        let seed = view(&crowded);
        let six = members(6, &|_| Some(seed.clone()));
        assert!(matches!(
            next_step(&six, 1, Some(&seed)),
            Some(Step::Remove { reachable: true, id }) if id == "e" || id == "b"
        ));
        // Three masters, one with two replicas and one with none: one replica moves over.
        let uneven = crowded.replace(
            "c 127.0.9.3:6379@16379,kv-node-2 slave a 0 0 1 connected",
            "c 127.0.9.3:6379@16379,kv-node-2 master - 0 0 1 connected 0-100",
        );
        let seed = view(&uneven);
        let six = members(6, &|_| Some(seed.clone()));
        assert_eq!(
            next_step(&six, 1, Some(&seed)),
            Some(Step::Replicate {
                address: "127.0.9.5".into(),
                master_id: "c".into()
            })
        );
    }

    #[test]
    fn a_masters_only_replica_is_never_taken_out_for_a_missing_master() {
        // Node 4 (a master without a replica) failed and is still a member: two masters
        // serve, with one replica each.
        let lost = line("a", 0, "myself,master", "-", "0-5460")
            + &line("b", 1, "slave", "a", "")
            + &line("c", 2, "master", "-", "5461-10922")
            + &line("d", 3, "slave", "c", "")
            + &line("e", 4, "master,fail", "-", "10923-16383");
        let seed = view(&lost);
        let five = members(5, &|i| (i != 4).then(|| seed.clone()));
        assert_eq!(next_step(&five, 1, Some(&seed)), None);
    }

    #[test]
    fn leaving_masters_are_drained_before_they_are_removed() {
        let five = line("a", 0, "myself,master", "-", "0-3000")
            + &line("b", 1, "master", "-", "3001-6000")
            + &line("c", 2, "master", "-", "6001-9000")
            + &line("d", 3, "master", "-", "9001-12000")
            + &line("e", 4, "master", "-", "12001-16383");
        let seed = view(&five);
        let three = members(3, &|_| Some(seed.clone()));
        assert_eq!(
            next_step(&three, 0, Some(&seed)),
            Some(Step::Drain(vec!["d".into(), "e".into()]))
        );
        let drained = line("a", 0, "myself,master", "-", "0-8000")
            + &line("b", 1, "master", "-", "8001-12000")
            + &line("c", 2, "master", "-", "12001-16383")
            + &line("d", 3, "master", "-", "")
            + &line("e", 4, "master", "-", "");
        let seed = view(&drained);
        assert_eq!(
            next_step(&three, 0, Some(&seed)),
            Some(Step::Remove {
                id: "d".into(),
                reachable: true
            })
        );
        assert_eq!(
            node_names(&seed),
            [
                "kv-node-0",
                "kv-node-1",
                "kv-node-2",
                "kv-node-3",
                "kv-node-4"
            ]
        );
        // A half-moved slot is repaired before anything else.
        let open = drained.replace("12001-16383", "12001-16383 [12001->-d]");
        assert_eq!(next_step(&three, 0, Some(&view(&open))), Some(Step::Fix));
        // A failed master with slots is not forgotten: its keys would be gone.
        let lost = view(
            &(line("a", 0, "myself,master", "-", "0-8000")
                + &line("b", 1, "master", "-", "8001-12000")
                + &line("c", 2, "master", "-", "12001-16000")
                + &line("d", 3, "master,fail", "-", "16001-16383")),
        );
        assert!(
            matches!(next_step(&three, 0, Some(&lost)), Some(Step::Wait(w)) if w.contains("failed holding 383"))
        );
        assert_eq!(
            next_step(
                &three,
                0,
                Some(&view(
                    &(line("a", 0, "myself,master", "-", "0-8000")
                        + &line("b", 1, "master", "-", "8001-12000")
                        + &line("c", 2, "master", "-", "12001-16383"))
                ))
            ),
            None
        );
    }
}
