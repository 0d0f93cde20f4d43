//! The agent's own log, kept in memory as well as written to stderr, and served read-only on
//! port 5555 of the VM's address (ConPaaS agents listened on 5555 too): `GET /log?tail=N` is the
//! agent's log, `GET /log/<script>.log?tail=N` a generic script's output. `cpsctl logs` reads it.
//! Only to callers whose bearer token RBAC allows `get` on the Service's `logs` ([`LogAuth`]):
//! 401 without a valid token, 403 without the right.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::log_auth::{LogAuth, Verdict};

/// Port of the log endpoint.
pub const PORT: u16 = 5555;
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

/// Serves the logs until the agent exits. A bind failure is logged, not fatal: the role matters
/// more than its log endpoint.
pub async fn serve(address: String, buffer: LogBuffer, script_logs: PathBuf, auth: LogAuth) {
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
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(socket);
            continue;
        };
        let buffer = buffer.clone();
        let script_logs = script_logs.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(request) = tokio::time::timeout(REQUEST_DEADLINE, read_head(&mut socket)).await
            else {
                return;
            };
            let (status, body) = match auth.check(bearer_token(&request)).await {
                Verdict::Allowed => answer(&request, &buffer, &script_logs),
                Verdict::Unauthenticated(why) => ("401 Unauthorized", format!("{why}\n")),
                Verdict::Forbidden(why) => ("403 Forbidden", format!("{why}\n")),
                Verdict::Unavailable(why) => ("503 Service Unavailable", format!("{why}\n")),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// The request line and headers, up to [`MAX_REQUEST`] bytes (or what came before the peer
/// stopped sending).
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
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
    // Only plain file names of the script log folder: no separators, no way out of it.
    if !name.ends_with(".log")
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        || name.starts_with('.')
    {
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
