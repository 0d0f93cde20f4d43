//! The agent's own log, kept in memory as well as written to stderr, and served read-only over
//! TLS on port 5555 of the VM's address (ConPaaS agents listened on 5555 too): `GET /log?tail=N`
//! is the agent's log, `GET /log/<script>.log?tail=N` a generic script's output. Only the
//! controller reads it ([`LogAuth`]); users read it through the controller (`cpsctl logs`). The
//! certificate is made at start and its digest reported in the node's status, where the
//! controller pins it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::log_auth::{LogAuth, Verdict};

/// Port of the log endpoint.
pub const PORT: u16 = conpaas_crds::code_api::AGENT_LOG_PORT;
/// The largest request read: a request line and headers with a long bearer token.
const MAX_REQUEST: usize = 16 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a caller has to send its request.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Lines of the agent's log kept in memory.
const KEPT_LINES: usize = 2000;

/// The latest lines of the agent's log.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<VecDeque<String>>>);

impl LogBuffer {
    fn push(&self, text: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines() {
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.to_string());
        }
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let skip = lines.len().saturating_sub(n);
        lines.iter().skip(skip).map(|l| format!("{l}\n")).collect()
    }
}

/// Writes each log record to stderr and into the buffer.
pub struct Tee(LogBuffer);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(&String::from_utf8_lossy(buf));
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = Tee;

    fn make_writer(&'a self) -> Tee {
        Tee(self.clone())
    }
}

/// The log endpoint's TLS: a certificate made now for the VM's address, and its SHA-256 (hex),
/// which the node reports for the controller to pin.
pub fn tls_identity(address: &str) -> anyhow::Result<(Arc<ServerConfig>, String)> {
    let made = rcgen::generate_simple_self_signed(vec![address.to_string()])
        .context("make the log endpoint's certificate")?;
    let der = made.cert.der().to_vec();
    let pin = hex::encode(Sha256::digest(&der));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der)], key)
        .context("the log endpoint's certificate and key")?;
    Ok((Arc::new(config), pin))
}

/// Serves the logs until the agent exits. A bind failure is logged, not fatal: the role matters
/// more than its log endpoint.
pub async fn serve(
    address: String,
    tls: Arc<ServerConfig>,
    buffer: LogBuffer,
    script_logs: PathBuf,
    auth: LogAuth,
) {
    let acceptor = TlsAcceptor::from(tls);
    let addr = format!("{address}:{PORT}");
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve the agent log");
            return;
        }
    };
    // A few readers at a time, each with one deadline for its whole request: a flood of slow
    // or unauthenticated connections cannot pile up in the agent or behind it at the API server.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(socket);
            continue;
        };
        let buffer = buffer.clone();
        let script_logs = script_logs.clone();
        let auth = auth.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // One deadline for the handshake and the request together.
            let handshake_and_request = async {
                let mut tls = acceptor.accept(socket).await.ok()?;
                let request = read_head(&mut tls).await;
                Some((tls, request))
            };
            let Ok(Some((mut socket, request))) =
                tokio::time::timeout(REQUEST_DEADLINE, handshake_and_request).await
            else {
                return;
            };
            let (status, body) = match auth.check(bearer_token(&request)) {
                Verdict::Allowed => answer(&request, &buffer, &script_logs),
                Verdict::Unauthenticated(why) => ("401 Unauthorized", format!("{why}\n")),
                Verdict::Unavailable(why) => ("503 Service Unavailable", format!("{why}\n")),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// The request line and headers, up to [`MAX_REQUEST`] bytes (or what came before the peer
/// stopped sending).
async fn read_head(socket: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while head.len() < MAX_REQUEST && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(request: &str) -> Option<&str> {
    request.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

fn answer(
    request: &str,
    buffer: &LogBuffer,
    script_logs: &std::path::Path,
) -> (&'static str, String) {
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let tail = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("tail="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    if path == "/log" {
        return ("200 OK", buffer.tail(tail));
    }
    let Some(name) = path.strip_prefix("/log/") else {
        return ("404 Not Found", "try /log or /log/<script>.log\n".into());
    };
    if !conpaas_crds::code_api::is_plain_log_name(name) {
        return (
            "400 Bad Request",
            format!("{name:?} is not a log name like init.sh.log\n"),
        );
    }
    match std::fs::read_to_string(script_logs.join(name)) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(tail);
            (
                "200 OK",
                lines[skip..].iter().map(|l| format!("{l}\n")).collect(),
            )
        }
        Err(e) => ("404 Not Found", format!("{name}: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_and_script_logs_are_served_and_nothing_else() {
        let buffer = LogBuffer::default();
        buffer.push("one\ntwo\nthree\n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run.sh.log"), "a\nb\n").unwrap();
        let get = |line: &str| answer(&format!("GET {line} HTTP/1.1\r\n\r\n"), &buffer, dir.path());
        assert_eq!(get("/log?tail=2"), ("200 OK", "two\nthree\n".into()));
        assert_eq!(get("/log/run.sh.log?tail=1"), ("200 OK", "b\n".into()));
        assert_eq!(get("/log/..%2Fetc.log").0, "400 Bad Request");
        assert_eq!(get("/log/../token").0, "400 Bad Request");
        assert_eq!(get("/log/init.sh.log").0, "404 Not Found");
    }

    #[test]
    fn the_bearer_token_is_read_from_its_header_only() {
        let with = |header: &str| format!("GET /log HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n");
        assert_eq!(
            bearer_token(&with("Authorization: Bearer abc.def")),
            Some("abc.def")
        );
        assert_eq!(
            bearer_token(&with("authorization: bearer  abc ")),
            Some("abc")
        );
        assert_eq!(bearer_token(&with("Authorization: Basic abc")), None);
        assert_eq!(bearer_token(&with("X-Authorization: Bearer abc")), None);
        assert_eq!(
            bearer_token("GET /log?Authorization: Bearer abc HTTP/1.1\r\n\r\n"),
            None
        );
    }
}
