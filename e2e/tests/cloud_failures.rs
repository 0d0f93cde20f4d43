//! A cloud that refuses is seen where the user looks, not only in the controller's log: moto
//! (with AMI validation on, as EC2 has) refuses the Cloud's image, and the node's Ready
//! condition carries EC2's own message, an Event says it, the Service is Degraded naming the
//! node and Stalled (kstatus: failed, not waiting forever), the refusal is not retried while
//! nothing changes, and fixing the Cloud's image wakes the node, which then runs. kstatus (as
//! Flux and kpt use it) calls the stuck Service Failed and the running one Current.
#![cfg(feature = "ec2")]

mod common;

use std::sync::Arc;

use common::LIMIT;
use conpaas_cloud::moto::Moto;
use conpaas_crds::v1alpha1::{Cloud, Service, ServiceNode, find_condition};
use conpaas_e2e::controller::sum_calls;
use conpaas_e2e::moto::{apply_credentials, live_instances};
use conpaas_e2e::standin::StandIns;
use conpaas_e2e::tools::kstatus;
use conpaas_e2e::wait;
use kube::api::{Api, Patch, PatchParams};

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (String, String, String) {
    find_condition(conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn service_conditions(s: &Service, type_: &str) -> (String, String, String) {
    condition(&s.status.clone().unwrap_or_default().conditions, type_)
}

#[tokio::test]
async fn a_refused_create_is_shown_stalls_and_resumes_when_the_cloud_is_fixed() {
    let moto = Moto::start_with(&[("MOTO_ENABLE_AMI_VALIDATION", "true")]).expect("moto");
    let env = common::env("refused", 126).await;
    apply_credentials(&env.client).await.unwrap();
    env.apply(&format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {{name: aws}}\nspec:\n  ec2:\n    region: us-east-1\n    endpoint: {}\n    imageId: ami-0badc0ffee0000000\n    instanceType: t3.micro\n    credentialsSecret: {{name: aws-creds}}\n",
        moto.endpoint
    ))
    .await;
    // The Cloud answers and takes the credentials (Ready): what it refuses is the image alone.
    let clouds: Api<Cloud> = Api::all(env.client.clone());
    wait::until("the Cloud to be Ready", LIMIT, || {
        let clouds = clouds.clone();
        async move {
            let cloud = clouds.get("aws").await?;
            let conditions = cloud.status.unwrap_or_default().conditions;
            Ok(condition(&conditions, "Ready").0 == "True")
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller.log()));
    let standins = Arc::new(StandIns::new(&env.cp).await.unwrap());
    tokio::spawn(standins.run(env.client.clone(), "refused".into(), |n| {
        n.spec.cloud == "aws"
    }));
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\nspec: {cloud: aws}\n")
        .await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\nspec: {application: demo, type: helloworld, replicas: 1}\n")
        .await;

    // The node says what EC2 said, and that the controller waits for a change.
    let nodes = env.nodes_api();
    wait::until("the node to carry EC2's refusal", LIMIT, || {
        let nodes = nodes.clone();
        async move {
            let node: ServiceNode = nodes.get("hello-node-0").await?;
            let (status, reason, message) =
                condition(&node.status.unwrap_or_default().conditions, "Ready");
            Ok(status == "False"
                && reason == "ProviderOther"
                && message.contains("InvalidAMIID")
                && message.ends_with(
                    "(tried again when the node or its Cloud changes, else every 10 minutes)",
                ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller.log()));
    env.wait_event("refused", "ProviderOther", Some("hello-node-0"))
        .await;

    // The Service names the node and the reason, and is Stalled rather than Reconciling.
    // GitOps tools see a dead end: kstatus says Failed.
    env.wait_service(
        "hello",
        "Degraded naming the node, Stalled, kstatus Failed",
        |s| {
            let (degraded, reason, message) = service_conditions(s, "Degraded");
            let stalled = service_conditions(s, "Stalled").0 == "True";
            let reconciling = service_conditions(s, "Reconciling").0 == "True";
            degraded == "True"
                && reason == "ProviderOther"
                && message.starts_with("node hello-node-0: create VM on cloud aws")
                && message.contains("InvalidAMIID")
                && stalled
                && !reconciling
                && kstatus(s).unwrap() == "Failed"
        },
    )
    .await;
    assert!(
        live_instances(&moto).await.unwrap().is_empty(),
        "no instance runs"
    );

    // An unsatisfiable spec is a dead end too (kstatus used to wait on it forever).
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: lost}\nspec: {application: demo, type: helloworld, roles: [{name: node, count: 1, cloud: nowhere}]}\n")
        .await;
    env.wait_service("lost", "kstatus to call it Failed", |s| {
        service_conditions(s, "Stalled").1 == "CloudNotFound" && kstatus(s).unwrap() == "Failed"
    })
    .await;

    // EC2 was asked once: the node's own status write, its Event and the Service's turn to
    // Stalled woke the node again while nothing it waits for had changed, and none of them
    // retried the refusal.
    let creates = sum_calls(&env.controller.cloud_calls().await.unwrap(), "create");
    assert_eq!(
        creates,
        1.0,
        "no retries of a permanent refusal\n{}",
        env.controller.log()
    );

    // Fixing the Cloud wakes the node: the VM is created and the Service runs.
    clouds
        .patch(
            "aws",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"ec2": {"imageId": "ami-03cf127a"}}})),
        )
        .await
        .unwrap();
    env.wait_ready("hello", "node 1/1").await;
    let hello = env.services().get("hello").await.unwrap();
    assert_eq!(kstatus(&hello).unwrap(), "Current");
    assert_eq!(service_conditions(&hello, "Stalled").0, "False");
    assert_eq!(service_conditions(&hello, "Degraded").0, "False");
    assert_eq!(live_instances(&moto).await.unwrap().len(), 1);
}
