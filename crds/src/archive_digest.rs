//! The SHA-256 that names an archive, computed the same way wherever one is read or written:
//! `cpsctl` hashing an archive before it uploads it and checking one it downloads, the agent
//! checking what it fetched and naming what it saves. Both stream, so no archive is ever whole in
//! memory.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The hex SHA-256 and the length of the file at `path`, read in 1 MiB blocks.
pub fn of_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&block[..n]);
        size += n as u64;
    }
}

/// Why a [`HashingFile`] refused a chunk.
#[derive(Debug)]
pub enum WriteError {
    /// The chunk would take the file past its limit; nothing of it was written.
    TooLarge {
        limit: u64,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::TooLarge { limit } => write!(f, "archive larger than {limit} bytes"),
            WriteError::Io(e) => write!(f, "write the archive: {e}"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::Io(e) => Some(e),
            WriteError::TooLarge { .. } => None,
        }
    }
}

/// A file being written chunk by chunk while its digest and length are kept, refusing more than
/// a limit (a download never fills the disk past what its reader allowed).
pub struct HashingFile {
    file: std::fs::File,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl HashingFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<Self> {
        Ok(Self {
            file: std::fs::File::create(path)?,
            hasher: Sha256::new(),
            written: 0,
            limit,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        let after = self.written + chunk.len() as u64;
        if after > self.limit {
            return Err(WriteError::TooLarge { limit: self.limit });
        }
        self.file.write_all(chunk).map_err(WriteError::Io)?;
        self.hasher.update(chunk);
        self.written = after;
        Ok(())
    }

    /// Flushes the file; its hex SHA-256 and length.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        self.file.flush()?;
        Ok((hex::encode(self.hasher.finalize()), self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn a_file_written_in_chunks_has_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let mut file = HashingFile::create(&path, 5).unwrap();
        file.write(b"hel").unwrap();
        file.write(b"lo").unwrap();
        assert_eq!(file.finish().unwrap(), (HELLO_SHA256.to_string(), 5));
        assert_eq!(of_file(&path).unwrap(), (HELLO_SHA256.to_string(), 5));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
    }

    #[test]
    fn a_chunk_past_the_limit_is_refused_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let mut file = HashingFile::create(&path, 4).unwrap();
        file.write(b"hel").unwrap();
        assert!(matches!(
            file.write(b"lo"),
            Err(WriteError::TooLarge { limit: 4 })
        ));
        assert_eq!(file.written(), 3);
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"hel");
    }
}
