//! How much of the artifact store a namespace holds, against its quota: the archives its
//! Services name or keep (versions, saved data, the saves their annotation lists), the ones its
//! callers uploaded lately that nothing names yet (kept for the collector's grace, so uploading
//! unnamed archives cannot get round the quota), and its uploads in progress. Archives shared by
//! several of its Services count once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
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

/// Per namespace, the turn in which an upload that was stored is checked against the quota and
/// noted: uploads side by side each measured the same room when they began, and checked one
/// at a time after their bytes are in, together they cannot take it twice over. Only that
/// short check waits its turn, never a body being read (a request waiting while holding its
/// body unread would hold up the others' bodies on the API server's shared connection).
#[derive(Default)]
pub struct Turns {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    /// Waits for `namespace`'s turn; it lasts as long as the guard.
    pub async fn take(&self, namespace: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .expect("the upload turns' lock")
            .entry(namespace.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// Bytes `namespace` holds in the store (its uploads in progress aside).
pub async fn used(api: &CodeApi, namespace: &str) -> Result<u64, conpaas_artifacts::Error> {
    held(api, namespace).await.map(|(total, _)| total)
}

/// Bytes `namespace` holds in the store (its uploads in progress aside), and the archives
/// counted.
pub async fn held(
    api: &CodeApi,
    namespace: &str,
) -> Result<(u64, BTreeSet<String>), conpaas_artifacts::Error> {
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
        total = total.saturating_add(api.sizes.of(&api.store, &sha256).await?);
        counted.insert(sha256);
    }
    Ok((total, counted))
}

/// Archives' sizes, as the store told them: an archive is named by its digest, so its size
/// never changes, and the quota is checked on every piece of an upload without asking the
/// store again.
#[derive(Default)]
pub struct Sizes {
    known: Mutex<HashMap<String, u64>>,
}

impl Sizes {
    /// An archive's size (0 when the store lacks it, or the digest is not one).
    async fn of(&self, store: &Store, sha256: &str) -> Result<u64, conpaas_artifacts::Error> {
        if let Some(size) = self.known.lock().expect("the sizes' lock").get(sha256) {
            return Ok(*size);
        }
        match store.size(sha256).await {
            Ok(Some(size)) => {
                let mut known = self.known.lock().expect("the sizes' lock");
                known.insert(sha256.to_string(), size);
                Ok(size)
            }
            Ok(None) | Err(conpaas_artifacts::Error::BadDigest(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
