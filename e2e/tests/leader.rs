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
}
