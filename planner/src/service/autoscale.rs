//! Elasticity at the lowest cost (ConPaaS' SLA enforcement), decided from what was observed.
//! Pure: the measurements come from the agents' status (aggregates they publish at most every
//! few seconds), the paid hours from the credit ledger, the time from the caller.
//!
//! For each role of `spec.autoscaling`: when the target has been missed for `windowSeconds`,
//! nodes are added (one, or with `Performance` as many as the miss says), never past
//! `maxNodes` or the credits left; when the load has been low (under half the target, and
//! under 80% of it spread over one node fewer) for the window, one node goes: at once with `Balanced` and `Performance`, and with `LowestCost` only
//! the node whose paid hour is about to end, shortly before its next hour would be charged.
//! No change within `coolDownSeconds` of the last one.

use std::collections::BTreeMap;
use std::time::Duration;

use conpaas_crds::v1alpha1::{RoleAutoscaling, RoleScaling, ScalingStrategy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::model::ObservedNode;

/// What the autoscaler knows besides the nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budget {
    /// Credits left, when the namespace is metered.
    pub balance: Option<i64>,
    /// Credits the first hour of a new node costs.
    pub price: i64,
    /// When each node's paid hours end (by node name).
    pub paid_until: BTreeMap<String, Timestamp>,
    /// How long before an hour begins it is charged (the ledger's lead).
    pub lead: Duration,
    /// How long a leaving node takes to go (its drain), so that it is gone before the charge.
    pub leaving: Duration,
}

/// The decisions for every autoscaled role.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaling {
    /// The state to record, one per autoscaled role.
    pub roles: Vec<RoleScaling>,
    /// The nodes to remove first (LowestCost's choice).
    pub leaving_first: Vec<String>,
    /// Changes made now, as Event notes.
    pub changes: Vec<String>,
    /// When to look again even if nothing changes (a window, a cool-down or an hour ending).
    pub next_look: Option<Duration>,
}

impl Scaling {
    /// The count the autoscaler set for `role`, if it owns it.
    pub fn count(&self, role: &str) -> Option<i32> {
        self.roles.iter().find(|r| r.role == role).map(|r| r.count)
    }
}

/// Decides every autoscaled role's count.
pub fn decide(
    policies: &[RoleAutoscaling],
    previous: &[RoleScaling],
    nodes: &[ObservedNode],
    budget: &Budget,
    now: Timestamp,
) -> Scaling {
    let mut scaling = Scaling::default();
    let mut balance = budget.balance;
    for policy in policies {
        let prev = previous.iter().find(|r| r.role == policy.role);
        let live: Vec<&ObservedNode> = nodes
            .iter()
            .filter(|n| n.spec.role == policy.role && !n.deleting)
            .collect();
        let count = prev
            .map_or(live.len() as i32, |p| p.count)
            .clamp(policy.min_nodes, policy.max_nodes);
        let mut state = RoleScaling {
            role: policy.role.clone(),
            count,
            missed_since: None,
            low_since: None,
            last_change: prev.and_then(|p| p.last_change.clone()),
            last_decision: prev.and_then(|p| p.last_decision.clone()),
        };
        let Some((observed, what, target)) = measure(policy, nodes) else {
            scaling.roles.push(state);
            continue;
        };
        let since = |t: &Option<Time>| t.as_ref().map(|t| t.0);
        let missed = observed > target;
        // Low enough for one node less: under half the target, and under 80% of it once the
        // same load is spread over one node fewer (count / (count - 1) times as much per node),
        // so that a removal does not miss the target at once and bring the node back.
        let per_node_after = |n: i32| observed * n as i64 * 10 < target * (n as i64 - 1) * 8;
        let low = observed * 2 < target && (count <= 1 || per_node_after(count));
        let missed_since =
            missed.then(|| since(&prev.and_then(|p| p.missed_since.clone())).unwrap_or(now));
        let low_since = low.then(|| since(&prev.and_then(|p| p.low_since.clone())).unwrap_or(now));
        let window = SignedDuration::from_secs(policy.window_seconds as i64);
        let cooled_at = state
            .last_change
            .as_ref()
            .map(|t| t.0 + SignedDuration::from_secs(policy.cool_down_seconds as i64));
        let cooled = cooled_at.is_none_or(|t| t <= now);
        let mut wake = |at: Timestamp| {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            scaling.next_look = Some(scaling.next_look.map_or(wait, |n| n.min(wait)));
        };
        let role = &policy.role;
        let figures = format!("{what} {observed} (target {target})");

        // Nodes asked for that do not serve yet would be asked for again and again.
        let settling = live.len() as i32 != count || live.iter().any(|n| !n.agent_ready);
        if let Some(start) = missed_since {
            state.missed_since = Some(Time(start));
            let due = start + window;
            if due > now {
                wake(due);
            } else if settling {
                // The nodes' changes wake the loop.
            } else if !cooled {
                wake(cooled_at.unwrap_or(now));
            } else if count < policy.max_nodes {
                let wanted = match policy.strategy {
                    ScalingStrategy::Performance => {
                        ((count.max(1) as i64 * observed + target - 1) / target) as i32
                    }
                    _ => count + 1,
                }
                .clamp(count + 1, policy.max_nodes);
                let affordable = match balance {
                    Some(b) => ((b / budget.price.max(1)) as i32).max(0),
                    None => i32::MAX,
                };
                let added = (wanted - count).min(affordable);
                if added > 0 {
                    balance = balance.map(|b| b - added as i64 * budget.price.max(1));
                    state.count = count + added;
                    state.missed_since = None;
                    let note = format!(
                        "{role} {count} -> {} ({:?}): {figures} missed for {} s",
                        state.count, policy.strategy, policy.window_seconds
                    );
                    state.last_change = Some(Time(now));
                    state.last_decision = Some(note.clone());
                    scaling.changes.push(note);
                }
            }
        }
        if let Some(start) = low_since {
            state.low_since = Some(Time(start));
            let due = start + window;
            if due > now {
                wake(due);
            } else if !cooled {
                wake(cooled_at.unwrap_or(now));
            } else if count > policy.min_nodes {
                let chosen = match policy.strategy {
                    ScalingStrategy::LowestCost => match ending_hour(&live, budget, now) {
                        Ok(node) => Some(Some(node)),
                        Err(at) => {
                            if let Some(at) = at {
                                wake(at);
                            }
                            None
                        }
                    },
                    _ => Some(None),
                };
                if let Some(node) = chosen {
                    state.count = count - 1;
                    state.low_since = None;
                    let which = match &node {
                        Some(n) => format!(", {n}, whose paid hour ends"),
                        None => String::new(),
                    };
                    let note = format!(
                        "{role} {count} -> {} ({:?}{which}): {figures} low for {} s",
                        state.count, policy.strategy, policy.window_seconds
                    );
                    scaling.leaving_first.extend(node);
                    state.last_change = Some(Time(now));
                    state.last_decision = Some(note.clone());
                    scaling.changes.push(note);
                }
            }
        }
        scaling.roles.push(state);
    }
    scaling
}

/// What the role is judged by: the highest p95 of the proxies (0 when they served nothing), or
/// the average of a metric over the role's nodes (or, when they report none, over the
/// Service's nodes that do). None until anything reports.
fn measure(policy: &RoleAutoscaling, nodes: &[ObservedNode]) -> Option<(i64, String, i64)> {
    if let Some(target) = policy.target.p95_ms {
        let proxies: Vec<&BTreeMap<String, i64>> = nodes
            .iter()
            .filter(|n| n.spec.role == "proxy" && !n.deleting && n.agent_ready)
            .map(|n| &n.metrics)
            .filter(|m| m.contains_key("p95Ms"))
            .collect();
        if proxies.is_empty() {
            return None;
        }
        let p95 = proxies.iter().map(|m| m["p95Ms"]).max().unwrap_or(0);
        return Some((p95, "p95".into(), target as i64));
    }
    let metric = policy.target.metric.as_ref()?;
    let reported = |of_role: bool| -> Vec<i64> {
        nodes
            .iter()
            .filter(|n| !n.deleting && (!of_role || n.spec.role == policy.role))
            .filter_map(|n| n.metrics.get(&metric.name).copied())
            .collect()
    };
    // The role's own nodes' average; else what the Service's other nodes report, per node of
    // the role (php and java backends scale on their proxies' `requestsPerSecond`).
    let own = reported(true);
    let average = if !own.is_empty() {
        own.iter().sum::<i64>() / own.len() as i64
    } else {
        let others = reported(false);
        if others.is_empty() {
            return None;
        }
        let role_nodes = nodes
            .iter()
            .filter(|n| !n.deleting && n.spec.role == policy.role)
            .count()
            .max(1);
        others.iter().sum::<i64>() / role_nodes as i64
    };
    Some((average, metric.name.clone(), metric.value))
}

/// The node whose paid hour ends soonest, if it must start leaving now to be gone before its
/// next hour is charged; otherwise when that moment comes (None without paid hours).
fn ending_hour(
    live: &[&ObservedNode],
    budget: &Budget,
    now: Timestamp,
) -> Result<String, Option<Timestamp>> {
    let lead = SignedDuration::try_from(budget.lead).unwrap_or_default();
    let leaving = SignedDuration::try_from(budget.leaving).unwrap_or_default();
    let (name, charge_at) = live
        .iter()
        .filter_map(|n| Some((n.name.clone(), *budget.paid_until.get(&n.name)? - lead)))
        .min_by_key(|(_, at)| *at)
        .ok_or(None)?;
    let start_leaving = charge_at - leaving;
    if start_leaving <= now && now < charge_at {
        Ok(name)
    } else if now < start_leaving {
        Err(Some(start_leaving))
    } else {
        // Its next hour is being charged now: it is paid for another hour.
        Err(Some(now + SignedDuration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::AutoscalingTarget;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + s).unwrap()
    }

    fn policy(strategy: ScalingStrategy) -> RoleAutoscaling {
        RoleAutoscaling {
            role: "backend".into(),
            min_nodes: 1,
            max_nodes: 4,
            target: AutoscalingTarget {
                p95_ms: Some(100),
                metric: None,
            },
            window_seconds: 10,
            cool_down_seconds: 20,
            strategy,
        }
    }

    fn node(name: &str, role: &str, p95: Option<i64>) -> ObservedNode {
        let mut spec = crate::fixtures::node_spec(name);
        spec.role = role.into();
        ObservedNode {
            metrics: p95
                .map(|p| BTreeMap::from([("p95Ms".to_string(), p)]))
                .unwrap_or_default(),
            ..crate::fixtures::serving_node(name, spec)
        }
    }

    fn nodes(p95: i64, backends: usize) -> Vec<ObservedNode> {
        let mut all = vec![node("proxy-0", "proxy", Some(p95))];
        all.extend((0..backends).map(|i| node(&format!("backend-{i}"), "backend", None)));
        all
    }

    /// Runs the autoscaler at each time, feeding it its own state.
    fn run(
        policy: &RoleAutoscaling,
        nodes: &[ObservedNode],
        budget: &Budget,
        times: &[i64],
    ) -> Scaling {
        let mut previous = Vec::new();
        let mut last = Scaling::default();
        for t in times {
            last = decide(
                std::slice::from_ref(policy),
                &previous,
                nodes,
                budget,
                at(*t),
            );
            previous = last.roles.clone();
        }
        last
    }

    #[test]
    fn a_target_missed_for_the_window_adds_a_node_and_then_cools_down() {
        let p = policy(ScalingStrategy::LowestCost);
        let busy = nodes(230, 1);
        let early = run(&p, &busy, &Budget::default(), &[0, 5]);
        assert_eq!(early.count("backend"), Some(1), "not yet the window");
        assert_eq!(early.next_look, Some(Duration::from_secs(5)));
        let out = run(&p, &busy, &Budget::default(), &[0, 10]);
        assert_eq!(out.count("backend"), Some(2));
        assert_eq!(
            out.changes,
            vec!["backend 1 -> 2 (LowestCost): p95 230 (target 100) missed for 10 s"]
        );
        // Still missed: nothing more until the cool-down ends, then one more.
        let cooling = run(&p, &busy, &Budget::default(), &[0, 10, 25]);
        assert_eq!(cooling.count("backend"), Some(2));
        // Not while the node added does not serve yet.
        let settling = run(&p, &busy, &Budget::default(), &[0, 10, 21, 31]);
        assert_eq!(settling.count("backend"), Some(2));
        let served = decide(
            std::slice::from_ref(&p),
            &cooling.roles,
            &nodes(230, 2),
            &Budget::default(),
            at(35),
        );
        assert_eq!(
            served.count("backend"),
            Some(3),
            "missed since 25 for the window"
        );
    }

    #[test]
    fn performance_adds_what_the_miss_says_within_the_maximum_and_the_credits() {
        let p = policy(ScalingStrategy::Performance);
        let out = run(&p, &nodes(230, 1), &Budget::default(), &[0, 10]);
        assert_eq!(out.count("backend"), Some(3), "ceil(1 x 230 / 100)");
        let out = run(&p, &nodes(900, 1), &Budget::default(), &[0, 10]);
        assert_eq!(out.count("backend"), Some(4), "at most maxNodes");
        let poor = Budget {
            balance: Some(2),
            price: 2,
            ..Default::default()
        };
        let out = run(&p, &nodes(900, 1), &poor, &[0, 10]);
        assert_eq!(
            out.count("backend"),
            Some(2),
            "one more hour is all it can pay"
        );
        let broke = Budget {
            balance: Some(1),
            price: 2,
            ..Default::default()
        };
        assert_eq!(
            run(&p, &nodes(900, 1), &broke, &[0, 10]).count("backend"),
            Some(1)
        );
    }

    #[test]
    fn lowest_cost_removes_only_the_node_whose_paid_hour_ends() {
        let p = RoleAutoscaling {
            min_nodes: 1,
            ..policy(ScalingStrategy::LowestCost)
        };
        let previous = vec![RoleScaling {
            role: "backend".into(),
            count: 2,
            ..Default::default()
        }];
        let budget = Budget {
            paid_until: BTreeMap::from([
                ("backend-0".to_string(), at(100)),
                ("backend-1".to_string(), at(70)),
            ]),
            lead: Duration::from_secs(15),
            leaving: Duration::from_secs(12),
            ..Default::default()
        };
        let idle = nodes(0, 2);
        let decide_at = |t: i64, prev: &[RoleScaling]| {
            decide(std::slice::from_ref(&p), prev, &idle, &budget, at(t))
        };
        let low = decide_at(0, &previous);
        let waiting = decide_at(10, &low.roles);
        assert_eq!(waiting.count("backend"), Some(2), "no hour ends yet");
        // backend-1's next hour is charged at 70 - 15 = 55; it leaves from 55 - 12 = 43.
        assert_eq!(waiting.next_look, Some(Duration::from_secs(33)));
        let gone = decide_at(43, &waiting.roles);
        assert_eq!(gone.count("backend"), Some(1));
        assert_eq!(gone.leaving_first, vec!["backend-1".to_string()]);
        assert!(
            gone.changes[0].contains("backend-1, whose paid hour ends"),
            "{:?}",
            gone.changes
        );
        // Balanced does not wait.
        let balanced = RoleAutoscaling {
            strategy: ScalingStrategy::Balanced,
            ..p.clone()
        };
        let low = decide(
            std::slice::from_ref(&balanced),
            &previous,
            &idle,
            &budget,
            at(0),
        );
        let now = decide(
            std::slice::from_ref(&balanced),
            &low.roles,
            &idle,
            &budget,
            at(10),
        );
        assert_eq!(now.count("backend"), Some(1));
        assert!(now.leaving_first.is_empty());
    }

    #[test]
    fn a_metric_is_averaged_over_the_role_or_else_over_the_nodes_that_report_it() {
        let p = RoleAutoscaling {
            target: AutoscalingTarget {
                p95_ms: None,
                metric: Some(conpaas_crds::v1alpha1::MetricTarget {
                    name: "requestsPerSecond".into(),
                    value: 50,
                }),
            },
            ..policy(ScalingStrategy::Balanced)
        };
        let mut busy = nodes(0, 2);
        busy[0].metrics.insert("requestsPerSecond".into(), 240);
        let out = run(&p, &busy, &Budget::default(), &[0, 10]);
        assert_eq!(out.count("backend"), Some(3));
        assert!(
            out.changes[0].contains("requestsPerSecond 120 (target 50)"),
            "the proxy's 240 per backend: {:?}",
            out.changes
        );
        // The role's own reports win over the proxy's.
        busy[1].metrics.insert("requestsPerSecond".into(), 10);
        busy[2].metrics.insert("requestsPerSecond".into(), 10);
        assert_eq!(
            run(&p, &busy, &Budget::default(), &[0, 10]).count("backend"),
            Some(1)
        );
    }

    #[test]
    fn a_node_goes_only_if_the_load_fits_on_one_fewer() {
        let p = policy(ScalingStrategy::Balanced);
        let previous = |count| {
            vec![RoleScaling {
                role: "backend".into(),
                count,
                ..Default::default()
            }]
        };
        let after = |p95: i64, count: i32| {
            let state = decide(
                std::slice::from_ref(&p),
                &previous(count),
                &nodes(p95, count as usize),
                &Budget::default(),
                at(0),
            );
            decide(
                std::slice::from_ref(&p),
                &state.roles,
                &nodes(p95, count as usize),
                &Budget::default(),
                at(10),
            )
            .count("backend")
        };
        // 45 ms on 2 nodes would be 90 on one: over 80% of 100, so both stay.
        assert_eq!(after(45, 2), Some(2));
        assert_eq!(after(35, 2), Some(1), "70 on one node is fine");
        // On 4 nodes, 45 ms is 60 on 3.
        assert_eq!(after(45, 4), Some(3));
    }

    #[test]
    fn nothing_changes_without_a_measurement_or_below_the_minimum() {
        let p = policy(ScalingStrategy::Balanced);
        let silent = vec![
            node("proxy-0", "proxy", None),
            node("backend-0", "backend", None),
        ];
        let out = run(&p, &silent, &Budget::default(), &[0, 100]);
        assert_eq!(out.count("backend"), Some(1));
        assert!(out.changes.is_empty());
        let idle = run(&p, &nodes(0, 1), &Budget::default(), &[0, 100]);
        assert_eq!(idle.count("backend"), Some(1), "minNodes");
    }
}
