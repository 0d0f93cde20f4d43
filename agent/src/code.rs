//! Fetching, verifying and unpacking code versions. An archive is accepted only when its
//! SHA-256 matches the node's spec, and unpacked only when no member is absolute or climbs out
//! with `..`. Versions live in `<work>/code/<version>-<digest prefix>`; the current and previous
//! are kept.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use conpaas_crds::v1alpha1::NodeCode;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

/// Largest archive the agent downloads.
const MAX_ARCHIVE_BYTES: usize = 256 << 20;

/// Fetches `code`, checks its digest and unpacks it; returns the version's folder.
pub async fn install(
    client: &Client,
    namespace: &str,
    code: &NodeCode,
    work_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let root = work_dir.join("code");
    // The digest is part of the folder name: a version re-pointed at other bytes is a new install.
    let folder = format!(
        "{}-{}",
        code.version,
        code.sha256.get(..12).unwrap_or(&code.sha256)
    );
    let target = root.join(&folder);
    if target.is_dir() {
        return Ok(target);
    }
    let bytes = fetch(client, namespace, code).await?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != code.sha256 {
        bail!(
            "code version {}: sha256 is {digest}, the spec says {}",
            code.version,
            code.sha256
        );
    }
    let staging = root.join(format!(".staging-{}", code.version));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    unpack(&bytes, &staging).with_context(|| format!("unpack code version {}", code.version))?;
    std::fs::rename(&staging, &target).with_context(|| format!("activate {}", target.display()))?;
    prune(&root, &folder);
    Ok(target)
}

async fn fetch(client: &Client, namespace: &str, code: &NodeCode) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &code.config_map {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get(&key.name)
            .await
            .with_context(|| format!("read ConfigMap {}", key.name))?;
        let bytes = cm
            .binary_data
            .and_then(|d| d.get(&key.key).map(|b| b.0.clone()))
            .or_else(|| {
                cm.data
                    .and_then(|d| d.get(&key.key).map(|s| s.clone().into_bytes()))
            });
        return bytes.with_context(|| format!("ConfigMap {} has no key {}", key.name, key.key));
    }
    let url = code
        .url
        .as_deref()
        .context("code version has neither configMap nor url")?;
    let response = reqwest::get(url)
        .await
        .with_context(|| format!("download {url}"))?
        .error_for_status()?;
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("download {url}"))?;
    if bytes.len() > MAX_ARCHIVE_BYTES {
        bail!("{url}: archive larger than {MAX_ARCHIVE_BYTES} bytes");
    }
    Ok(bytes.to_vec())
}

/// Unpacks a tar (or gzipped tar) archive into `dest`, refusing unsafe member names.
pub fn unpack(bytes: &[u8], dest: &Path) -> anyhow::Result<()> {
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let safe = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            bail!(
                "archive member {} is absolute or leaves the folder",
                path.display()
            );
        }
        if entry.header().entry_type().is_symlink() || entry.header().entry_type().is_hard_link() {
            bail!("archive member {} is a link", path.display());
        }
        entry.unpack_in(dest)?;
    }
    Ok(())
}

/// Keeps the active version and the most recently installed other one.
fn prune(root: &Path, active: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name() != active && !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    others.sort();
    others.pop();
    for (_, path) in others {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(name: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        // set_path refuses `..`, so write the raw name the way a hostile archive would.
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, &b"hi"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_plain_members() {
        let dir = tempfile::tempdir().unwrap();
        unpack(&tar_with("init.sh"), dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("init.sh")).unwrap(), b"hi");
    }

    #[test]
    fn refuses_members_that_leave_the_folder() {
        for name in ["../evil.sh", "/etc/evil.sh", "a/../../evil.sh"] {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack(&tar_with(name), &dir.path().join("x")).unwrap_err();
            assert!(
                err.to_string().contains("leaves the folder"),
                "{name}: {err}"
            );
        }
    }
}
