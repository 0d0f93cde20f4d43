//! The command-line tools tests drive as people do: kubectl (built with the control plane by
//! `e2e/tools/build-kube.sh`), helm (`e2e/tools/build-helm.sh`) and the workspace's cpsctl.
//! Never the ones on the PATH, so every machine runs the same versions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// kubectl v1.34.4 from the cache.
pub fn kubectl() -> PathBuf {
    crate::cache_dir().join("kube-v1.34.4/kubectl")
}

/// helm from the cache.
pub fn helm() -> PathBuf {
    crate::cache_dir().join("helm-v4.3.1/helm")
}

/// How kstatus (sigs.k8s.io/cli-utils v0.37.2, as Flux and kpt use it; built by
/// `e2e/tools/build-kstatus.sh`) judges `object`: `Current`, `InProgress`, `Failed`, ...
pub fn kstatus(object: &impl serde::Serialize) -> anyhow::Result<String> {
    let program = crate::cache_dir().join("kstatus-v0.37.2/kstatus");
    let json = serde_json::to_string(object)?;
    let ran = run(&program, &[], Path::new("/dev/null"), Some(&json))
        .with_context(|| format!("run {} (make kstatus builds it)", program.display()))?;
    if ran.code != Some(0) {
        bail!("kstatus failed: {}", ran.stderr);
    }
    Ok(ran.stdout.lines().next().unwrap_or_default().to_string())
}

/// The workspace's cpsctl.
pub fn cpsctl() -> PathBuf {
    crate::built_binary("cpsctl")
}

/// The repository's root (tests run in their package folder).
pub fn repo_root() -> PathBuf {
    std::env::current_dir()
        .expect("current folder")
        .parent()
        .expect("the e2e package sits in the repository")
        .to_path_buf()
}

/// What a finished command printed.
pub struct Ran {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Panics with everything printed unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `program` with `args` (and `stdin` when given) with KUBECONFIG set, in the repo root.
pub fn run(
    program: &Path,
    args: &[&str],
    kubeconfig: &Path,
    stdin: Option<&str>,
) -> anyhow::Result<Ran> {
    if !program.exists() {
        bail!(
            "{} is missing: run `make kube helm build`",
            program.display()
        );
    }
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())?;
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output()?;
    Ok(Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
