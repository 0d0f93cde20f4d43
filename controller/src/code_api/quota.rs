//! How much of the artifact store a namespace holds, against its quota: the archives its
//! Services name or keep (versions, saved data, the saves their annotation lists), the ones its
//! callers uploaded lately that nothing names yet (kept for the collector's grace, so uploading
//! unnamed archives cannot get round the quota), and its uploads in progress. Archives shared by
//! several of its Services count once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conpaas_artifacts::Store;
use conpaas_reconcilers::caches::readable;

use super::CodeApi;

/// An archive uploaded: digest, size, when.
type Uploaded = (String, u64, Instant);

/// Archives uploaded lately, by namespace.
#[derive(Default)]
pub struct Recent {
    uploads: Mutex<HashMap<String, Vec<Uploaded>>>,
}

impl Recent {
    /// Notes an archive `namespace` uploaded (forgetting those older than `grace`).
    pub fn note(&self, namespace: &str, sha256: &str, size: u64, grace: Duration) {
        let mut uploads = self.uploads.lock().expect("the recent uploads' lock");
        uploads.retain(|_, list| {
            list.retain(|(_, _, at)| at.elapsed() < grace);
            !list.is_empty()
        });
        uploads.entry(namespace.to_string()).or_default().push((
            sha256.to_string(),
            size,
            Instant::now(),
        ));
    }

    /// The archives `namespace` uploaded within `grace`, by digest.
    fn of(&self, namespace: &str, grace: Duration) -> Vec<(String, u64)> {
        let mut uploads = self.uploads.lock().expect("the recent uploads' lock");
        let Some(list) = uploads.get_mut(namespace) else {
            return Vec::new();
        };
        list.retain(|(_, _, at)| at.elapsed() < grace);
        list.iter()
            .map(|(sha, size, _)| (sha.clone(), *size))
            .collect()
    }
}

/// Bytes `namespace` holds in the store (its uploads in progress aside).
pub async fn used(api: &CodeApi, namespace: &str) -> Result<u64, conpaas_artifacts::Error> {
    let mut counted = BTreeSet::new();
    let mut total = 0u64;
    for (sha256, size) in api.recent.of(namespace, api.gc_grace) {
        if counted.insert(sha256) {
            total = total.saturating_add(size);
        }
    }
    let kept: Vec<String> = api
        .ctx
        .caches
        .services_in(namespace)
        .iter()
        .filter_map(readable)
        .flat_map(|s| s.kept_archives())
        .collect();
    for sha256 in kept {
        if counted.contains(&sha256) {
            continue;
        }
        total = total.saturating_add(size_of(&api.store, &sha256).await?);
        counted.insert(sha256);
    }
    Ok(total)
}

/// An archive's size (0 when the store lacks it, or the digest is not one).
async fn size_of(store: &Store, sha256: &str) -> Result<u64, conpaas_artifacts::Error> {
    match store.size(sha256).await {
        Ok(size) => Ok(size.unwrap_or(0)),
        Err(conpaas_artifacts::Error::BadDigest(_)) => Ok(0),
        Err(e) => Err(e),
    }
}
