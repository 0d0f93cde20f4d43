//! Leader election: of two replicas only the leader acts; when it dies, the other takes over
//! within the lease time and carries on.

mod common;

use std::time::Instant;

use common::*;
use conpaas_e2e::{Controller, wait};

const LEASE: &[(&str, &str)] = &[("CONPAAS_LEADER_LEASE_SECONDS", "4")];

async fn endpoint(controller: &Controller, path: &str) -> Option<String> {
    let a = controller.http_address;
    http_get_path(&a.ip().to_string(), a.port(), path)
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_replica_takes_over_when_the_leader_dies() {
    let mut env = env_with("leader-e2e", 42, LEASE).await;
    env.apply(&EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;

    // A second replica on the same cloud state stands by: alive, not ready, not acting.
    let standby = Controller::start_with(&env.cp, env.state.path(), 42, LEASE).unwrap();
    wait::until("the standby to serve /healthz", LIMIT, || async {
        Ok(endpoint(&standby, "/healthz").await.as_deref() == Some("ok"))
    })
    .await
    .unwrap();
    assert_eq!(
        endpoint(&standby, "/readyz").await.as_deref(),
        Some("not ready"),
        "the standby does not lead"
    );
    assert_eq!(
        endpoint(&env.controller, "/readyz").await.as_deref(),
        Some("ok"),
        "the leader is ready"
    );
    // A change while both run: the leader makes the node, the standby nothing.
    env.scale_hello(4).await;
    env.wait_ready("hello", "node 4/4").await;
    assert!(
        env.controller.log().contains("created service node"),
        "the leader's log names what it created"
    );
    assert!(
        !standby.log().contains("created service node"),
        "the standby created nothing while it stood by"
    );
    assert_eq!(env.live_vms().len(), 4, "one VM per node, none twice");

    // The leader dies; the standby takes over within the lease time and acts.
    let killed = Instant::now();
    env.controller.kill();
    wait::until("the standby to lead", LIMIT, || async {
        Ok(endpoint(&standby, "/readyz").await.as_deref() == Some("ok"))
    })
    .await
    .unwrap();
    println!(
        "leader failover: {:.1}s (lease 4s)",
        killed.elapsed().as_secs_f64()
    );

    env.scale_hello(5).await;
    env.wait_ready("hello", "node 5/5").await;
    assert_eq!(
        env.live_vms().len(),
        5,
        "the new leader adopted the VMs and added one"
    );

    // A leader that stops cleanly gives the Lease up: the other replica need not wait it out.
    // The Lease's changes are recorded as they come, each with when it arrived.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), "default");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = tokio::spawn({
        let seen = seen.clone();
        async move {
            use futures::StreamExt;
            use kube::runtime::{WatchStreamExt, watcher};
            let config = watcher::Config::default().fields("metadata.name=conpaas-controller");
            let mut events = watcher(leases, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::InitApply(l) | watcher::Event::Apply(l)) = event {
                    let spec = l.spec.unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .push((std::time::SystemTime::now(), spec));
                }
            }
        }
    });
    wait::until("the Lease's changes recorded", LIMIT, || async {
        Ok(!seen.lock().unwrap().is_empty())
    })
    .await
    .unwrap();
    let mut standby = standby;
    env.controller.restart().unwrap();
    let stopped = Instant::now();
    standby.stop();
    wait::until("the restarted replica to lead", LIMIT, || async {
        Ok(endpoint(&env.controller, "/readyz").await.as_deref() == Some("ok"))
    })
    .await
    .unwrap();
    println!(
        "takeover after a clean stop: {:.1}s (lease 4s)",
        stopped.elapsed().as_secs_f64()
    );
    assert!(
        standby.log().contains("leadership released"),
        "the stopped leader released its Lease"
    );
    recorder.abort();
    // The holder cleared the Lease while it was still its own (an expired Lease is cleared
    // too, but only once its renewal plus duration has passed), and another replica took it.
    let seen = seen.lock().unwrap().clone();
    let holders: Vec<_> = seen
        .iter()
        .map(|(_, l)| l.holder_identity.clone())
        .collect();
    let released = seen
        .windows(2)
        .position(|w| w[0].1.holder_identity.is_some() && w[1].1.holder_identity.is_none())
        .unwrap_or_else(|| panic!("the Lease was never released; its holders: {holders:?}"));
    let (before, (cleared_at, _)) = (&seen[released].1, &seen[released + 1]);
    let renewed = before
        .renew_time
        .as_ref()
        .expect("a held Lease's renewal")
        .0;
    let valid_until = std::time::SystemTime::from(renewed)
        + std::time::Duration::from_secs(before.lease_duration_seconds.unwrap_or(0) as u64);
    assert!(
        *cleared_at < valid_until,
        "released by its holder, before it expired ({holders:?})"
    );
    let next = seen[released + 1..]
        .iter()
        .find_map(|(_, l)| l.holder_identity.clone());
    assert!(
        next.is_some() && next != before.holder_identity,
        "another replica holds the Lease next: {holders:?}"
    );
}
