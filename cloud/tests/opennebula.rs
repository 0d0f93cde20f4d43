//! The OpenNebula driver against the XML-RPC simulator (`opennebula/tests/simulator/`): the
//! conformance suite, and failed, refused and malformed calls mapped by meaning.
#![cfg(feature = "opennebula")]

use conpaas_cloud::opennebula::{OpenNebula, OpenNebulaConfig};
use conpaas_cloud::{ComputeDriver, Tags, VmState, conformance};
use opennebula::simulator::Simulator;

const SESSION: &str = "oneadmin:secret";

fn start() -> Simulator {
    Simulator::start(SESSION, 0.05).expect("python3 runs the simulator")
}

fn driver(sim: &Simulator, session: &str) -> OpenNebula {
    OpenNebula::new(OpenNebulaConfig {
        endpoint: sim.endpoint.clone(),
        session: session.into(),
        template_id: Some(0),
        template: None,
        network_ids: vec![0],
        calls_per_second: 1000,
    })
    .unwrap()
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let sim = start();
    conformance::run(&driver(&sim, SESSION)).await;
}

#[tokio::test]
async fn the_bootstrap_goes_into_context_and_ownership_into_the_user_template() {
    let sim = start();
    let one = driver(&sim, SESSION);
    let vm = one.create(&conformance::request("ctx-1")).await.unwrap();
    assert!(vm.provider_id.starts_with("opennebula://"));
    assert_eq!(vm.token, "ctx-1");
    assert_eq!(
        vm.tags.get("conpaas.io/node").map(String::as_str),
        Some("node-ctx-1")
    );
    let client = opennebula::Client::new(&sim.endpoint, SESSION).unwrap();
    let raw = client.vm_info(vm.id.parse().unwrap()).await.unwrap();
    assert_eq!(
        raw.name, "conpaas-ctx-1",
        "the VM name derives from the token"
    );
    assert_eq!(
        raw.user_template.get("CONPAAS_TOKEN").map(String::as_str),
        Some("ctx-1")
    );
    assert!(
        vm.address.is_some(),
        "a NIC on the network gives an address"
    );
}

#[tokio::test]
async fn refused_and_broken_calls_are_errors_by_meaning_never_absent_vms() {
    let sim = start();
    let one = driver(&sim, SESSION);
    let wrong = driver(&sim, "oneadmin:wrong");
    assert_eq!(wrong.check().await.unwrap_err().category(), "Unauthorized");
    assert_eq!(
        wrong.list(&Tags::new()).await.unwrap_err().category(),
        "Unauthorized"
    );

    one.create(&conformance::request("keep-1")).await.unwrap();
    sim.fault("one.vmpool.info", "garbage", 1).await.unwrap();
    assert_eq!(
        one.list(&Tags::new()).await.unwrap_err().category(),
        "Transient",
        "a broken listing is not an empty one"
    );
    sim.fault("one.vmpool.info", "http500", 1).await.unwrap();
    assert_eq!(
        one.list(&Tags::new()).await.unwrap_err().category(),
        "Transient"
    );
    sim.fault("one.vm.info", "shape", 1).await.unwrap();
    assert_eq!(one.get("0").await.unwrap_err().category(), "Transient");
    sim.fault("one.template.instantiate", "code:16384", 1)
        .await
        .unwrap();
    assert_eq!(
        one.create(&conformance::request("full-1"))
            .await
            .unwrap_err()
            .category(),
        "QuotaExceeded"
    );
    sim.fault("one.vm.action", "code:32768", 1).await.unwrap();
    assert_eq!(
        one.delete("0").await.unwrap_err().category(),
        "Transient",
        "LOCKED is retried"
    );
    one.delete("0").await.unwrap();
    let live = one.list(&Tags::new()).await.unwrap();
    assert!(
        live.iter()
            .all(|v| v.state == VmState::Terminated || v.state == VmState::Stopping)
    );
}
