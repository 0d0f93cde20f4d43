//! The XML-RPC simulator of OpenNebula (`tests/simulator/one_simulator.py`, embedded here) as a
//! test peer: started on a free loopback port with `python3`, stopped when dropped. The
//! client's tests, the driver's conformance tests and the end-to-end tests all use it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::Error;

const SCRIPT: &str = include_str!("../tests/simulator/one_simulator.py");

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    child: Child,
    /// `http://127.0.0.1:<port>/RPC2`.
    pub endpoint: String,
}

impl Simulator {
    /// Starts a simulator that accepts the session `session` and moves VMs one state per
    /// `step_seconds`; returns once it accepts calls.
    pub fn start(session: &str, step_seconds: f64) -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let script =
            std::env::temp_dir().join(format!("one_simulator-{}-{port}.py", std::process::id()));
        std::fs::write(&script, SCRIPT)?;
        let mut child = Command::new("python3")
            .arg(&script)
            .args([
                "--port",
                &port.to_string(),
                "--auth",
                session,
                "--step",
                &step_seconds.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let _ = std::fs::remove_file(&script);
        if !line.starts_with("listening") {
            let _ = child.kill();
            return Err(std::io::Error::other(format!(
                "the simulator did not start: {line:?}"
            )));
        }
        Ok(Simulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}/RPC2"),
        })
    }

    /// Makes the next `count` calls of `method` fail as `kind` says: `code:<n>` (an OpenNebula
    /// error), `http500`, `garbage` (not XML-RPC), `shape` (not `[success, result, code]`).
    pub async fn fault(&self, method: &str, kind: &str, count: i32) -> Result<(), Error> {
        let request = xmlrpc::Request::new("sim.fault")
            .arg(method)
            .arg(kind)
            .arg(count);
        let mut body = Vec::new();
        request
            .write_as_xml(&mut body)
            .expect("writing to a Vec cannot fail");
        reqwest::Client::new()
            .post(&self.endpoint)
            .body(body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::Transport {
                method: "sim.fault".into(),
                message: e.to_string(),
                status: None,
            })?;
        Ok(())
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
