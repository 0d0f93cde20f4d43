//! helloworld: every node serves its greeting over HTTP on port 8080 of its own address
//! (ConPaaS' `get_helloworld` returned the same string from every agent).

use std::sync::{Arc, RwLock};

use conpaas_crds::v1alpha1::{AgentState, ServiceNodeSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Role, RoleEnv, RoleReport};

/// Port the greeting is served on.
pub const PORT: u16 = 8080;
const DEFAULT_GREETING: &str = "Hello World!";

pub struct Helloworld {
    env: RoleEnv,
    greeting: Arc<RwLock<String>>,
    server: Option<tokio::task::JoinHandle<()>>,
    error: Option<String>,
    /// The code version of the spec: helloworld serves no code, so it has nothing to install
    /// and reports it at once (a rollout then moves on).
    code_version: Option<String>,
}

impl Helloworld {
    pub fn new(env: RoleEnv) -> Self {
        Self {
            env,
            greeting: Arc::new(RwLock::new(DEFAULT_GREETING.into())),
            server: None,
            error: None,
            code_version: None,
        }
    }
}

#[async_trait::async_trait]
impl Role for Helloworld {
    async fn apply(&mut self, spec: &ServiceNodeSpec) {
        let greeting = spec
            .settings
            .get("greeting")
            .cloned()
            .unwrap_or_else(|| DEFAULT_GREETING.into());
        *self.greeting.write().unwrap_or_else(|p| p.into_inner()) = greeting;
        self.code_version = spec.code.as_ref().map(|c| c.version.clone());
        if self.server.is_none() {
            let addr = format!("{}:{PORT}", self.env.address);
            match TcpListener::bind(&addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "serving the greeting");
                    self.server = Some(tokio::spawn(serve(listener, self.greeting.clone())));
                    self.error = None;
                }
                Err(e) => self.error = Some(format!("listen on {addr}: {e}")),
            }
        }
    }

    fn report(&self) -> RoleReport {
        let greeting = self
            .greeting
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match &self.error {
            Some(e) => RoleReport {
                state: Some(AgentState::Failed),
                message: Some(e.clone()),
                code_version: self.code_version.clone(),
                ..Default::default()
            },
            None => RoleReport {
                state: Some(AgentState::Ready),
                message: Some(format!("serving http://{}:{PORT}/", self.env.address)),
                greeting: Some(greeting),
                code_version: self.code_version.clone(),
                ..Default::default()
            },
        }
    }

    async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, greeting: Arc<RwLock<String>>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let body = greeting.read().unwrap_or_else(|p| p.into_inner()).clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
