//! An archive written in one or more pieces: each piece streams into the same multipart write
//! while the digest and the size are kept up to date, so an archive of tens of GiB can arrive
//! over many short requests (each within the API server's request timeout) and still never be
//! whole in memory. It takes its digest's name only at [`Upload::finish`].

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::{Error, Stored, archive_path};

/// An archive being written.
pub struct Upload {
    objects: Arc<dyn ObjectStore>,
    staging: Path,
    writer: WriteMultipart,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({}, {} bytes)", self.staging, self.size)
    }
}

impl Upload {
    pub(crate) async fn begin(objects: Arc<dyn ObjectStore>, limit: u64) -> Result<Self, Error> {
        let staging = Path::from(format!("uploads/{}", uuid::Uuid::new_v4()));
        let upload = objects.put_multipart(&staging).await?;
        Ok(Self {
            objects,
            staging,
            writer: WriteMultipart::new(upload),
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bounds the whole archive to `limit` bytes from now on (the room left can shrink while
    /// pieces arrive).
    pub fn limit_to(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Appends what `body` streams. After an error the upload holds an unknown prefix of the
    /// body: abort it.
    pub async fn append<S, E>(&mut self, body: S) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Body(e.to_string()))?;
            self.size += chunk.len() as u64;
            if self.size > self.limit {
                return Err(Error::TooLarge { limit: self.limit });
            }
            self.hasher.update(&chunk);
            // Bounded buffering: at most a few parts in flight, whatever the archive's size.
            self.writer.wait_for_capacity(4).await?;
            self.writer.put(chunk);
        }
        Ok(())
    }

    /// Completes the archive; with `expected`, its digest must match or nothing is kept.
    pub async fn finish(self, expected: Option<&str>) -> Result<Stored, Error> {
        let Self {
            objects,
            staging,
            writer,
            hasher,
            size,
            ..
        } = self;
        writer.finish().await?;
        let sha256 = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && expected != sha256
        {
            let _ = objects.delete(&staging).await;
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        objects.rename(&staging, &archive_path(&sha256)?).await?;
        tracing::info!(%sha256, size, "archive stored");
        Ok(Stored { sha256, size })
    }

    /// Drops what was written.
    pub async fn abort(self) {
        let _ = self.writer.abort().await;
    }
}
