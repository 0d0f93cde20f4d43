//! Credits: each started VM-hour of every node is charged exactly once (until its VM is confirmed
//! gone, not only until its deletion was asked), across controller kills,
//! and a tenant whose credits run out is stopped before an unpaid hour begins, then comes back
//! when the grant grows. The credit hour lasts seconds here (`CONPAAS_CREDIT_HOUR_SECONDS`).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use conpaas_crds::v1alpha1::{CreditAccount, CreditAccountSpec, ServiceNode};
use conpaas_e2e::wait;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{ResourceExt, runtime::WatchStreamExt};

/// A node's life as the API server recorded it.
#[derive(Debug, Clone, Default)]
struct Life {
    name: String,
    created: Option<Timestamp>,
    deleted: Option<Timestamp>,
    /// When the controller confirmed its VM gone (`status.terminatedAt`).
    terminated: Option<Timestamp>,
    had_vm: bool,
}

impl Life {
    /// When its charge should end: its VM confirmed gone, or its deletion if it had none.
    fn end(&self) -> Option<Timestamp> {
        match self.had_vm {
            true => self.terminated.map(|t| t.max(self.deleted.unwrap_or(t))),
            false => self.deleted,
        }
    }
}

/// Records every ServiceNode of the namespace: creation, deletion, whether it got a VM (or its
/// creation began).
fn record_lives(env: &Env) -> Arc<Mutex<BTreeMap<String, Life>>> {
    let lives: Arc<Mutex<BTreeMap<String, Life>>> = Default::default();
    let api: Api<ServiceNode> = env.nodes_api();
    let record = lives.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(node) = event else { continue };
            let mut lives = record.lock().unwrap();
            let life = lives.entry(node.uid().unwrap_or_default()).or_default();
            life.name = node.name_any();
            life.created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
            life.deleted = life
                .deleted
                .or(node.metadata.deletion_timestamp.as_ref().map(|t| t.0));
            life.terminated = life.terminated.or(node
                .status
                .as_ref()
                .and_then(|s| s.terminated_at.as_ref())
                .map(|t| t.0));
            life.had_vm |= node
                .status
                .is_some_and(|s| s.provider_id.is_some() || s.create_requested_at.is_some());
        }
    });
    lives
}

/// `max(1, ceil(lifetime / hour))`: every hour started between creation and the charge's end.
fn hours_of(life: &Life, hour_seconds: i64) -> i64 {
    let lived = life
        .end()
        .unwrap()
        .duration_since(life.created.unwrap())
        .as_secs();
    ((lived + hour_seconds - 1) / hour_seconds).max(1)
}

fn accounts(env: &Env) -> Api<CreditAccount> {
    Api::namespaced(env.client.clone(), &env.ns)
}

async fn create_account(env: &Env, grant: i64) {
    accounts(env)
        .create(
            &PostParams::default(),
            &CreditAccount::new("credits", CreditAccountSpec { grant }),
        )
        .await
        .unwrap();
}

async fn set_grant(env: &Env, grant: i64) {
    accounts(env)
        .patch(
            "credits",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"grant": grant}})),
        )
        .await
        .unwrap();
}

/// A reproducible sequence (xorshift), as the crash test uses.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_started_hour_is_charged_once_across_controller_kills() {
    const HOUR: i64 = 4;
    let seed: u64 = std::env::var("CONPAAS_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc4ed_175e);
    let mut rng = Seeded(seed);
    let mut env = env_with(
        "credits-e2e",
        51,
        &[
            ("CONPAAS_CREDIT_HOUR_SECONDS", &HOUR.to_string()),
            ("CONPAAS_TEST_SHORT_CREDIT_HOUR", "true"),
            ("CONPAAS_LEADER_LEASE_SECONDS", "2"),
        ],
    )
    .await;
    create_account(&env, 1_000_000).await;
    let lives = record_lives(&env);
    env.apply(&EXAMPLE.replace("count: 3", "count: 1")).await;
    env.wait_ready("hello", "node 1/1").await;

    // Nodes come and go at random while the controller is killed at random points.
    let mut kills = 0;
    for _ in 0..12 {
        env.scale_hello(rng.next(5) as i32).await;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(500 + rng.next(2500))).await;
            env.controller.kill();
            kills += 1;
            env.controller.restart().unwrap();
        }
    }
    env.scale_hello(0).await;
    env.wait_ready("hello", "node 0/0").await;
    wait::until("every charge closed", LIMIT, || async {
        let account = accounts(&env).get("credits").await?;
        let status = account.status.unwrap_or_default();
        Ok(!status.ledger.is_empty() && status.ledger.iter().all(|c| c.end.is_some()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&env.controller.log(), 40)));

    let status = accounts(&env).get("credits").await.unwrap().status.unwrap();
    let lives = lives.lock().unwrap().clone();
    let mut expected_total = 0;
    let mut mismatches = Vec::new();
    for (uid, life) in &lives {
        let charge = status.charge(uid);
        match charge {
            Some(charge) => {
                // A node whose VM was never made (deleted while it waited) costs nothing.
                let expected = if life.had_vm { hours_of(life, HOUR) } else { 0 };
                expected_total += expected;
                let end = charge.end.as_ref().map(|t| t.0);
                if charge.hours != expected
                    || Some(charge.start.0) != life.created
                    || end != life.end()
                {
                    mismatches.push(format!(
                        "{}: charged {} hours over {:?}..{end:?}, lived {:?}..{:?} = {expected}",
                        life.name,
                        charge.hours,
                        charge.start.0,
                        life.created,
                        life.end()
                    ));
                }
            }
            // A node deleted before its first hour was charged never got a VM.
            None if life.had_vm => mismatches.push(format!("{} ran a VM uncharged", life.name)),
            None => {}
        }
    }
    let hours: i64 = status.ledger.iter().map(|c| c.hours).sum();
    println!(
        "credits (seed {seed:#x}): {kills} kills, {} nodes, {} charged, {hours} VM-hours charged, {expected_total} lived",
        lives.len(),
        status.ledger.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(hours, expected_total);
    assert_eq!(status.used, expected_total, "1 credit per VM-hour");
    assert_eq!(status.balance, 1_000_000 - expected_total);
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_stops_every_service_before_an_unpaid_hour_and_a_grant_brings_them_back() {
    const HOUR: i64 = 8;
    let mut env = env_with(
        "credits-out-e2e",
        52,
        &[
            ("CONPAAS_CREDIT_HOUR_SECONDS", &HOUR.to_string()),
            ("CONPAAS_TEST_SHORT_CREDIT_HOUR", "true"),
        ],
    )
    .await;
    // Two nodes for three hours: 6 credits.
    create_account(&env, 6).await;
    env.apply(&EXAMPLE.replace("count: 3", "count: 2")).await;
    env.wait_ready("hello", "node 2/2").await;

    env.wait_event("credits-out-e2e", "CreditsLow", Some("credits"))
        .await;
    env.wait_event("credits-out-e2e", "CreditsExhausted", Some("credits"))
        .await;
    env.wait_service("hello", "hello held stopped for its credits", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "CreditsExhausted")
                && st.phase == conpaas_crds::v1alpha1::Phase::Stopped
        })
    })
    .await;
    assert!(env.nodes("hello").await.is_empty(), "stopped: no nodes");
    wait::until("every charge closed", LIMIT, || async {
        let status = accounts(&env)
            .get("credits")
            .await?
            .status
            .unwrap_or_default();
        Ok(status.ledger.iter().all(|c| c.end.is_some()))
    })
    .await
    .unwrap();
    let status = accounts(&env).get("credits").await.unwrap().status.unwrap();
    println!(
        "ran out: used {} of 6, ledger {:?}",
        status.used,
        status
            .ledger
            .iter()
            .map(|c| (c.node.clone(), c.hours))
            .collect::<Vec<_>>()
    );
    assert!(status.used <= 6, "used {} of a grant of 6", status.used);
    assert!(status.exhausted.is_some());
    // Nothing starts again by itself: a reconcile of the Service after it ran out makes no node.
    env.poke_and_wait_reconciled(&env.services(), "hello").await;
    assert!(env.nodes("hello").await.is_empty());

    // What a tenant sees with cpsctl.
    let shown = conpaas_e2e::tools::run(
        &conpaas_e2e::tools::cpsctl(),
        &["-n", "credits-out-e2e", "credits"],
        &env.cp.kubeconfig,
        None,
    )
    .unwrap()
    .ok()
    .stdout;
    assert!(
        shown.starts_with(&format!(
            "grant 6  used {}  balance {}",
            status.used, status.balance
        )) && shown.contains("EXHAUSTED")
            && shown.contains("hello"),
        "{shown}"
    );

    // More credits: the Service comes back by itself.
    set_grant(&env, 100).await;
    env.wait_ready("hello", "node 2/2").await;
    env.wait_event("credits-out-e2e", "CreditsAvailable", Some("credits"))
        .await;

    // A Service gone with its nodes orphaned leaves no node running unowned in a metered
    // namespace: the controller deletes them, VMs included. Orphaned by hand (as the garbage
    // collector's orphan propagation does) while the controller is down, which would otherwise
    // put the Service's finalizer back.
    env.controller.kill();
    let merge = |value| Patch::Merge(value);
    for node in env.nodes("hello").await {
        env.nodes_api()
            .patch(
                node.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &merge(serde_json::json!({"metadata": {"ownerReferences": null}})),
            )
            .await
            .unwrap();
    }
    env.services()
        .patch(
            "hello",
            &PatchParams::default(),
            &merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    env.services()
        .delete("hello", &Default::default())
        .await
        .unwrap();
    env.wait_gone("hello").await;
    env.controller.restart().unwrap();
    env.wait_event("credits-out-e2e", "NoOwningService", None)
        .await;
    wait::until("the abandoned nodes gone", LIMIT, || async {
        Ok(env.nodes("hello").await.is_empty() && env.live_vms().is_empty())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&env.controller.log(), 30)));
}
