//! The artifact store: code archives kept by their SHA-256 in an object store (a local folder by
//! default, a bucket in production), written and read as streams, never whole in memory. A write
//! lands under a temporary name and takes its digest's name only when complete, so a reader never
//! sees half an archive; every read is checked against the digest again, so a corrupted object
//! fails the download instead of reaching a node.
//!
//! Layout: `sha256/<hex>` for archives, `uploads/<uuid>` while one is being written, and
//! `holders/<hex>/<namespace>` (empty) for each namespace an archive was stored for. The store
//! is shared by every tenant and an archive's name is only its digest: who may read an archive
//! is who stored it (see [`Store::grant`]), not whoever learns the digest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

mod upload;
pub use upload::Upload;

/// What went wrong with the store or an archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the archive is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive's sha256 is {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("no archive with sha256 {0}")]
    NotFound(String),
    #[error("{0:?} is not a sha256 (64 lowercase hex digits)")]
    BadDigest(String),
    #[error("{0:?} is not a namespace name (a DNS label)")]
    BadHolder(String),
    #[error("reading the upload: {0}")]
    Body(String),
    #[error("artifact store URL {url:?}: {reason}")]
    Config { url: String, reason: String },
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
}

/// An archive in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

/// The store.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.objects)
    }
}

/// True for 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn archive_path(sha256: &str) -> Result<Path, Error> {
    if !is_sha256(sha256) {
        return Err(Error::BadDigest(sha256.to_string()));
    }
    Ok(Path::from(format!("sha256/{sha256}")))
}

/// True for a DNS label (what a Kubernetes namespace's name is): no `/`, no `..`.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn holder_path(sha256: &str, namespace: &str) -> Result<Path, Error> {
    if !is_sha256(sha256) {
        return Err(Error::BadDigest(sha256.to_string()));
    }
    if !is_dns_label(namespace) {
        return Err(Error::BadHolder(namespace.to_string()));
    }
    Ok(Path::from(format!("holders/{sha256}/{namespace}")))
}

impl Store {
    /// A store from a URL: `file:///absolute/folder` (created if missing), `memory://`, or (with
    /// the `s3` feature) `s3://bucket[/prefix]`, configured from the `AWS_*` environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for another
    /// S3-compatible service, `AWS_ALLOW_HTTP=true` for a plain-http one).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        Self::from_url_with(url, &[])
    }

    /// Like [`Store::from_url`], with S3 options (`aws_endpoint`, `aws_region`, ...) that take
    /// precedence over the environment's.
    pub fn from_url_with(url: &str, options: &[(&str, &str)]) -> Result<Self, Error> {
        let config = |reason: &str| Error::Config {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| config(&e.to_string()))?;
        let objects: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let folder = parsed
                    .to_file_path()
                    .map_err(|()| config("not an absolute path"))?;
                std::fs::create_dir_all(&folder).map_err(|e| config(&e.to_string()))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(
                    folder,
                )?)
            }
            "memory" => Arc::new(object_store::memory::InMemory::new()),
            #[cfg(feature = "s3")]
            "s3" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|e: object_store::Error| config(&e.to_string()))?;
                    builder = builder.with_config(key, *value);
                }
                let prefix = parsed.path().trim_matches('/');
                let bucket: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
                if prefix.is_empty() {
                    bucket
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(bucket, prefix))
                }
            }
            other => {
                return Err(config(&format!(
                    "unknown scheme {other:?} (file, memory{})",
                    if cfg!(feature = "s3") { ", s3" } else { "" }
                )));
            }
        };
        Ok(Self { objects })
    }

    /// Writes the archive `body` streams, at most `limit` bytes; with `expected`, the digest
    /// must match. Nothing stays in the store when the body fails, is too large or mismatches.
    pub async fn put<S, E>(
        &self,
        body: S,
        limit: u64,
        expected: Option<&str>,
    ) -> Result<Stored, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut upload = self.begin(limit).await?;
        match upload.append(body).await {
            Ok(()) => upload.finish(expected).await,
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Starts an archive of at most `limit` bytes that arrives in pieces.
    pub async fn begin(&self, limit: u64) -> Result<Upload, Error> {
        Upload::begin(self.objects.clone(), limit).await
    }

    /// When the archive was written (Unix seconds), if the store has it. An archive uploaded
    /// again is written again.
    pub async fn written(&self, sha256: &str) -> Result<Option<i64>, Error> {
        Ok(self.describe(sha256).await?.map(|a| a.written))
    }

    /// The archive's size and write time, if the store has it: one lookup.
    pub async fn describe(&self, sha256: &str) -> Result<Option<Listed>, Error> {
        match self.objects.head(&archive_path(sha256)?).await {
            Ok(meta) => Ok(Some(Listed {
                sha256: sha256.to_string(),
                size: meta.size,
                written: meta.last_modified.timestamp(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes uploads that never completed (a client or the process went away between the
    /// write and the rename) and are older than `before` (Unix seconds); returns how many.
    pub async fn sweep_uploads(&self, before: i64) -> Result<usize, Error> {
        let mut stale = Vec::new();
        let mut entries = self.objects.list(Some(&Path::from("uploads")));
        while let Some(meta) = entries.next().await {
            let meta = meta?;
            if meta.last_modified.timestamp() < before {
                stale.push(meta.location);
            }
        }
        for location in &stale {
            match self.objects.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stale.len())
    }

    /// The archive's size, if the store has it.
    pub async fn size(&self, sha256: &str) -> Result<Option<u64>, Error> {
        Ok(self.describe(sha256).await?.map(|a| a.size))
    }

    /// The archive's size and a stream of its bytes; the stream ends with
    /// [`Error::DigestMismatch`] instead of its last chunk's success when the bytes are not what
    /// their name says.
    pub async fn get(
        &self,
        sha256: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, Error>>), Error> {
        let result = match self.objects.get(&archive_path(sha256)?).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound(sha256.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let expected = sha256.to_string();
        let verified = verify(result.into_stream(), expected);
        Ok((size, verified.boxed()))
    }

    /// The archive's whole size and a stream of its bytes `from..to` (`to` is cut to the
    /// size). A piece cannot be checked against the digest: whoever reads it in pieces checks
    /// the whole (an agent does).
    pub async fn get_piece(
        &self,
        sha256: &str,
        from: u64,
        to: u64,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, Error>>), Error> {
        let options = object_store::GetOptions::new().with_range(Some(from..to));
        let result = match self.objects.get_opts(&archive_path(sha256)?, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound(sha256.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        Ok((
            size,
            result.into_stream().map(|c| c.map_err(Error::from)).boxed(),
        ))
    }

    /// Removes an archive (absent is fine), and then the record of who holds it.
    pub async fn delete(&self, sha256: &str) -> Result<(), Error> {
        self.remove(&archive_path(sha256)?).await?;
        let prefix = Path::from(format!("holders/{sha256}"));
        let holders: Vec<_> = self
            .objects
            .list(Some(&prefix))
            .map(|meta| meta.map(|m| m.location))
            .collect()
            .await;
        for location in holders {
            self.remove(&location?).await?;
        }
        Ok(())
    }

    async fn remove(&self, location: &Path) -> Result<(), Error> {
        match self.objects.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that the archive was stored for `namespace` (an upload, a git version, the data
    /// a node saved): that namespace may read it. Recording twice is fine.
    pub async fn grant(&self, sha256: &str, namespace: &str) -> Result<(), Error> {
        let location = holder_path(sha256, namespace)?;
        self.objects
            .put(&location, Bytes::new().into())
            .await
            .map(|_| ())
            .map_err(Error::from)
    }

    /// Whether the archive was stored for `namespace`.
    pub async fn held_by(&self, sha256: &str, namespace: &str) -> Result<bool, Error> {
        match self.objects.head(&holder_path(sha256, namespace)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every archive's holders (archives no one holds are absent): one listing.
    pub async fn holders(&self) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut entries = self.objects.list(Some(&Path::from("holders")));
        while let Some(meta) = entries.next().await {
            let meta = meta?;
            let parts: Vec<_> = meta.location.parts().collect();
            if let [_, sha256, namespace] = parts.as_slice()
                && is_sha256(sha256.as_ref())
            {
                out.entry(sha256.as_ref().to_string())
                    .or_default()
                    .insert(namespace.as_ref().to_string());
            }
        }
        Ok(out)
    }

    /// Every archive with its size and when it was written.
    pub async fn list(&self) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        let mut entries = self.objects.list(Some(&Path::from("sha256")));
        while let Some(meta) = entries.next().await {
            let meta = meta?;
            let Some(sha256) = meta.location.filename().filter(|n| is_sha256(n)) else {
                continue;
            };
            out.push(Listed {
                sha256: sha256.to_string(),
                size: meta.size,
                written: meta.last_modified.timestamp(),
            });
        }
        Ok(out)
    }
}

/// An archive as [`Store::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub sha256: String,
    pub size: u64,
    /// Unix seconds.
    pub written: i64,
}

/// Passes `bytes` through, hashing them; at the end, an error if the digest is not `expected`.
fn verify(
    bytes: BoxStream<'static, object_store::Result<Bytes>>,
    expected: String,
) -> impl Stream<Item = Result<Bytes, Error>> {
    futures::stream::unfold(
        (bytes, Some(Sha256::new()), expected),
        |(mut bytes, hasher, expected)| async move {
            let mut hasher = hasher?;
            match bytes.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk), (bytes, Some(hasher), expected)))
                }
                Some(Err(e)) => Some((Err(e.into()), (bytes, None, expected))),
                None => {
                    let actual = hex::encode(hasher.finalize());
                    if actual == expected {
                        None
                    } else {
                        let e = Error::DigestMismatch { expected, actual };
                        Some((Err(e), (bytes, None, String::new())))
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests;
