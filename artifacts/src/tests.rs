use super::*;

fn chunks(bytes: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
    bytes
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

fn body(bytes: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    futures::stream::iter(chunks(bytes, 64 << 10))
}

async fn read_all(store: &Store, sha256: &str) -> Result<Vec<u8>, Error> {
    let (_, mut stream) = store.get(sha256).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn folder_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("artifacts").display());
    (dir, Store::from_url(&url).unwrap())
}

/// Files under `root`, relative, sorted.
fn files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn an_archive_goes_in_by_stream_and_comes_out_verified() {
    let (dir, store) = folder_store();
    let bytes = pattern(12 << 20);
    let stored = store.put(body(&bytes), 64 << 20, None).await.unwrap();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    assert_eq!(
        stored,
        Stored {
            sha256: sha256.clone(),
            size: bytes.len() as u64
        }
    );
    assert_eq!(read_all(&store, &sha256).await.unwrap(), bytes);
    assert_eq!(store.size(&sha256).await.unwrap(), Some(bytes.len() as u64));

    // The same bytes again are the same archive: one object, no leftovers.
    let again = store
        .put(body(&bytes), 64 << 20, Some(&sha256))
        .await
        .unwrap();
    assert_eq!(again, stored);
    assert_eq!(
        files(&dir.path().join("artifacts")),
        vec![format!("sha256/{sha256}")]
    );
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sha256, sha256);

    store.delete(&sha256).await.unwrap();
    assert!(matches!(store.get(&sha256).await, Err(Error::NotFound(_))));
    store.delete(&sha256).await.unwrap();
}

#[tokio::test]
async fn a_refused_upload_leaves_nothing_behind() {
    let (dir, store) = folder_store();
    let bytes = pattern(3 << 20);

    let too_large = store.put(body(&bytes), 1 << 20, None).await;
    assert!(
        matches!(too_large, Err(Error::TooLarge { limit }) if limit == 1 << 20),
        "{too_large:?}"
    );

    let wrong = "0".repeat(64);
    let mismatch = store.put(body(&bytes), 64 << 20, Some(&wrong)).await;
    assert!(
        matches!(&mismatch, Err(Error::DigestMismatch { expected, .. }) if *expected == wrong),
        "{mismatch:?}"
    );

    // A client that goes away half way.
    let mut broken = chunks(&bytes, 64 << 10);
    broken.truncate(10);
    broken.push(Err(std::io::Error::other("connection reset")));
    let truncated = store
        .put(futures::stream::iter(broken), 64 << 20, None)
        .await;
    assert!(
        matches!(&truncated, Err(Error::Body(m)) if m.contains("connection reset")),
        "{truncated:?}"
    );

    assert_eq!(files(&dir.path().join("artifacts")), Vec::<String>::new());
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_corrupted_archive_fails_its_download() {
    let (dir, store) = folder_store();
    let bytes = pattern(1 << 20);
    let stored = store.put(body(&bytes), 64 << 20, None).await.unwrap();
    let file = dir.path().join("artifacts/sha256").join(&stored.sha256);
    let mut corrupted = bytes.clone();
    corrupted[1000] ^= 1;
    std::fs::write(&file, &corrupted).unwrap();
    let read = read_all(&store, &stored.sha256).await;
    assert!(
        matches!(&read, Err(Error::DigestMismatch { expected, .. }) if *expected == stored.sha256),
        "{read:?}"
    );
}

#[tokio::test]
async fn names_that_are_not_digests_are_refused() {
    let store = Store::from_url("memory://").unwrap();
    for name in ["../../etc/passwd", "ABC", &"a".repeat(63), &"g".repeat(64)] {
        assert!(
            matches!(store.get(name).await, Err(Error::BadDigest(_))),
            "{name}"
        );
    }
    assert!(matches!(
        Store::from_url("ftp://x"),
        Err(Error::Config { .. })
    ));
}

#[tokio::test]
async fn uploads_that_never_completed_are_swept_once_old() {
    let (dir, store) = folder_store();
    let uploads = dir.path().join("artifacts/uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("left-behind"), b"half an archive").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        store.sweep_uploads(now - 3600).await.unwrap(),
        0,
        "young: kept"
    );
    assert!(uploads.join("left-behind").exists());
    assert_eq!(store.sweep_uploads(now + 10).await.unwrap(), 1);
    assert!(!uploads.join("left-behind").exists());
}

/// moto on a free loopback port (stopped when dropped) with the bucket `code`.
#[cfg(feature = "s3")]
fn moto_s3() -> conpaas_cloud::moto::Moto {
    use std::io::{Read, Write};
    let moto = conpaas_cloud::moto::Moto::start().expect("moto");
    let host = moto.endpoint.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(host).unwrap();
    // Path-style CreateBucket; moto takes unsigned requests.
    write!(
        socket,
        "PUT /code HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "create bucket: {answer}"
    );
    moto
}

#[cfg(feature = "s3")]
#[tokio::test]
async fn an_s3_bucket_holds_archives_as_the_folder_does() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = moto_s3();
    let options = [
        ("aws_endpoint", moto.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
    ];
    let store = Store::from_url_with("s3://code/artifacts", &options).unwrap();

    // Larger than one multipart part, streamed in and verified on the way out.
    let bytes = pattern(12 << 20);
    let stored = store.put(body(&bytes), 64 << 20, None).await.unwrap();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    assert_eq!(stored.sha256, sha256);
    assert_eq!(read_all(&store, &sha256).await.unwrap(), bytes);
    assert_eq!(store.size(&sha256).await.unwrap(), Some(bytes.len() as u64));
    assert!(store.written(&sha256).await.unwrap().is_some());

    // A refused upload leaves nothing, and the listing shows the one archive.
    let wrong = "0".repeat(64);
    let mismatch = store
        .put(body(&bytes[..1 << 20]), 64 << 20, Some(&wrong))
        .await;
    assert!(
        matches!(mismatch, Err(Error::DigestMismatch { .. })),
        "{mismatch:?}"
    );
    let listed = store.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|l| &l.sha256).collect::<Vec<_>>(),
        vec![&sha256]
    );
    assert_eq!(store.sweep_uploads(i64::MAX).await.unwrap(), 0);

    store.delete(&sha256).await.unwrap();
    assert!(matches!(store.get(&sha256).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn an_archive_arrives_in_pieces_and_is_read_back_in_pieces() {
    let (dir, store) = folder_store();
    let bytes = pattern(9 << 20);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut upload = store.begin(64 << 20).await.unwrap();
    for piece in bytes.chunks(4 << 20) {
        upload.append(body(piece)).await.unwrap();
    }
    assert_eq!(upload.size(), bytes.len() as u64);
    let stored = upload.finish(Some(&sha256)).await.unwrap();
    assert_eq!(stored.sha256, sha256);
    assert_eq!(read_all(&store, &sha256).await.unwrap(), bytes);

    let mut back = Vec::new();
    let mut from = 0;
    while from < bytes.len() as u64 {
        let (size, mut piece) = store
            .get_piece(&sha256, from, from + (3 << 20))
            .await
            .unwrap();
        assert_eq!(size, bytes.len() as u64);
        while let Some(chunk) = piece.next().await {
            back.extend_from_slice(&chunk.unwrap());
        }
        from = back.len() as u64;
    }
    assert_eq!(back, bytes);

    // Pieces past the limit, or a whole that is not what was announced, leave nothing.
    let mut upload = store.begin(5 << 20).await.unwrap();
    upload.append(body(&bytes[..4 << 20])).await.unwrap();
    let refused = upload.append(body(&bytes[4 << 20..])).await;
    assert!(
        matches!(refused, Err(Error::TooLarge { .. })),
        "{refused:?}"
    );
    upload.abort().await;
    let mut upload = store.begin(64 << 20).await.unwrap();
    upload.append(body(&bytes[..1 << 20])).await.unwrap();
    let wrong = upload.finish(Some(&sha256)).await;
    assert!(
        matches!(wrong, Err(Error::DigestMismatch { .. })),
        "{wrong:?}"
    );
    assert_eq!(
        files(&dir.path().join("artifacts")),
        vec![format!("sha256/{sha256}")]
    );
}

#[tokio::test]
async fn an_archive_is_held_by_the_namespaces_it_was_stored_for_until_deleted() {
    let (_dir, store) = folder_store();
    let stored = store
        .put(body(b"tenant a's code"), 1 << 20, None)
        .await
        .unwrap();
    let sha = stored.sha256.as_str();
    assert!(!store.held_by(sha, "tenant-a").await.unwrap());
    store.grant(sha, "tenant-a").await.unwrap();
    store.grant(sha, "tenant-a").await.unwrap();
    assert!(store.held_by(sha, "tenant-a").await.unwrap());
    assert!(!store.held_by(sha, "tenant-b").await.unwrap());
    let holders = store.holders().await.unwrap();
    assert_eq!(holders[sha], ["tenant-a".to_string()].into());
    assert_eq!(
        store.list().await.unwrap().len(),
        1,
        "holders are not archives"
    );
    for bad in ["../x", "Tenant", "", "a/b"] {
        assert!(
            matches!(store.grant(sha, bad).await, Err(Error::BadHolder(_))),
            "{bad}"
        );
    }
    store.delete(sha).await.unwrap();
    assert!(!store.held_by(sha, "tenant-a").await.unwrap());
    assert!(store.holders().await.unwrap().is_empty());
}
