//! A Service on an OpenNebula Cloud, against the XML-RPC simulator of `cloud/opennebula/tests/`:
//! the controller builds the driver from the Cloud and its credentials Secret, the VMs follow
//! the nodes up and down, and a wrong session makes the Cloud report why it is not Ready.
//! The simulator runs no guest: stand-in agents report for its VMs (`conpaas_e2e::standin`).

mod common;

use std::sync::Arc;

use common::LIMIT;
use conpaas_crds::v1alpha1::{Cloud, find_condition};
use conpaas_e2e::standin::StandIns;
use conpaas_e2e::{manifest, wait};
use kube::Api;
use opennebula::simulator::Simulator;

/// Live (not DONE) VMs in the simulator.
async fn live_vms(endpoint: &str) -> usize {
    let one = opennebula::Client::new(endpoint, "oneadmin:secret").unwrap();
    one.vm_pool(opennebula::PoolFilter::All)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_service_on_opennebula_follows_its_nodes() {
    let sim = Simulator::start("oneadmin:secret", 0.05).expect("python3 runs the simulator");
    let env = common::env("one", 125).await;
    manifest::apply(&env.client, "apiVersion: v1\nkind: Secret\nmetadata: {name: one-creds}\nstringData: {session: 'oneadmin:secret'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: wrong-creds}\nstringData: {session: 'oneadmin:nope'}\n", "default")
        .await
        .unwrap();
    env.apply(&format!("apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {{name: one}}\nspec: {{opennebula: {{endpoint: '{0}', templateId: 0, networkIds: [0], credentialsSecret: {{name: one-creds}}}}}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {{name: refused}}\nspec: {{opennebula: {{endpoint: '{0}', templateId: 0, credentialsSecret: {{name: wrong-creds}}}}}}\n", sim.endpoint))
        .await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\nspec: {cloud: one}\n")
        .await;
    let standins = Arc::new(StandIns::new(&env.cp).await.unwrap());
    tokio::spawn(standins.run(env.client.clone(), "one".into(), |n| n.spec.cloud == "one"));

    env.scale_hello(3).await;
    env.wait_ready("hello", "node 3/3").await;
    assert_eq!(live_vms(&sim.endpoint).await, 3);
    let nodes = env.nodes("hello").await;
    assert!(nodes.iter().all(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|p| p.starts_with("opennebula://"))
    }));

    env.scale_hello(1).await;
    env.wait_ready("hello", "node 1/1").await;
    wait::until("2 VMs terminated", LIMIT, || async {
        Ok(live_vms(&sim.endpoint).await == 1)
    })
    .await
    .unwrap();

    // A Cloud whose session is refused says so.
    let clouds: Api<Cloud> = Api::all(env.client.clone());
    wait::until("the refused Cloud to report why", LIMIT, || {
        let clouds = clouds.clone();
        async move {
            let st = clouds.get("refused").await?.status.unwrap_or_default();
            Ok(find_condition(&st.conditions, "Ready")
                .is_some_and(|c| c.status == "False" && c.message.contains("unauthorized")))
        }
    })
    .await
    .unwrap();

    env.services()
        .delete("hello", &Default::default())
        .await
        .unwrap();
    env.wait_gone("hello").await;
    assert_eq!(live_vms(&sim.endpoint).await, 0, "no VM is left");
}
