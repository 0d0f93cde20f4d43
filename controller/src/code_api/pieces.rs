//! Uploads that arrive in pieces, one request each (see [`conpaas_crds::code_api`]): the open
//! ones, each under its caller, Service and announced digest, so that no one else can add to
//! it. They live in this process only: after a restart an uploader's next piece is refused and
//! it starts again from byte 0. Bounded in number; one untouched for [`IDLE`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conpaas_artifacts::{Error as StoreError, Store, Stored, Upload};
use futures::Stream;

/// How many uploads may be open at once (each holds a few MiB of buffers), in all and per
/// namespace (so that one tenant cannot hold them all).
const MAX_OPEN: usize = 32;
const MAX_OPEN_PER_NAMESPACE: usize = 8;
/// How long an upload waits for its next piece.
pub const IDLE: Duration = Duration::from_secs(600);

/// Whose upload of what.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub user: String,
    pub namespace: String,
    pub service: String,
    pub sha256: String,
}

/// Where a piece left its upload.
#[derive(Debug)]
pub enum Outcome {
    /// Bytes received so far.
    Received(u64),
    /// The last piece arrived and the archive is stored.
    Stored(Stored),
}

/// Why a piece was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no upload of sha256:{sha256} is open at byte {offset}{}; start again from offset 0", .held.map(|h| format!(" (it holds {h} bytes)")).unwrap_or_default())]
    Conflict {
        sha256: String,
        offset: u64,
        held: Option<u64>,
    },
    #[error(
        "too many uploads are open already (at most {MAX_OPEN}, {MAX_OPEN_PER_NAMESPACE} per namespace); try again later"
    )]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Open {
    upload: Option<Upload>,
    touched: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Open>>;

/// The open uploads.
#[derive(Default)]
pub struct Pieces {
    open: Mutex<HashMap<Key, Slot>>,
    /// Bytes each open upload received, readable while a piece streams.
    received: Mutex<HashMap<Key, u64>>,
}

impl Pieces {
    /// Appends `body` at `offset` of `key`'s upload (offset 0 starts it), the whole archive
    /// bounded to `limit` bytes; with `last`, stores the archive if its digest is the announced
    /// one. A failed piece drops the upload.
    #[allow(clippy::too_many_arguments)]
    pub async fn piece<S, E>(
        &self,
        store: &Store,
        limit: u64,
        key: Key,
        offset: u64,
        last: bool,
        body: S,
    ) -> Result<Outcome, Refused>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let conflict = |held| Refused::Conflict {
            sha256: key.sha256.clone(),
            offset,
            held,
        };
        let slot = self.slot(&key, offset).ok_or_else(|| {
            if offset == 0 {
                Refused::TooMany
            } else {
                conflict(None)
            }
        })?;
        let mut open = slot.lock().await;
        if offset == 0 && open.upload.is_none() {
            match store.begin(limit).await {
                Ok(upload) => open.upload = Some(upload),
                Err(e) => {
                    self.close(&key, &slot);
                    return Err(e.into());
                }
            }
        }
        let Some(upload) = open.upload.as_mut() else {
            return Err(conflict(None));
        };
        if upload.size() != offset {
            return Err(conflict(Some(upload.size())));
        }
        upload.limit_to(limit);
        let appended = upload.append(body).await;
        let received = upload.size();
        self.received
            .lock()
            .expect("the uploads' sizes")
            .insert(key.clone(), received);
        open.touched = Instant::now();
        if appended.is_ok() && !last {
            return Ok(Outcome::Received(received));
        }
        let upload = open.upload.take().expect("checked above");
        self.close(&key, &slot);
        match appended {
            Ok(()) => Ok(Outcome::Stored(upload.finish(Some(&key.sha256)).await?)),
            Err(e) => {
                upload.abort().await;
                Err(e.into())
            }
        }
    }

    /// The slot of `key` for a piece at `offset`: a fresh one at 0 (an earlier upload of the
    /// same archive by the same caller is dropped), the open one otherwise; `None` when there
    /// is none or too many are open.
    fn slot(&self, key: &Key, offset: u64) -> Option<Slot> {
        let mut open = self.open.lock().expect("the uploads' lock");
        drop_idle(&mut open);
        self.received
            .lock()
            .expect("the uploads' sizes")
            .retain(|k, _| open.contains_key(k));
        if offset != 0 {
            return open.get(key).cloned();
        }
        let in_namespace = open.keys().filter(|k| k.namespace == key.namespace).count();
        if !open.contains_key(key)
            && (open.len() >= MAX_OPEN || in_namespace >= MAX_OPEN_PER_NAMESPACE)
        {
            return None;
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Open {
            upload: None,
            touched: Instant::now(),
        }));
        if let Some(earlier) = open.insert(key.clone(), slot.clone()) {
            abort_later(earlier);
        }
        Some(slot)
    }

    /// Forgets `slot` if it is still `key`'s.
    fn close(&self, key: &Key, slot: &Slot) {
        let mut open = self.open.lock().expect("the uploads' lock");
        if open.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            open.remove(key);
            self.received
                .lock()
                .expect("the uploads' sizes")
                .remove(key);
        }
    }

    /// Bytes the open uploads of `namespace` other than `except` received so far.
    pub fn open_bytes(&self, namespace: &str, except: Option<&Key>) -> u64 {
        self.received
            .lock()
            .expect("the uploads' sizes")
            .iter()
            .filter(|(k, _)| k.namespace == namespace && Some(*k) != except)
            .map(|(_, size)| size)
            .sum()
    }

    /// How many uploads are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().expect("the uploads' lock").len()
    }
}

/// Drops the uploads that waited for their next piece longer than [`IDLE`] (those busy with a
/// piece now are not idle).
fn drop_idle(open: &mut HashMap<Key, Slot>) {
    let idle: Vec<Key> = open
        .iter()
        .filter(|(_, slot)| slot.try_lock().is_ok_and(|o| o.touched.elapsed() > IDLE))
        .map(|(key, _)| key.clone())
        .collect();
    for key in idle {
        if let Some(slot) = open.remove(&key) {
            tracing::info!(?key, "dropped an upload whose next piece never came");
            abort_later(slot);
        }
    }
}

fn abort_later(slot: Slot) {
    tokio::spawn(async move {
        if let Some(upload) = slot.lock().await.upload.take() {
            upload.abort().await;
        }
    });
}

#[cfg(test)]
mod tests;
