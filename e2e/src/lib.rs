//! A real control plane on loopback for tests and for running ConPaaS on one machine: etcd from
//! the `etcd-bin-vendored` crate, kube-apiserver and kube-controller-manager (garbage collector
//! and namespace controllers only) built by `e2e/tools/build-kube.sh` into the cache, and the
//! ConPaaS controller as a child process.
//!
//! [`ControlPlane::start`] gives a cluster with the CRDs installed; [`Controller::start`] runs
//! `conpaas-controller` against it with its own local-cloud state; [`wait`] polls conditions.

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

/// Where built kube binaries and other downloads are cached.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CONPAAS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/conpaas")
        })
}
