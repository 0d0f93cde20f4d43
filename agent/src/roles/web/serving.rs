//! Whether a node serves its active code version: a request through the node's own nginx for a
//! file the agent puts into every version it installs ([`MARKER`], holding the version's name).
//! The answer proves what a listening socket does not: nginx's workers can read the version's
//! folder and it is the one being served. No user code runs for it (a php page could write rows
//! or burn CPU), and an application whose `/` redirects or needs a login passes the same way.

use std::time::Duration;

use tokio::time::Instant;

/// The file, at the root of every installed version, the probe asks for.
pub const MARKER: &str = ".conpaas-serving";

/// How many failed probes in a row fail the node (a worker that restarts is given a moment).
const FAILURES_TO_FAIL: u32 = 3;
/// How long between probes until the version is seen served, and after it failed.
const EVERY: Duration = Duration::from_secs(2);

/// Puts the marker naming `version` into its folder, in place of whatever the archive has under
/// that name (a link is replaced, never followed).
pub fn mark(dir: &std::path::Path, version: &str) -> Result<(), String> {
    use std::io::Write;
    let marker = dir.join(MARKER);
    let gone = match std::fs::symlink_metadata(&marker) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&marker),
        Ok(_) => std::fs::remove_file(&marker),
        Err(_) => Ok(()),
    };
    gone.and_then(|()| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)?
            .write_all(version.as_bytes())
    })
    .map_err(|e| format!("write {}: {e}", marker.display()))
}

/// The probe of one code version.
#[derive(Debug)]
pub struct Serving {
    version: Option<String>,
    verdict: Verdict,
    failures: u32,
    next: Instant,
}

/// What the probes said so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not asked yet, or it failed fewer than [`FAILURES_TO_FAIL`] times in a row.
    Checking,
    Served,
    /// Why the version cannot be served.
    NotServed(String),
}

impl Default for Serving {
    fn default() -> Self {
        Self {
            version: None,
            verdict: Verdict::Served,
            failures: 0,
            next: Instant::now(),
        }
    }
}

impl Serving {
    /// Starts over for `version` (None: no code, nothing to prove).
    pub fn expect(&mut self, version: Option<&str>) {
        if self.version.as_deref() == version {
            return;
        }
        self.version = version.map(str::to_string);
        self.verdict = if version.is_some() {
            Verdict::Checking
        } else {
            Verdict::Served
        };
        self.failures = 0;
        self.next = Instant::now();
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Asks the node's server at `address` (`host:port`) when a probe is due and the version is
    /// not seen served yet.
    pub async fn probe(&mut self, address: &str) {
        let own = address
            .rsplit_once(':')
            .and_then(|(host, _)| host.parse::<std::net::IpAddr>().ok());
        let Some(version) = self.version.clone() else {
            return;
        };
        if self.verdict == Verdict::Served || Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + EVERY;
        let url = format!("http://{address}/{MARKER}");
        let answer = ask(&url, own).await;
        match judge(&version, answer) {
            Ok(()) => {
                self.failures = 0;
                self.verdict = Verdict::Served;
            }
            Err(why) => {
                self.failures += 1;
                tracing::warn!(%url, why, failures = self.failures, "code version not served");
                if self.failures >= FAILURES_TO_FAIL {
                    self.verdict = Verdict::NotServed(format!(
                        "code version {version} cannot be served: GET {url} {why}"
                    ));
                }
            }
        }
    }
}

/// One GET: its status and body, or why there was none.
async fn ask(url: &str, from: Option<std::net::IpAddr>) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("failed: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("failed: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

/// Whether an answer shows `version` served.
fn judge(version: &str, answer: Result<(u16, String), String>) -> Result<(), String> {
    let (status, body) = answer?;
    match status {
        200 if body.trim() == version => Ok(()),
        200 => Err(format!(
            "answered another version ({:?})",
            body.trim().chars().take(64).collect::<String>()
        )),
        404 | 403 => Err(format!(
            "answered {status}: the server's workers cannot read the version's folder (is every folder above it searchable?)"
        )),
        other => Err(format!("answered {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_version_itself_counts_as_served() {
        assert_eq!(judge("v2", Ok((200, "v2\n".into()))), Ok(()));
        assert!(
            judge("v2", Ok((200, "v1".into())))
                .unwrap_err()
                .contains("another version")
        );
        assert!(
            judge("v2", Ok((404, String::new())))
                .unwrap_err()
                .contains("cannot read")
        );
        assert!(
            judge("v2", Ok((502, String::new())))
                .unwrap_err()
                .contains("502")
        );
        assert!(
            judge("v2", Err("failed: refused".into()))
                .unwrap_err()
                .contains("refused")
        );
    }

    #[tokio::test]
    async fn a_version_fails_only_after_repeated_failures_and_recovers_once_served() {
        // As the agent's main does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut serving = Serving::default();
        assert_eq!(
            serving.verdict(),
            &Verdict::Served,
            "no code, nothing to prove"
        );
        serving.expect(Some("v1"));
        assert_eq!(serving.verdict(), &Verdict::Checking);
        // Nothing listens on port 1.
        for _ in 0..FAILURES_TO_FAIL - 1 {
            serving.next = Instant::now();
            serving.probe("127.0.0.1:1").await;
            assert_eq!(serving.verdict(), &Verdict::Checking);
        }
        serving.next = Instant::now();
        serving.probe("127.0.0.1:1").await;
        assert!(
            matches!(serving.verdict(), Verdict::NotServed(why) if why.contains("code version v1 cannot be served")),
            "{:?}",
            serving.verdict()
        );
        // Once the version is served, the node recovers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv1",
                    )
                    .await;
            }
        });
        serving.next = Instant::now();
        serving.probe(&format!("127.0.0.1:{port}")).await;
        assert_eq!(serving.verdict(), &Verdict::Served);
        serving.expect(None);
        assert_eq!(serving.verdict(), &Verdict::Served);
    }
}
