//! The EC2 driver against moto's EC2 server (PyPI `moto[server]`, started here on loopback):
//! the conformance suite, launch-time tags and user data, observe as one listing, and a node's
//! data volume made and destroyed with its instance, and an instance stopped by someone else
//! told apart from a failed one.
#![cfg(feature = "ec2")]

use conpaas_cloud::moto::Moto;
use conpaas_cloud::{ComputeDriver, Tags, VmState, conformance};

#[tokio::test]
async fn passes_the_conformance_suite() {
    let moto = Moto::start().expect("moto");
    conformance::run(&moto.driver().await).await;
}

#[tokio::test]
async fn instances_carry_tags_from_launch_and_a_second_create_finds_the_first() {
    let moto = Moto::start().expect("moto");
    let ec2 = moto.driver().await;
    let vm = ec2.create(&conformance::request("launch-1")).await.unwrap();
    assert!(
        vm.provider_id.starts_with("ec2://us-east-1/i-"),
        "{}",
        vm.provider_id
    );
    assert_eq!(
        vm.tags.get("conpaas.io/node").map(String::as_str),
        Some("node-launch-1")
    );
    assert!(vm.address.is_some(), "a private address at launch");
    // moto ignores ClientToken: the token's tag is what finds the first instance.
    let again = ec2.create(&conformance::request("launch-1")).await.unwrap();
    assert_eq!(again.id, vm.id);
    let all = ec2.list(&Tags::new()).await.unwrap();
    assert_eq!(all.len(), 1, "exactly one instance for one token");
    ec2.delete(&vm.id).await.unwrap();
    ec2.delete("i-0123456789abcdef0")
        .await
        .expect("deleting an unknown instance succeeds");
}

#[tokio::test]
async fn a_data_volume_comes_and_goes_with_its_instance() {
    let moto = Moto::start().expect("moto");
    let ec2 = moto.driver().await;
    let request = conpaas_cloud::CreateRequest {
        volume_gib: Some(7),
        ..conformance::request("volume-1")
    };
    let vm = ec2.create(&request).await.unwrap();
    let ours = Tags::from([("conpaas.io/node".to_string(), "node-volume-1".to_string())]);
    let volumes = ec2.data_volumes(&ours).await.unwrap();
    assert_eq!(volumes.len(), 1, "one tagged volume: {volumes:?}");
    assert_eq!(volumes[0].size_gib, 7);
    assert_eq!(volumes[0].attached_to, [vm.id.clone()]);
    // A second create with the token makes no second volume.
    ec2.create(&request).await.unwrap();
    assert_eq!(ec2.data_volumes(&ours).await.unwrap().len(), 1);
    ec2.delete(&vm.id).await.unwrap();
    assert_eq!(
        ec2.data_volumes(&ours).await.unwrap(),
        [],
        "the volume goes with the instance"
    );
    // Without a volume asked for, none is made.
    let plain = ec2.create(&conformance::request("plain-1")).await.unwrap();
    let theirs = Tags::from([("conpaas.io/node".to_string(), "node-plain-1".to_string())]);
    assert_eq!(ec2.data_volumes(&theirs).await.unwrap(), []);
    ec2.delete(&plain.id).await.unwrap();
}

#[tokio::test]
async fn an_instance_stopped_by_someone_else_is_halted_not_failed() {
    let moto = Moto::start().expect("moto");
    let ec2 = moto.driver().await;
    let vm = ec2.create(&conformance::request("halt-1")).await.unwrap();
    // Stopped as its owner would, outside ConPaaS (boto3 comes with moto).
    let stop = format!(
        "import boto3; boto3.client('ec2', endpoint_url='{}', region_name='us-east-1', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\
         .stop_instances(InstanceIds=['{}'])",
        moto.endpoint, vm.id
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &stop])
        .status()
        .expect("python3");
    assert!(status.success(), "boto3 stopped the instance");
    let seen = ec2.get(&vm.id).await.unwrap().expect("still listed");
    assert_eq!(
        seen.state,
        VmState::Halted,
        "its volumes are kept: not a failure"
    );
    ec2.delete(&vm.id).await.unwrap();
}
