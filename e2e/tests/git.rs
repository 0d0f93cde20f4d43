//! Code versions pulled from git: a bare repository served by `git daemon` on loopback, a
//! generic Service following its `main` branch with `autoActivate`. Each push becomes a version
//! `git-<short sha>` that the node then runs; a force-push back to an older commit activates
//! that commit's version again without storing a new archive; an unknown ref and an unreachable
//! server each say so in a Warning Event and store nothing.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use common::*;
use conpaas_crds::v1alpha1::Service;

const NS: &str = "git-e2e";

/// `git daemon` serving the repositories below a folder, stopped when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(base: &Path) -> Daemon {
    let port = conpaas_e2e::process::free_port().unwrap();
    // The daemon itself, not `git daemon`: killing that wrapper would leave the daemon running.
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8(exec_path.stdout).unwrap();
    let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(base)
        .spawn()
        .expect("git daemon");
    Daemon { child, port }
}

/// Runs git in `dir`; its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=e2e", "-c", "user.email=e2e@conpaas.io"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits generic scripts whose run.sh says `version` runs, and pushes them; the commit.
fn push(work: &Path, version: &str) -> String {
    std::fs::write(work.join("init.sh"), "echo init\n").unwrap();
    std::fs::write(
        work.join("run.sh"),
        format!("echo {version} > ../../running.txt\nexec sleep 600\n"),
    )
    .unwrap();
    git(work, &["add", "."]);
    git(work, &["commit", "--quiet", "-m", version]);
    git(work, &["push", "--quiet", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

fn active(service: &Service) -> Option<String> {
    service.spec.code.as_ref()?.active.clone()
}

fn stored_archives(env: &Env) -> usize {
    std::fs::read_dir(env.state.path().join("artifacts/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_push_becomes_a_version_and_a_force_push_back_stores_nothing_new() {
    let env = env(NS, 57).await;
    env.apply_cloud_and_app().await;
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("app.git");
    git(
        repos.path(),
        &[
            "init",
            "--quiet",
            "--bare",
            "-b",
            "main",
            bare.to_str().unwrap(),
        ],
    );
    let work = repos.path().join("work");
    git(
        repos.path(),
        &[
            "clone",
            "--quiet",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "--quiet", "-b", "main"]);
    let first = push(&work, "one");
    let server = daemon(repos.path());
    let url = format!("git://127.0.0.1:{}/app.git", server.port);

    env.apply(&format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: site}}\nspec: {{application: demo, type: generic, roles: [{{name: master, count: 1}}], code: {{git: {{url: '{url}', ref: main, intervalSeconds: 5, autoActivate: true}}}}}}\n"
    ))
    .await;
    let first_version = format!("git-{}", &first[..12]);
    env.wait_service("site", "the first commit active", |s| {
        active(s).as_deref() == Some(first_version.as_str())
    })
    .await;
    env.wait_ready("site", "master 1/1, node 0/0").await;
    let node = env.nodes("site").await.remove(0);
    wait_running(&env, &node, "one").await;
    assert_eq!(stored_archives(&env), 1);

    // A second push: a second version, active, on the node.
    let pushed = Instant::now();
    let second = push(&work, "two");
    let second_version = format!("git-{}", &second[..12]);
    env.wait_service("site", "the second commit active", |s| {
        active(s).as_deref() == Some(second_version.as_str())
    })
    .await;
    println!(
        "time from a git push to its active version: {:.1}s (intervalSeconds 5)",
        pushed.elapsed().as_secs_f64()
    );
    wait_running(&env, &node, "two").await;
    assert_eq!(stored_archives(&env), 2);

    // A force-push back to the first commit: its version is active again, nothing new stored.
    git(&work, &["reset", "--quiet", "--hard", &first]);
    git(&work, &["push", "--quiet", "--force", "origin", "main"]);
    env.wait_service("site", "the first commit active again", |s| {
        active(s).as_deref() == Some(first_version.as_str())
    })
    .await;
    wait_running(&env, &node, "one").await;
    let service = env.services().get("site").await.unwrap();
    let versions = &service.spec.code.as_ref().unwrap().versions;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0].commit.as_deref(), Some(first.as_str()));
    assert_eq!(stored_archives(&env), 2);

    // An unknown ref and an unreachable server say so, and store nothing.
    let closed = conpaas_e2e::process::free_port().unwrap();
    env.apply(&format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: noref}}\nspec: {{application: demo, type: generic, state: Stopped, roles: [{{name: master, count: 1}}], code: {{git: {{url: '{url}', ref: nope}}}}}}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: nohost}}\nspec: {{application: demo, type: generic, state: Stopped, roles: [{{name: master, count: 1}}], code: {{git: {{url: 'git://127.0.0.1:{closed}/app.git', ref: main}}}}}}\n"
    ))
    .await;
    for (name, says) in [
        ("noref", "ref nope not found"),
        ("nohost", "unable to connect"),
    ] {
        env.wait_event_where(NS, "GitSyncFailed", |e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.note.as_deref().is_some_and(|n| n.contains(says))
        })
        .await;
        let service = env.services().get(name).await.unwrap();
        assert!(service.spec.code.unwrap().versions.is_empty(), "{name}");
    }
    assert_eq!(stored_archives(&env), 2);
    drop(server);
}
