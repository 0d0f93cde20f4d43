//! The `git` commands behind a Service's git source: look a ref up, fetch one commit into a bare
//! cache repository, and stream `git archive` of it. Only network transports are allowed
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

/// How long one ls-remote or fetch may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// A bare repository holding what was fetched for one Service.
pub struct Repo {
    dir: PathBuf,
}

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
    ])
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to its end within the deadline; its stdout, or its stderr's words as the error.
async fn output(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer within {}s", DEADLINE.as_secs()))?
        .with_context(|| format!("{what}: run git (is it installed?)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let said = said.join("; ");
        let said = said.trim_start_matches("fatal: ");
        bail!(
            "{what}: {}",
            if said.is_empty() { "git failed" } else { said }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
pub async fn resolve(url: &str, reference: &str) -> anyhow::Result<String> {
    check_url(url)?;
    if is_commit_id(reference) {
        return Ok(reference.to_string());
    }
    let mut cmd = git();
    cmd.args(["ls-remote", "--", url, reference]);
    let listed = output(cmd, &format!("look up {reference} at {url}")).await?;
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
    /// The cache repository in `dir`, made when missing.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.join("HEAD").exists() {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("create {}", dir.display()))?;
            let mut cmd = git();
            cmd.arg("init").arg("--bare").arg("--quiet").arg(dir);
            output(cmd, "make the git cache").await?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Fetches `reference` (only its last commit) from `url`; returns the commit fetched, which
    /// is newer than what [`resolve`] said when someone pushed in between.
    pub async fn fetch(&self, url: &str, reference: &str) -> anyhow::Result<String> {
        check_url(url)?;
        let mut cmd = git();
        cmd.arg("-C").arg(&self.dir).args([
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--",
            url,
            reference,
        ]);
        output(cmd, &format!("fetch {reference} from {url}")).await?;
        let mut cmd = git();
        cmd.arg("-C")
            .arg(&self.dir)
            .args(["rev-parse", "--verify", "FETCH_HEAD^{commit}"]);
        Ok(output(cmd, "read the fetched commit")
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
