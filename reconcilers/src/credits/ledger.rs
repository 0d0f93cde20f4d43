//! The credit ledger, computed from the account and its namespace's nodes. Pure and idempotent:
//! every figure is derived from the nodes' creation and deletion times and the clock, never
//! incremented, so running it twice (a controller killed after a write, two leaders for a
//! moment) charges nothing twice.
//!
//! - A node's first hour is paid when it is admitted, before its VM may be created.
//! - Each next hour is paid `lead` before it begins; when it cannot be, the account is
//!   exhausted, so every Service of the namespace stops before that hour begins.
//! - A deleted node's charge is closed once its VM is gone (a node without a VM at its
//!   deletion), with the hours started between its creation and then:
//!   `max(1, ceil((end - created) / hour))`, paid ahead or not. Until its VM is confirmed gone
//!   (a termination the cloud keeps refusing, a drain) the node is charged as a live one. Its
//!   finalizer waits for the close, so no deletion is missed across restarts.

use std::time::Duration;

use conpaas_crds::v1alpha1::{
    Charge, CreditAccountSpec, CreditAccountStatus, Exhaustion, ServiceCredits, charge_lead,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::conditions::{Desired as Cond, merge};

/// How many closed charges the ledger lists; older ones are folded into `settled`.
pub const CLOSED_LISTED: usize = 100;
/// The condition that says the credits ran out.
pub const EXHAUSTED: &str = "Exhausted";

/// A node as the ledger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MeteredNode {
    pub uid: String,
    pub name: String,
    pub service: String,
    /// Credits per VM-hour.
    pub price: i64,
    pub created: Timestamp,
    /// Its deletion was asked at this time.
    pub deleted: Option<Timestamp>,
    /// A Service of the namespace owns it: only such a node is admitted (charged a first hour).
    pub owned: bool,
    /// Its VM exists or is being created (a provider ID or a journaled create).
    pub has_vm: bool,
    /// When its VMs were confirmed gone after its deletion.
    pub vm_gone: Option<Timestamp>,
}

impl MeteredNode {
    /// When its charge ends: once deleted, at its deletion if it never had a VM, else when its
    /// VMs were confirmed gone; `None` while it is charged on.
    fn ends(&self) -> Option<Timestamp> {
        let deleted = self.deleted?;
        match (self.has_vm, self.vm_gone) {
            (false, _) => Some(deleted),
            (true, gone) => gone.map(|gone| gone.max(deleted)),
        }
    }
}

/// The length of the credit hour, and how long before an hour begins it is paid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    pub now: Timestamp,
    pub hour: Duration,
}

impl Clock {
    /// How long before an hour begins it is paid ([`charge_lead`]).
    pub fn lead(&self) -> Duration {
        charge_lead(self.hour)
    }
}

/// What the ledger decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub status: CreditAccountStatus,
    /// The account ran out on this pass (publish it).
    pub newly_exhausted: bool,
    /// The balance fell to 10% of the grant on this pass (warn once per grant).
    pub low: bool,
    /// When the next hour of a running node is due to be paid.
    pub next_due: Option<Duration>,
}

/// Hours begun by `at` for a charge starting at `start`: the first at `start`, one more at each
/// hour boundary.
pub fn hours_begun(start: Timestamp, at: Timestamp, hour: Duration) -> i64 {
    let elapsed = at.duration_since(start);
    if elapsed.is_negative() {
        return 1;
    }
    let hour_ms = hour.as_millis().max(1) as i64;
    elapsed.as_millis() as i64 / hour_ms + 1
}

/// Hours a node deleted at `end` started: every hour that began before its deletion, at least
/// the one paid at admission.
pub fn hours_started(start: Timestamp, end: Timestamp, hour: Duration) -> i64 {
    let elapsed = end.duration_since(start).as_millis().max(0) as i64;
    let hour_ms = hour.as_millis().max(1) as i64;
    ((elapsed + hour_ms - 1) / hour_ms).max(1)
}

/// Computes the account's status from its nodes.
pub fn settle(
    spec: &CreditAccountSpec,
    generation: Option<i64>,
    account_created: Timestamp,
    previous: &CreditAccountStatus,
    nodes: &[MeteredNode],
    clock: Clock,
) -> Settlement {
    let now = clock.now;
    let mut ledger = previous.ledger.clone();
    let mut settled = previous.settled.clone();

    // Close the charges of deleted nodes (a node that never had a VM costs nothing); a node
    // gone without its charge closed (its finalizer removed by hand) keeps the hours it paid.
    for charge in ledger.iter_mut().filter(|c| c.end.is_none()) {
        match nodes.iter().find(|n| n.uid == charge.uid) {
            Some(node) => {
                charge.vm |= node.has_vm;
                if let Some(end) = node.ends() {
                    charge.hours = match charge.vm {
                        true => hours_started(charge.start.0, end, clock.hour),
                        false => 0,
                    };
                    charge.end = Some(Time(end));
                }
            }
            None => {
                if !charge.vm {
                    charge.hours = 0;
                }
                charge.end = Some(Time(now));
            }
        }
    }
    let spent = |ledger: &[Charge], settled: &[ServiceCredits]| -> i64 {
        ledger.iter().map(Charge::credits).sum::<i64>()
            + settled.iter().map(|s| s.credits).sum::<i64>()
    };
    let mut balance = spec.grant - spent(&ledger, &settled);

    let mut exhausted = previous.exhausted.clone().filter(|e| spec.grant <= e.grant);
    let mut newly_exhausted = false;
    let mut why = None;
    let mut live: Vec<&MeteredNode> = nodes.iter().filter(|n| n.ends().is_none()).collect();
    live.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let paid_until = Timestamp::checked_add(
        now,
        SignedDuration::try_from(clock.lead()).unwrap_or_default(),
    )
    .unwrap_or(now);
    for node in live {
        // A node is charged once: never a second charge after its first was closed (a cache
        // that showed it gone for a moment), and only a Service's node is admitted.
        let closed = ledger.iter().any(|c| c.uid == node.uid && c.end.is_some());
        let open = ledger
            .iter_mut()
            .find(|c| c.uid == node.uid && c.end.is_none());
        if open.is_none() && (closed || !node.owned) {
            continue;
        }
        let (due, owed) = match &open {
            Some(charge) => {
                let due = hours_begun(charge.start.0, paid_until, clock.hour);
                (due, (due - charge.hours).max(0) * charge.price)
            }
            None => {
                let start = node.created.max(account_created);
                (hours_begun(start, paid_until, clock.hour), 0)
            }
        };
        let owed = if open.is_none() {
            due * node.price
        } else {
            owed
        };
        if owed == 0 {
            continue;
        }
        if exhausted.is_some() || owed > balance {
            if exhausted.is_none() {
                exhausted = Some(Exhaustion {
                    since: Time(now),
                    grant: spec.grant,
                });
                newly_exhausted = true;
                why = Some(format!(
                    "a balance of {balance} credits cannot pay the next hour of node {} ({owed} credits)",
                    node.name
                ));
            }
            continue;
        }
        balance -= owed;
        match open {
            Some(charge) => charge.hours = due,
            None => ledger.push(Charge {
                uid: node.uid.clone(),
                node: node.name.clone(),
                service: node.service.clone(),
                price: node.price,
                start: Time(node.created.max(account_created)),
                hours: due,
                end: None,
                vm: node.has_vm,
            }),
        }
    }

    fold_closed(&mut ledger, &mut settled);
    let used = spent(&ledger, &settled);
    let balance = spec.grant - used;
    let burn_rate = ledger
        .iter()
        .filter(|c| c.end.is_none())
        .map(|c| c.price)
        .sum();
    let next_due = ledger
        .iter()
        .filter(|c| c.end.is_none())
        .filter_map(|c| {
            let hour = SignedDuration::try_from(clock.hour).ok()?;
            let lead = SignedDuration::try_from(clock.lead()).ok()?;
            let due = c
                .start
                .0
                .checked_add(hour * c.hours as i32)
                .ok()?
                .checked_sub(lead)
                .ok()?;
            // An hour that could not be paid is not looked at again and again: the nodes'
            // changes and a new grant wake the loop.
            Duration::try_from(due.duration_since(now))
                .ok()
                .filter(|d| !d.is_zero())
        })
        .min();
    let low = spec.grant > 0
        && balance * 10 <= spec.grant
        && previous.warned_at_grant != Some(spec.grant);
    let condition = match &exhausted {
        Some(e) => Cond::new(
            EXHAUSTED,
            true,
            "CreditsExhausted",
            why.unwrap_or_else(|| {
                format!(
                    "the credits ran out at a grant of {}: every Service of the namespace is stopped until spec.grant is raised",
                    e.grant
                )
            }),
        ),
        None => Cond::new(
            EXHAUSTED,
            false,
            "CreditsAvailable",
            format!("{balance} of {} credits left", spec.grant),
        ),
    };
    let now_time = Time(now);
    let conditions = merge(&previous.conditions, vec![condition], generation, &now_time);
    Settlement {
        status: CreditAccountStatus {
            used,
            balance,
            burn_rate,
            exhausted,
            warned_at_grant: if low {
                Some(spec.grant)
            } else {
                previous.warned_at_grant
            },
            ledger,
            settled,
            observed_generation: generation,
            conditions,
        },
        newly_exhausted,
        low,
        next_due,
    }
}

/// Keeps the newest [`CLOSED_LISTED`] closed charges listed and adds the older ones' credits to
/// their Service's settled total.
fn fold_closed(ledger: &mut Vec<Charge>, settled: &mut Vec<ServiceCredits>) {
    let mut closed: Vec<(Timestamp, String)> = ledger
        .iter()
        .filter_map(|c| Some((c.end.as_ref()?.0, c.uid.clone())))
        .collect();
    if closed.len() <= CLOSED_LISTED {
        return;
    }
    closed.sort();
    let folded: Vec<String> = closed[..closed.len() - CLOSED_LISTED]
        .iter()
        .map(|(_, uid)| uid.clone())
        .collect();
    ledger.retain(|c| {
        if !folded.contains(&c.uid) {
            return true;
        }
        match settled.iter_mut().find(|s| s.service == c.service) {
            Some(s) => s.credits += c.credits(),
            None => settled.push(ServiceCredits {
                service: c.service.clone(),
                credits: c.credits(),
            }),
        }
        false
    });
    settled.sort_by(|a, b| a.service.cmp(&b.service));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(100);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + seconds).unwrap()
    }

    fn node(name: &str, created: i64, deleted: Option<i64>) -> MeteredNode {
        MeteredNode {
            uid: format!("uid-{name}"),
            name: name.into(),
            service: "web".into(),
            price: 2,
            created: at(created),
            deleted: deleted.map(at),
            owned: true,
            has_vm: true,
            // Its VM gone as soon as it was deleted.
            vm_gone: deleted.map(at),
        }
    }

    /// Settles at `now` from `previous` with a grant.
    fn run(
        grant: i64,
        previous: &CreditAccountStatus,
        nodes: &[MeteredNode],
        now: i64,
    ) -> Settlement {
        settle(
            &CreditAccountSpec { grant },
            Some(1),
            at(0),
            previous,
            nodes,
            Clock {
                now: at(now),
                hour: HOUR,
            },
        )
    }

    fn hours(status: &CreditAccountStatus, name: &str) -> i64 {
        status.charge(&format!("uid-{name}")).map_or(0, |c| c.hours)
    }

    #[test]
    fn started_hours_count_from_the_first_second() {
        assert_eq!(hours_started(at(0), at(0), HOUR), 1);
        assert_eq!(hours_started(at(0), at(1), HOUR), 1);
        assert_eq!(hours_started(at(0), at(100), HOUR), 1);
        assert_eq!(hours_started(at(0), at(101), HOUR), 2);
        assert_eq!(hours_begun(at(0), at(99), HOUR), 1);
        assert_eq!(hours_begun(at(0), at(100), HOUR), 2);
        assert_eq!(hours_begun(at(10), at(0), HOUR), 1);
    }

    #[test]
    fn the_first_hour_is_paid_at_admission_and_each_next_one_a_lead_before_it_begins() {
        let nodes = [node("a", 10, None)];
        let s = run(100, &Default::default(), &nodes, 11);
        assert_eq!(hours(&s.status, "a"), 1);
        assert_eq!(
            (s.status.used, s.status.balance, s.status.burn_rate),
            (2, 98, 2)
        );
        // The second hour begins at 110 and is paid from 85 (a quarter hour ahead).
        assert_eq!(s.next_due, Some(Duration::from_secs(74)));
        let s = run(100, &s.status, &nodes, 84);
        assert_eq!(hours(&s.status, "a"), 1);
        let s = run(100, &s.status, &nodes, 85);
        assert_eq!(hours(&s.status, "a"), 2);
        // Settling again at the same moment changes nothing: nothing is charged twice.
        let again = run(100, &s.status, &nodes, 85);
        assert_eq!(again.status, s.status);
    }

    #[test]
    fn a_deleted_node_is_charged_the_hours_started_before_its_deletion() {
        let live = [node("a", 0, None)];
        let paid = run(100, &Default::default(), &live, 80).status;
        assert_eq!(hours(&paid, "a"), 2, "the second hour is paid ahead");
        // Deleted before the second hour began: it is not charged.
        let deleted = [node("a", 0, Some(99))];
        let s = run(100, &paid, &deleted, 120);
        let charge = s.status.charge("uid-a").unwrap();
        assert_eq!((charge.hours, charge.end.clone()), (1, Some(Time(at(99)))));
        assert_eq!((s.status.used, s.status.burn_rate), (2, 0));
        // Deleted in its third hour, with only one paid (the controller was down): three.
        let late = [node("a", 0, Some(250))];
        let s = run(
            100,
            &run(100, &Default::default(), &live, 1).status,
            &late,
            400,
        );
        assert_eq!(hours(&s.status, "a"), 3);
        // A node that goes without its charge closed keeps the hours it paid.
        let s = run(100, &paid, &[], 120);
        assert_eq!(hours(&s.status, "a"), 2);
        assert_eq!(s.status.charge("uid-a").unwrap().end, Some(Time(at(120))));
    }

    #[test]
    fn a_deleted_nodes_vm_is_charged_until_it_is_confirmed_gone() {
        let live = [node("a", 0, None)];
        let paid = run(100, &Default::default(), &live, 1).status;
        // Deletion asked at 99, the cloud refusing the termination: charged on as a live node.
        let terminating = MeteredNode {
            vm_gone: None,
            ..node("a", 0, Some(99))
        };
        let s = run(100, &paid, std::slice::from_ref(&terminating), 250);
        let charge = s.status.charge("uid-a").unwrap();
        assert_eq!((charge.end.clone(), charge.hours), (None, 3), "paid ahead");
        // Gone at 350: its hours are those started until then.
        let gone = MeteredNode {
            vm_gone: Some(at(350)),
            ..terminating
        };
        let s = run(100, &s.status, &[gone], 360);
        let charge = s.status.charge("uid-a").unwrap();
        assert_eq!((charge.end.clone(), charge.hours), (Some(Time(at(350))), 4));
    }

    #[test]
    fn only_a_services_node_is_admitted_and_a_node_without_a_vm_costs_nothing() {
        let stray = MeteredNode {
            owned: false,
            ..node("stray", 0, None)
        };
        let s = run(100, &Default::default(), std::slice::from_ref(&stray), 1);
        assert!(s.status.charge("uid-stray").is_none(), "no Service owns it");
        // Charged at admission, deleted before its VM was made: given back.
        let waiting = MeteredNode {
            has_vm: false,
            ..node("w", 0, None)
        };
        let paid = run(100, &Default::default(), std::slice::from_ref(&waiting), 1).status;
        assert_eq!(hours(&paid, "w"), 1);
        let deleted = MeteredNode {
            deleted: Some(at(50)),
            ..waiting.clone()
        };
        let s = run(100, &paid, &[deleted], 60);
        assert_eq!((hours(&s.status, "w"), s.status.used), (0, 0));
        // Its VM seen once is enough, even if the node is gone when the ledger looks again.
        let seen = run(100, &paid, &[node("w", 0, None)], 2).status;
        let gone = run(100, &seen, &[], 60);
        assert_eq!(hours(&gone.status, "w"), 1);
        // A closed charge is never opened again for the same node.
        let again = run(100, &gone.status, &[node("w", 0, None)], 61);
        assert_eq!(again.status.ledger.len(), 1);
        assert_eq!(again.status.used, 2);
    }

    #[test]
    fn a_warning_is_due_once_per_grant_at_ten_percent_left() {
        let nodes = [node("a", 0, None)];
        let s = run(10, &Default::default(), &nodes, 1);
        assert!(!s.low, "8 of 10 left");
        let s = run(10, &s.status, &nodes, 370);
        assert_eq!(
            (s.status.balance, s.low),
            (2, false),
            "4 hours paid: 2 of 10 left"
        );
        let s = run(20, &s.status, &nodes, 470);
        assert_eq!(s.status.balance, 10);
        let s = run(20, &s.status, &nodes, 870);
        assert_eq!((s.status.balance, s.low), (2, true));
        assert_eq!(s.status.warned_at_grant, Some(20));
        let s = run(20, &s.status, &nodes, 871);
        assert!(!s.low, "once per grant");
    }

    #[test]
    fn exhaustion_stops_new_charges_and_a_larger_grant_resumes_them() {
        let nodes = [node("a", 0, None), node("b", 5, None)];
        let s = run(3, &Default::default(), &nodes, 6);
        assert_eq!(hours(&s.status, "a"), 1);
        assert_eq!(
            hours(&s.status, "b"),
            0,
            "b's first hour (2) exceeds the balance (1)"
        );
        assert!(s.newly_exhausted);
        let exhausted = s.status.exhausted.clone().unwrap();
        assert_eq!(exhausted.grant, 3);
        assert!(s.status.used <= 3);
        // Still exhausted at the same grant, even once nodes are gone: nothing restarts by itself.
        let gone = [node("a", 0, Some(50)), node("b", 5, Some(50))];
        let s = run(3, &s.status, &gone, 60);
        assert!(s.status.exhausted.is_some() && !s.newly_exhausted);
        let s = run(3, &s.status, &[node("c", 70, None)], 71);
        assert_eq!(hours(&s.status, "c"), 0);
        // A larger grant clears it and admits again.
        let s = run(10, &s.status, &[node("c", 70, None)], 72);
        assert!(s.status.exhausted.is_none());
        assert_eq!(hours(&s.status, "c"), 1);
        assert_eq!(s.status.used, 4);
    }

    #[test]
    fn a_renewal_that_cannot_be_paid_exhausts_before_the_hour_begins() {
        let nodes = [node("a", 0, None)];
        let s = run(2, &Default::default(), &nodes, 1);
        assert!(s.status.exhausted.is_none());
        let s = run(2, &s.status, &nodes, 80);
        assert!(s.newly_exhausted, "the second hour is due at 75");
        assert_eq!((s.status.used, s.status.balance), (2, 0));
        let cond = s
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == EXHAUSTED)
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "CreditsExhausted")
        );
        assert!(cond.message.contains("node a"), "{}", cond.message);
    }

    #[test]
    fn the_ledger_keeps_the_newest_closed_charges_and_folds_the_rest() {
        let nodes: Vec<MeteredNode> = (0..CLOSED_LISTED as i64 + 5)
            .map(|i| node(&format!("n{i}"), i, None))
            .collect();
        let s = run(10_000, &Default::default(), &nodes, 200);
        let used = s.status.used;
        let deleted: Vec<MeteredNode> = nodes
            .iter()
            .map(|n| MeteredNode {
                deleted: Some(n.created),
                vm_gone: Some(n.created),
                ..n.clone()
            })
            .collect();
        let s = run(10_000, &s.status, &deleted, 300);
        assert_eq!(s.status.ledger.len(), CLOSED_LISTED);
        assert_eq!(s.status.settled.len(), 1);
        assert_eq!(s.status.settled[0].credits, 5 * 2);
        assert_eq!(s.status.service_credits("web"), s.status.used);
        assert!(s.status.used < used, "paid-ahead hours were given back");
        assert!(
            s.status.charge("uid-n0").is_none(),
            "the oldest were folded"
        );
    }
}
