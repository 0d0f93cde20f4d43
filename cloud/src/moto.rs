//! moto's server (PyPI `moto[server]`) as the test peer of the EC2 driver and the artifact
//! store's S3: started on a free loopback port with `python3 -m moto.server`, stopped when
//! dropped, with an EC2 driver for it (feature `ec2`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(feature = "ec2")]
use crate::ec2::{Ec2, Ec2Config};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto and waits until it accepts connections.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts moto with these environment variables (e.g. `MOTO_ENABLE_AMI_VALIDATION`, which
    /// makes it refuse unknown images as EC2 does).
    pub fn start_with(vars: &[(&str, &str)]) -> std::io::Result<Self> {
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
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || moto.child.try_wait()?.is_some() {
                return Err(std::io::Error::other(
                    "moto did not start (pip install 'moto[server]'; .ci/run installs it)",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// A driver for this moto: region us-east-1, any AMI, test credentials.
    #[cfg(feature = "ec2")]
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
