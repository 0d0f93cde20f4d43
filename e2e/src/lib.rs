//! A real control plane on loopback for tests and for running ConPaaS on one machine: etcd from
//! the `etcd-bin-vendored` crate, kube-apiserver and kube-controller-manager (garbage collector
//! and namespace controllers only) built by `e2e/tools/build-kube.sh` into the cache, and the
//! ConPaaS controller as a child process.
//!
//! [`ControlPlane::start`] gives a cluster with the CRDs installed; [`Controller::start`] runs
//! `conpaas-controller` against it with its own local-cloud state; [`wait`] polls conditions.

pub mod apiserver;
pub mod control_plane;
pub mod controller;
pub mod manifest;
#[cfg(feature = "ec2")]
pub mod moto;
pub mod process;
pub mod standin;
pub mod tools;
pub mod wait;

pub use control_plane::ControlPlane;
pub use controller::Controller;

use std::path::PathBuf;

/// The folder with the workspace's built binaries (`target/debug` or `target/release`).
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable folder");
    // Test executables live in `deps/`, binaries one level up.
    if dir.ends_with("deps") {
        dir.parent().expect("target folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A workspace binary the tests run (`conpaas-controller`, `conpaas-agent`, `cpsctl`), refused
/// when older than any source it is built from: `cargo test -p conpaas-e2e` builds the tests but
/// not the binaries, and would otherwise test yesterday's controller. `make test` builds both.
pub fn built_binary(name: &str) -> PathBuf {
    let path = binaries_dir().join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the binaries first: cargo build --workspace --bins (make test does)",
                path.display()
            )
        });
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The crates each binary is built from: cargo relinks a binary only when one of them changed.
    let crates: &[&str] = match name {
        "conpaas-agent" => &["crds", "agent"],
        "cpsctl" => &["crds", "planner", "cli"],
        _ => &["crds", "cloud", "planner", "reconcilers", "controller"],
    };
    if let Some(newer) = newer_source(&workspace, crates, built) {
        panic!(
            "{} is older than {}; rebuild it: cargo build --workspace --bins (make test does)",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A Rust source of `crates` changed after `than`.
fn newer_source(
    workspace: &std::path::Path,
    crates: &[&str],
    than: std::time::SystemTime,
) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = crates.iter().map(|c| workspace.join(c)).collect();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let name = entry.file_name();
            if meta.is_dir() {
                if name != "tests" && name != "target" {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && meta.modified().is_ok_and(|m| m > than)
            {
                return Some(path);
            }
        }
    }
    None
}

/// Where built kube binaries and other downloads are cached.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CONPAAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/conpaas")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_newer_than_the_binary_is_found() {
        let ws = tempfile::tempdir().unwrap();
        let src = ws.path().join("reconcilers/src/service");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("plan.rs"), "// old").unwrap();
        let crates = ["crds", "reconcilers"];
        let built = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        assert_eq!(
            newer_source(ws.path(), &crates, built),
            None,
            "binary built after the edit"
        );
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
        assert_eq!(
            newer_source(ws.path(), &crates, before),
            Some(src.join("plan.rs")),
            "an edit after the build"
        );
        assert_eq!(
            newer_source(ws.path(), &["crds", "agent"], before),
            None,
            "an edit in a crate the binary is not built from"
        );
    }
}
