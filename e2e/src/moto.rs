//! moto's EC2 server (PyPI `moto[server]`) on a free loopback port, as the EC2 peer of the e2e
//! tests, and a view of its instances through the EC2 driver itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use conpaas_cloud::ec2::{Ec2, Ec2Config};
use conpaas_cloud::{ComputeDriver, Tags, VmState};

/// A running moto server; stopped when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
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
            .context("python3 -m moto.server (pip install 'moto[server]'; .ci/run installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The instances moto runs (not terminated) that carry our managed-by tag, by ID.
    pub async fn live_instances(&self) -> anyhow::Result<Vec<String>> {
        let ec2 = Ec2::new(Ec2Config {
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
        .await;
        let ours = Tags::from([(
            conpaas_crds::labels::TAG_MANAGED_BY.to_string(),
            conpaas_crds::labels::MANAGED_BY_VALUE.to_string(),
        )]);
        let mut ids: Vec<String> = ec2
            .list(&ours)
            .await?
            .into_iter()
            .filter(|vm| vm.state != VmState::Terminated)
            .map(|vm| vm.id)
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
