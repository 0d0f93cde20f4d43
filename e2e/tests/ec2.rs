//! A Service on an EC2 Cloud, against moto: the instances match the ServiceNodes at every step
//! of 0 -> 5 -> 2 -> 0, deleting the Service leaves no running instance with our tag, and one
//! Service runs a role on the local cloud and a role on EC2.
//!
//! moto boots nothing: stand-in agents (`conpaas_e2e::standin`) report for the EC2 nodes with
//! each node's own token. Credentials come from a Secret in the controller's namespace.
#![cfg(feature = "ec2")]

mod common;

use std::sync::Arc;

use common::LIMIT;
use conpaas_cloud::moto::Moto;
use conpaas_crds::v1alpha1::ServiceNode;
use conpaas_e2e::moto::{apply_credentials, live_instances};
use conpaas_e2e::standin::StandIns;
use conpaas_e2e::wait;

fn on_ec2(node: &ServiceNode) -> bool {
    node.spec.cloud == "aws"
}

/// The Cloud of the EC2 issue, as written there but for moto's port.
const ISSUE_CLOUD: &str = "apiVersion: conpaas.io/v1alpha1
kind: Cloud
metadata: {name: aws}
spec:
  ec2:
    region: us-east-1
    endpoint: http://127.0.0.1:5000   # optional; else AWS_ENDPOINT_URL, else AWS itself
    imageId: ami-03cf127a
    instanceType: t3.micro
";

/// A control plane and controller, moto, Cloud `aws` and stand-ins. With `secret`, the Cloud's
/// credentials come from a Secret in the controller's namespace; without, the Cloud is the
/// issue's manifest verbatim and the controller has credentials in its environment (the SDK's
/// default chain).
async fn setup(ns: &str, subnet: u8, secret: bool) -> (common::Env, Moto) {
    let moto = Moto::start().expect("moto");
    let cloud = ISSUE_CLOUD.replace("http://127.0.0.1:5000", &moto.endpoint);
    let env = if secret {
        let env = common::env(ns, subnet).await;
        apply_credentials(&env.client).await.unwrap();
        env.apply(&format!(
            "{cloud}    credentialsSecret: {{name: aws-creds}}\n"
        ))
        .await;
        env
    } else {
        let vars = [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            // Nothing may leave loopback: no instance-metadata lookups.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let env = common::env_with(ns, subnet, &vars).await;
        env.apply(&cloud).await;
        env
    };
    let standins = Arc::new(StandIns::new(&env.cp).await.unwrap());
    tokio::spawn(standins.run(env.client.clone(), ns.to_string(), on_ec2));
    (env, moto)
}

/// Waits until moto's live instances are exactly the ServiceNodes' VMs of `service`.
async fn instances_match_nodes(env: &common::Env, moto: &Moto, service: &str, count: usize) {
    wait::until(
        &format!("{count} instances matching the nodes"),
        LIMIT,
        || async {
            let mut recorded: Vec<String> = env
                .nodes(service)
                .await
                .iter()
                .filter(|n| on_ec2(n))
                .filter_map(|n| n.status.as_ref()?.provider_id.clone())
                .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
                .collect();
            recorded.sort();
            let live = live_instances(moto).await?;
            Ok(recorded.len() == count && live == recorded)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller.log()));
}

#[tokio::test]
async fn a_service_on_ec2_scales_and_the_instances_match_its_nodes() {
    let (env, moto) = setup("aws", 123, true).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\nspec: {cloud: aws}\n")
        .await;
    for count in [0, 5, 2, 0] {
        env.scale_hello(count).await;
        env.wait_ready("hello", &format!("node {count}/{count}"))
            .await;
        instances_match_nodes(&env, &moto, "hello", count as usize).await;
    }
    env.scale_hello(3).await;
    env.wait_ready("hello", "node 3/3").await;
    env.services()
        .delete("hello", &Default::default())
        .await
        .unwrap();
    env.wait_gone("hello").await;
    assert!(
        live_instances(&moto).await.unwrap().is_empty(),
        "deleting the Service leaves no running instance with our tag"
    );
}

#[tokio::test]
async fn one_service_runs_a_role_on_the_local_cloud_and_one_on_ec2() {
    let (env, moto) = setup("multi", 124, false).await;
    env.apply_cloud_and_app().await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: mixed}\nspec:\n  application: demo\n  type: generic\n  roles:\n  - {name: master, cloud: local}\n  - {name: node, count: 2, cloud: aws}\n")
        .await;
    env.wait_ready("mixed", "master 1/1, node 2/2").await;
    let nodes = env.nodes("mixed").await;
    let placed: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n.spec.role.clone(),
                n.status
                    .clone()
                    .unwrap_or_default()
                    .provider_id
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        placed
            .iter()
            .any(|(r, p)| r == "master" && p.starts_with("local://")),
        "{placed:?}"
    );
    assert_eq!(
        placed
            .iter()
            .filter(|(r, p)| r == "node" && p.starts_with("ec2://"))
            .count(),
        2,
        "{placed:?}"
    );
    instances_match_nodes(&env, &moto, "mixed", 2).await;
    assert_eq!(env.live_vms().len(), 1, "one local VM: the master");
    env.services()
        .delete("mixed", &Default::default())
        .await
        .unwrap();
    env.wait_gone("mixed").await;
    assert!(live_instances(&moto).await.unwrap().is_empty());
    assert!(env.live_vms().is_empty());
}
