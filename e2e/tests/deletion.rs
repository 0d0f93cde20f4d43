//! Story 4: deleting an Application (or Service) terminates every VM before the objects go,
//! also when the controller was down at the time of the delete.

mod common;

use common::*;
use conpaas_crds::v1alpha1::Application;
use conpaas_e2e::wait;
use kube::api::{Api, DeleteParams};

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_application_while_the_controller_is_down_still_terminates_every_vm() {
    let mut env = env("delete-e2e", 33).await;
    env.apply(EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;
    assert_eq!(env.live_vms().len(), 3);

    env.controller.kill();
    let apps: Api<Application> = Api::namespaced(env.client.clone(), &env.ns);
    apps.delete("demo", &DeleteParams::default()).await.unwrap();
    // Finalizers hold the objects while nobody can terminate the VMs.
    let app = apps
        .get("demo")
        .await
        .expect("the Application waits for its finalizer");
    assert!(app.metadata.deletion_timestamp.is_some());
    assert_eq!(env.live_vms().len(), 3, "the VMs outlive the controller");

    env.controller.restart().unwrap();
    wait::until("the Application to be gone", LIMIT, || {
        let apps = apps.clone();
        async move { Ok(apps.get_opt("demo").await?.is_none()) }
    })
    .await
    .expect("application deleted");
    assert!(
        env.services().get_opt("hello").await.unwrap().is_none(),
        "its Service went first"
    );
    assert!(env.nodes("hello").await.is_empty());
    assert!(env.live_vms().is_empty(), "every VM was terminated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_controller_adopts_running_vms_instead_of_creating_new_ones() {
    let mut env = env("restart-e2e", 34).await;
    env.apply(EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;
    let before = {
        let mut p = env.live_vms();
        p.sort();
        p
    };
    env.controller.kill();
    env.controller.restart().unwrap();
    // Scale up so the new controller has work; the three old VMs must remain the same processes.
    let pp = kube::api::PatchParams::apply("conpaas-e2e").force();
    let spec = serde_json::json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "spec": {"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": 4}]}});
    env.services()
        .patch("hello", &pp, &kube::api::Patch::Apply(spec))
        .await
        .unwrap();
    env.wait_ready("hello", "node 4/4").await;
    let after = env.live_vms();
    assert_eq!(after.len(), 4, "one VM per node, none doubled");
    assert!(
        before.iter().all(|p| after.contains(p)),
        "the old VMs were adopted"
    );
}
