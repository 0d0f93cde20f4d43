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
    env.apply(&EXAMPLE).await;
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
    env.apply(&EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;
    let before = {
        let mut p = env.live_vms();
        p.sort();
        p
    };
    env.controller.kill();
    env.controller.restart().unwrap();
    // Scale up so the new controller has work; the three old VMs must remain the same processes.
    env.scale_hello(4).await;
    env.wait_ready("hello", "node 4/4").await;
    let after = env.live_vms();
    assert_eq!(after.len(), 4, "one VM per node, none doubled");
    assert!(
        before.iter().all(|p| after.contains(p)),
        "the old VMs were adopted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_policy_orphan_leaves_the_vms_running_and_unswept() {
    let env = env_with(
        "orphan-policy-e2e",
        43,
        &[("CONPAAS_ORPHAN_GRACE_SECONDS", "1")],
    )
    .await;
    env.apply(&EXAMPLE).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\nspec: {application: demo, type: helloworld, deletionPolicy: Orphan, roles: [{name: node, count: 3}]}\n").await;
    env.wait_ready("hello", "node 3/3").await;
    let before = env.live_vms();

    env.services()
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("hello").await;
    assert!(env.nodes("hello").await.is_empty(), "the nodes are gone");
    assert_eq!(env.live_vms(), before, "the VMs run on");
    // A VM with our tags that nobody claims, made now: the sweep (grace 1 s) must take it, which
    // proves a sweep passed over the orphaned VMs too. It runs on node changes and each minute.
    let stray = stray_vm(&env, "orphan-policy-e2e", 43).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: other}\nspec: {application: demo, type: helloworld, roles: [{name: node, count: 1}]}\n").await;
    env.wait_ready("other", "node 1/1").await;
    env.wait_event_where("default", "OrphanSwept", |e| {
        e.note.as_deref().is_some_and(|n| n.contains(&stray))
    })
    .await;
    assert!(
        before.iter().all(|p| alive(*p)),
        "the sweep spared the orphaned VMs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_service_is_left_alone_until_resumed() {
    use kube::api::{Patch, PatchParams};
    let env = env("paused-e2e", 44).await;
    env.apply(&EXAMPLE).await;
    // A short heartbeat timeout: the VM killed while paused is replaced soon after the resume.
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\nspec: {application: demo, type: helloworld, health: {heartbeatTimeoutSeconds: 3}, roles: [{name: node, count: 3}]}\n").await;
    env.wait_ready("hello", "node 3/3").await;
    let pause = |value: Option<&str>| serde_json::json!({"metadata": {"annotations": {"conpaas.io/paused": value}}});
    env.services()
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(pause(Some("true"))),
        )
        .await
        .unwrap();
    env.wait_service("hello", "the Paused condition", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Paused" && c.status == "True")
        })
    })
    .await;
    wait::until("every node told it is paused", LIMIT, || async {
        Ok(env.nodes("hello").await.iter().all(|n| n.spec.paused))
    })
    .await
    .unwrap();

    // Scaling up and a dead VM change nothing while paused.
    let spec = serde_json::json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "spec": {"application": "demo", "type": "helloworld", "health": {"heartbeatTimeoutSeconds": 3}, "roles": [{"name": "node", "count": 4}]}});
    env.services()
        .patch(
            "hello",
            &PatchParams::apply("conpaas-e2e").force(),
            &Patch::Apply(spec),
        )
        .await
        .unwrap();
    let victim = env.live_vms()[0];
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_service("hello", "the scale-up observed while paused", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == s.metadata.generation)
    })
    .await;
    // The dead VM is noticed (the VM listing is at most 10 s old) and its node stays unhealthy
    // past the heartbeat timeout, when an unpaused Service would replace it; then look.
    wait::until(
        "the dead node unhealthy past its timeout",
        LIMIT,
        || async {
            let now = k8s_openapi::jiff::Timestamp::now();
            Ok(env.nodes("hello").await.iter().any(|n| {
                n.status.as_ref().is_some_and(|st| {
                    st.conditions.iter().any(|c| {
                        c.type_ == "Healthy"
                            && c.status == "False"
                            && now.duration_since(c.last_transition_time.0).as_secs() >= 3 + 2
                    })
                })
            }))
        },
    )
    .await
    .unwrap();
    let names: Vec<_> = env
        .nodes("hello")
        .await
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names.len(),
        3,
        "no node added or replaced while paused: {names:?}"
    );

    // Resumed: the dead node is replaced and the fourth added.
    env.services()
        .patch("hello", &PatchParams::default(), &Patch::Merge(pause(None)))
        .await
        .unwrap();
    env.wait_ready("hello", "node 4/4").await;
    assert_eq!(env.live_vms().len(), 4);
}

/// Makes a VM carrying our managed-by tag for a node that does not exist, as a crash between a
/// create and its record would leave; returns its provider ID.
async fn stray_vm(env: &Env, namespace: &str, subnet: u8) -> String {
    use conpaas_cloud::local::{LocalCloud, LocalConfig};
    use conpaas_cloud::{ComputeDriver, CreateRequest, Tags};
    let cloud = LocalCloud::new(LocalConfig {
        state_dir: env.state.path().to_path_buf(),
        agent_binary: "/bin/sleep".into(),
        subnet,
        stop_grace: std::time::Duration::from_secs(1),
    });
    let vm = cloud
        .create(&CreateRequest {
            token: "stray-token".into(),
            name: "stray".into(),
            instance_type: None,
            tags: Tags::from([
                (
                    "conpaas.io/managed-by".to_string(),
                    "conpaas-controller".to_string(),
                ),
                ("conpaas.io/namespace".to_string(), namespace.to_string()),
                ("conpaas.io/node".to_string(), "stray-node-0".to_string()),
            ]),
            user_data: "{}".into(),
            volume_gib: None,
            size: None,
        })
        .await
        .unwrap();
    vm.provider_id
}
