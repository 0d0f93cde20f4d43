//! The `git` commands behind a Service's git source: look a ref up, fetch one commit into a bare
//! scratch repository (at most a size limit), and stream `git archive` of it. Only network transports are allowed
//! (`file://`, local paths and `ext::` would let a tenant read the controller's own disk), git
//! never prompts for credentials, and every command has a deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::Stream;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use super::destination::Checked;

/// How long one ls-remote or fetch may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// A bare scratch repository holding one fetched commit of one Service; removed when dropped.
pub struct Repo {
    dir: PathBuf,
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a git command and the helpers in its process group, and reaps it.
async fn stop(child: &mut tokio::process::Child, group: Option<u32>) {
    if let Some(group) = group {
        let group = nix::unistd::Pid::from_raw(group as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// The bytes of the files below `dir` (what a fetch has written so far).
async fn folder_size(dir: PathBuf) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&entry.path()),
                Ok(_) => entry.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    }
    tokio::task::spawn_blocking(move || walk(&dir))
        .await
        .unwrap_or(0)
}

/// The controller's variables git is given: where its programs are, and the CA certificates an
/// installation trusts for https.
const KEPT_VARIABLES: [&str; 5] = [
    "PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
];

/// `git` with the transports and settings every call shares.
fn git() -> Command {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.http.allow=always",
        "-c",
        "protocol.git.allow=always",
        "-c",
        "credential.helper=",
        // A server that sends nothing for 30 s is given up on.
        "-c",
        "http.lowSpeedLimit=1",
        "-c",
        "http.lowSpeedTime=30",
        // A redirect would lead past the destination check (to a metadata address, say).
        "-c",
        "http.followRedirects=false",
    ])
    // Nothing of the controller's environment but where programs and CA certificates are: a
    // proxy variable (http_proxy, ALL_PROXY) would send the connection to a proxy that
    // resolves the host again, past the pinned address.
    .env_clear()
    .envs(std::env::vars_os().filter(|(name, _)| KEPT_VARIABLES.iter().any(|k| name == k)))
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

/// `git` talking to `to`: connecting to the address that was checked.
fn git_to(to: &Checked) -> Command {
    git_through(to, std::env::var_os("CONPAAS_GIT_PROXY"))
}

/// `git` talking to `to`, through `proxy` if an administrator chose one on purpose (it
/// resolves the host itself).
fn git_through(to: &Checked, proxy: Option<std::ffi::OsString>) -> Command {
    let mut cmd = git();
    if let Some(proxy) = proxy {
        // By the environment, not the command line that every local user can read: a proxy's
        // URL may hold its password.
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.proxy")
            .env("GIT_CONFIG_VALUE_0", proxy);
    }
    if let Some(resolve) = &to.resolve {
        cmd.arg("-c").arg(format!("http.curloptResolve={resolve}"));
    }
    cmd
}

/// The most a ref listing may print: a server that advertises without end is cut off there.
const MAX_LISTING_BYTES: u64 = 8 << 20;
/// The most of git's error output kept (only its first words are shown).
const MAX_STDERR_BYTES: u64 = 64 << 10;

/// Runs `cmd` to its end within the deadline, reading at most `max_stdout` bytes of what it
/// prints (past that it is killed): its stdout, or its stderr's words as the error.
async fn output(mut cmd: Command, what: &str, max_stdout: u64) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: git talks through helpers (git-remote-https), which a stop must
        // reach too.
        .process_group(0)
        .spawn()
        .with_context(|| format!("{what}: run git (is it installed?)"))?;
    // Its process group: still to be stopped once git itself has been reaped (its helpers may
    // hold its output open past its end).
    let group = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let err = tokio::spawn(async move {
            let mut err = Vec::new();
            if let Some(stderr) = stderr {
                let _ = stderr.take(MAX_STDERR_BYTES).read_to_end(&mut err).await;
            }
            err
        });
        let mut out = Vec::new();
        if let Some(stdout) = stdout {
            // One byte past the limit tells a listing that is too long from one that fits.
            stdout
                .take(max_stdout + 1)
                .read_to_end(&mut out)
                .await
                .with_context(|| format!("{what}: read git's output"))?;
        }
        if out.len() as u64 > max_stdout {
            stop(&mut child, group).await;
            err.abort();
            bail!("{what}: the server sent more than {max_stdout} bytes; stopped");
        }
        let status = child
            .wait()
            .await
            .with_context(|| format!("{what}: wait for git"))?;
        let err = err.await.unwrap_or_default();
        if !status.success() {
            bail!("{what}: {}", git_said(&String::from_utf8_lossy(&err)));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let ended = tokio::time::timeout(DEADLINE, run).await;
    if ended.is_err() {
        stop(&mut child, group).await;
    }
    ended.with_context(|| format!("{what}: no answer within {}s", DEADLINE.as_secs()))?
}

/// How much of git's own words an error keeps.
const SAID_CHARS: usize = 300;

/// Git's words about a failure, without what the server sent: its `remote:` lines and the text
/// of a `remote error` are the server's content, and an Event that echoed them would make a
/// git source a way to read whatever answers at an address.
fn git_said(stderr: &str) -> String {
    let lines: Vec<String> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("remote:"))
        .map(|l| match l.find("remote error:") {
            Some(at) => format!("{}the server refused (its words are not shown)", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    let said = lines.join("; ");
    let said = said.trim_start_matches("fatal: ");
    if said.is_empty() {
        return "git failed".into();
    }
    match said.char_indices().nth(SAID_CHARS) {
        Some((cut, _)) => format!("{}…", &said[..cut]),
        None => said.to_string(),
    }
}

/// Refuses what is not a network URL, whatever the schema let through.
fn check_url(url: &str) -> anyhow::Result<()> {
    let allowed = ["https://", "http://", "git://"];
    if !allowed.iter().any(|scheme| url.starts_with(scheme)) {
        bail!("git url {url} is not https://, http:// or git://");
    }
    // Credentials in the URL would end up in Events and logs; private repositories are not
    // supported yet.
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    if authority.contains('@') {
        bail!(
            "git url has credentials in it (user@host): they would be shown in Events; only public repositories are supported"
        );
    }
    Ok(())
}

/// The commit `reference` names at `url`: a branch, a tag (peeled to its commit), `HEAD` or a
/// full ref name; a full commit id is taken as it is.
pub async fn resolve(to: &Checked, reference: &str) -> anyhow::Result<String> {
    let url = to.url.as_str();
    check_url(url)?;
    if is_commit_id(reference) {
        return Ok(reference.to_string());
    }
    let mut cmd = git_to(to);
    cmd.args(["ls-remote", "--", url, reference]);
    let listed = output(
        cmd,
        &format!("look up {reference} at {url}"),
        MAX_LISTING_BYTES,
    )
    .await?;
    pick(&listed, reference).with_context(|| format!("ref {reference} not found at {url}"))
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// From `ls-remote` lines, the commit of `reference`: an exact ref name first, then the branch,
/// then the tag's commit.
fn pick(listed: &str, reference: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, r)| *r == name)
            .map(|(sha, _)| sha.to_string())
    };
    // An annotated tag's own object is not a commit: its peeled line (`^{}`) is.
    find(&format!("{reference}^{{}}"))
        .or_else(|| find(reference))
        .or_else(|| find(&format!("refs/heads/{reference}")))
        .or_else(|| find(&format!("refs/tags/{reference}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{reference}")))
}

impl Repo {
    /// A new, empty repository in `dir` (what was there before is removed): nothing fetched is
    /// kept past one look, so the disk holds at most one commit at a time.
    pub async fn create(dir: &Path) -> anyhow::Result<Self> {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", dir.display())),
        }
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("create {}", dir.display()))?;
        let mut cmd = git();
        cmd.arg("init").arg("--bare").arg("--quiet").arg(dir);
        output(cmd, "make the git scratch repository", MAX_LISTING_BYTES).await?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Fetches `reference` (only its last commit) from `to`, giving up once the repository
    /// holds more than `limit` bytes; returns the commit fetched, which is newer than what
    /// [`resolve`] said when someone pushed in between.
    pub async fn fetch(&self, to: &Checked, reference: &str, limit: u64) -> anyhow::Result<String> {
        let url = to.url.as_str();
        check_url(url)?;
        let what = format!("fetch {reference} from {url}");
        let mut cmd = git_to(to);
        cmd.arg("-C")
            .arg(&self.dir)
            .args([
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "--",
                url,
                reference,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: git leaves the writing to helpers (index-pack), which a stop must
            // reach too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{what}: run git (is it installed?)"))?;
        let group = child.id();
        let stderr = child.stderr.take().expect("piped");
        let said = tokio::spawn(async move {
            let mut text = String::new();
            let mut limited = tokio::io::AsyncReadExt::take(stderr, 64 << 10);
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut limited, &mut text).await;
            text
        });
        let started = std::time::Instant::now();
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.with_context(|| format!("{what}: wait for git"))?,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if started.elapsed() > DEADLINE {
                stop(&mut child, group).await;
                bail!("{what}: no answer within {}s", DEADLINE.as_secs());
            }
            let size = folder_size(self.dir.clone()).await;
            if size > limit {
                stop(&mut child, group).await;
                bail!(
                    "{what}: stopped after {size} bytes: the commit is larger than the limit of {limit} bytes"
                );
            }
        };
        if !status.success() {
            bail!("{what}: {}", git_said(&said.await.unwrap_or_default()));
        }
        // A fetch quicker than one look at its size is measured once it is done.
        let size = folder_size(self.dir.clone()).await;
        if size > limit {
            bail!("{what}: {size} bytes: the commit is larger than the limit of {limit} bytes");
        }
        let mut cmd = git();
        cmd.arg("-C")
            .arg(&self.dir)
            .args(["rev-parse", "--verify", "FETCH_HEAD^{commit}"]);
        Ok(output(cmd, "read the fetched commit", MAX_LISTING_BYTES)
            .await?
            .trim()
            .to_string())
    }

    /// A gzipped tar of `commit`'s tree, as `git archive` streams it; it ends with an error
    /// when git fails, so a cut-off archive is never stored.
    pub fn archive(
        &self,
        commit: &str,
    ) -> anyhow::Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>> {
        let mut child = git()
            .arg("-C")
            .arg(&self.dir)
            .args(["archive", "--format=tar.gz", commit])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run git archive (is git installed?)")?;
        let stdout = child.stdout.take().expect("piped");
        let body = ReaderStream::new(stdout);
        let end = futures::stream::once(async move {
            let out = child.wait_with_output().await?;
            if out.status.success() {
                Ok(None)
            } else {
                Err(std::io::Error::other(format!(
                    "git archive: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        });
        use futures::StreamExt;
        Ok(body
            .map(|chunk| chunk.map(Some))
            .chain(end)
            .filter_map(|item| async move { item.transpose() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn refs_are_picked_exactly_then_as_branch_then_as_peeled_tag() {
        let listed = "1111111111111111111111111111111111111111\tHEAD\n\
                      2222222222222222222222222222222222222222\trefs/heads/main\n\
                      3333333333333333333333333333333333333333\trefs/tags/v1\n\
                      4444444444444444444444444444444444444444\trefs/tags/v1^{}\n";
        assert_eq!(pick(listed, "HEAD").unwrap(), "1".repeat(40));
        assert_eq!(pick(listed, "main").unwrap(), "2".repeat(40));
        assert_eq!(pick(listed, "v1").unwrap(), "4".repeat(40));
        assert_eq!(pick(listed, "refs/tags/v1").unwrap(), "4".repeat(40));
        assert_eq!(pick(listed, "nope"), None);
    }

    #[test]
    fn what_a_server_said_stays_out_of_the_error() {
        let stderr = "remote: secret-token-from-metadata\n\
                      fatal: remote error: access denied: ami-id instance-id\n";
        let said = git_said(stderr);
        assert_eq!(said, "the server refused (its words are not shown)");
        assert!(!said.contains("secret") && !said.contains("ami-id"));
        let long = format!("fatal: {}", "x".repeat(1000));
        assert_eq!(git_said(&long).chars().count(), SAID_CHARS + 1);
        assert_eq!(git_said(""), "git failed");
        assert_eq!(
            git_said("fatal: unable to access 'http://h/': Could not resolve host: h\n"),
            "unable to access 'http://h/': Could not resolve host: h"
        );
    }

    /// Runs git with `args` in `dir`, which must succeed.
    fn run_git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@conpaas.io"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[tokio::test]
    async fn a_fetch_past_the_size_limit_is_stopped_and_leaves_nothing() {
        let base = tempfile::tempdir().unwrap();
        let origin = base.path().join("app.git");
        run_git(base.path(), &["init", "--quiet", "--bare", "app.git"]);
        let work = base.path().join("work");
        run_git(base.path(), &["clone", "--quiet", "app.git", "work"]);
        // 4 MiB that do not compress.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4u32 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        std::fs::write(work.join("big.bin"), noise).unwrap();
        run_git(&work, &["add", "."]);
        run_git(&work, &["commit", "--quiet", "-m", "big"]);
        run_git(&work, &["push", "--quiet", "origin", "HEAD:main"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exec_path = std::process::Command::new("git")
            .arg("--exec-path")
            .output()
            .unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let mut daemon = std::process::Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.path().display()))
            .arg(base.path())
            .spawn()
            .unwrap();
        let to = Checked {
            url: format!("git://127.0.0.1:{port}/app.git"),
            resolve: None,
        };
        let mut listed = Err(anyhow::anyhow!("not asked"));
        for _ in 0..50 {
            listed = resolve(&to, "main").await;
            if listed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        listed.expect("the daemon serves the repository");
        let scratch = base.path().join("scratch");
        let repo = Repo::create(&scratch).await.unwrap();
        let refused = repo
            .fetch(&to, "main", 1 << 20)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("larger than the limit of 1048576 bytes"),
            "{refused}"
        );
        drop(repo);
        assert!(!scratch.exists(), "nothing fetched is kept");
        let repo = Repo::create(&scratch).await.unwrap();
        let fetched = repo.fetch(&to, "main", 64 << 20).await.unwrap();
        assert_eq!(fetched.len(), 40);
        drop(repo);
        assert!(!scratch.exists(), "nothing fetched is kept");
        let _ = daemon.kill();
        let _ = daemon.wait();
        drop(origin);
    }

    /// Accepts connections at an ephemeral loopback port, answering each request with
    /// `answer`; the port and how many connections came.
    async fn http_server(answer: String) -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let came = Arc::new(AtomicUsize::new(0));
        let counted = came.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, came)
    }

    #[tokio::test]
    async fn git_follows_no_redirect() {
        let (elsewhere, came_elsewhere) = http_server(String::new()).await;
        let (server, came_to_server) = http_server(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/app.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        let to = Checked {
            url: format!("http://127.0.0.1:{server}/app.git"),
            resolve: None,
        };
        let refused = resolve(&to, "main").await.unwrap_err().to_string();
        assert!(refused.contains("look up main"), "{refused}");
        assert!(
            came_to_server.load(Ordering::SeqCst) >= 1,
            "git asked the server"
        );
        assert_eq!(
            came_elsewhere.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
    }

    /// What git runs gets none of the controller's variables (a proxy variable among them would
    /// send connections past the pinned address): an alias prints the environment it is given.
    #[tokio::test]
    async fn git_gets_nothing_of_the_controllers_environment() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "the test runs with a variable of its own"
        );
        let mut cmd = git();
        cmd.args(["-c", "alias.environment=!env", "environment"]);
        let seen = output(cmd, "print the environment", 1 << 20).await.unwrap();
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(names.contains(&"PATH"), "{names:?}");
        assert!(!names.contains(&"CARGO_MANIFEST_DIR"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.to_ascii_lowercase().contains("proxy")),
            "{names:?}"
        );
    }

    /// An administrator's proxy reaches git as its setting, and its password is on no command
    /// line.
    #[tokio::test]
    async fn the_proxy_reaches_git_by_its_environment_not_its_command_line() {
        let to = Checked {
            url: "https://example.com/app.git".into(),
            resolve: Some("example.com:443:93.184.215.14".into()),
        };
        let proxy = "http://git:s3cret@127.0.0.1:3128";
        let mut cmd = git_through(&to, Some(proxy.into()));
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        cmd.args(["config", "--get", "http.proxy"]);
        let seen = output(cmd, "read the proxy", 1 << 20).await.unwrap();
        assert_eq!(seen.trim(), proxy);
        let mut direct = git_through(&to, None);
        direct.args(["config", "--get", "http.proxy"]);
        assert!(output(direct, "read the proxy", 1 << 20).await.is_err());
    }

    /// A git cut off takes its helpers with it: a child it started is gone too.
    #[tokio::test]
    async fn a_cut_off_command_takes_its_helpers_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("helper.pid");
        let mut endless = Command::new("sh");
        endless.args([
            "-c",
            &format!(
                "sleep 300 & echo $! > {}; yes a-ref-name",
                pid_file.display()
            ),
        ]);
        output(endless, "list refs", 1 << 20).await.unwrap_err();
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let helper = nix::unistd::Pid::from_raw(pid);
        // Killed; gone once its parent's end lets it be reaped.
        let gone = || {
            nix::sys::signal::kill(helper, None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                })
        };
        for _ in 0..50 {
            if gone() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
        panic!("the helper {pid} outlived the command that was cut off");
    }

    #[tokio::test]
    async fn output_without_end_is_cut_off() {
        let mut endless = Command::new("sh");
        endless.args(["-c", "yes a-ref-name"]).kill_on_drop(true);
        let cut = tokio::time::timeout(
            Duration::from_secs(20),
            output(endless, "list refs", 1 << 20),
        )
        .await
        .expect("it stops by itself")
        .unwrap_err()
        .to_string();
        assert!(cut.contains("more than 1048576 bytes"), "{cut}");
        let mut short = Command::new("sh");
        short.args(["-c", "echo fits"]);
        assert_eq!(output(short, "list refs", 1 << 20).await.unwrap(), "fits\n");
    }

    #[test]
    fn only_network_urls_are_accepted() {
        assert!(check_url("git://127.0.0.1:9418/app.git").is_ok());
        assert!(check_url("https://example.com/app.git").is_ok());
        for bad in [
            "file:///etc",
            "/srv/app.git",
            "ext::sh -c id",
            "ssh://host/x",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
