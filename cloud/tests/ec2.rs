//! The EC2 driver against moto's EC2 server (PyPI `moto[server]`, started here on loopback):
//! the conformance suite, launch-time tags and user data, and observe as one listing.
#![cfg(feature = "ec2")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conpaas_cloud::ec2::{Ec2, Ec2Config};
use conpaas_cloud::{ComputeDriver, Tags, conformance};

/// A moto server on a free loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]'; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn driver(&self) -> Ec2 {
        Ec2::new(Ec2Config {
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            image_id: "ami-03cf127a".into(),
            instance_type: "t3.micro".into(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            credentials: Some(("testing".into(), "testing".into(), None)),
            calls_per_second: 1000,
        })
        .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let moto = Moto::start();
    conformance::run(&moto.driver().await).await;
}

#[tokio::test]
async fn instances_carry_tags_from_launch_and_a_second_create_finds_the_first() {
    let moto = Moto::start();
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
