use sha2::{Digest, Sha256};

use super::*;

fn body(bytes: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    futures::stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))])
}

fn key(user: &str, sha256: &str) -> Key {
    Key {
        user: user.into(),
        namespace: "ns".into(),
        service: "db".into(),
        sha256: sha256.into(),
    }
}

#[tokio::test]
async fn pieces_in_order_make_the_archive_and_a_gap_or_a_stranger_is_refused() {
    let store = Store::from_url("memory://").unwrap();
    let pieces = Pieces::default();
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&bytes));
    let mine = key("node-a", &sha);
    let put = |k: Key, offset: usize, len: usize, last: bool| {
        let piece = body(&bytes[offset..offset + len]);
        let (pieces, store) = (&pieces, &store);
        async move {
            pieces
                .piece(store, 1 << 20, k, offset as u64, last, piece)
                .await
        }
    };

    let first = put(mine.clone(), 0, 1000, false).await.unwrap();
    assert!(matches!(first, Outcome::Received(1000)), "{first:?}");
    // Another caller cannot add to it, and a piece that skips bytes is refused without harm.
    let stranger = put(key("node-b", &sha), 1000, 1000, false).await;
    assert!(matches!(
        stranger,
        Err(Refused::Conflict { held: None, .. })
    ));
    let gap = put(mine.clone(), 2000, 1000, true).await;
    assert!(
        matches!(
            gap,
            Err(Refused::Conflict {
                held: Some(1000),
                ..
            })
        ),
        "{gap:?}"
    );
    put(mine.clone(), 1000, 1000, false).await.unwrap();
    let done = put(mine.clone(), 2000, 1000, true).await.unwrap();
    let Outcome::Stored(stored) = done else {
        panic!("{done:?}")
    };
    assert_eq!((stored.sha256.as_str(), stored.size), (sha.as_str(), 3000));
    assert_eq!(store.size(&sha).await.unwrap(), Some(3000));
    assert_eq!(pieces.len(), 0);

    // A whole that is not the announced digest is not stored, and the upload is closed.
    let other = key("node-a", &"0".repeat(64));
    put(other.clone(), 0, 1000, false).await.unwrap();
    let wrong = put(other.clone(), 1000, 2000, true).await;
    assert!(
        matches!(
            wrong,
            Err(Refused::Store(StoreError::DigestMismatch { .. }))
        ),
        "{wrong:?}"
    );
    assert_eq!(pieces.len(), 0);
    assert_eq!(store.size(&"0".repeat(64)).await.unwrap(), None);
}

#[tokio::test]
async fn starting_again_from_zero_replaces_the_open_upload_and_opens_are_bounded() {
    let store = Store::from_url("memory://").unwrap();
    let pieces = Pieces::default();
    let sha = "a".repeat(64);
    for round in 0..3 {
        let got = pieces
            .piece(&store, 1 << 20, key("n", &sha), 0, false, body(b"abc"))
            .await
            .unwrap();
        assert!(
            matches!(got, Outcome::Received(3)),
            "round {round}: {got:?}"
        );
    }
    assert_eq!(pieces.len(), 1);
    // One namespace cannot hold every slot; others still get theirs, up to the total.
    let open = |namespace: String, user: String| {
        let (pieces, store, sha) = (&pieces, &store, &sha);
        async move {
            let mut k = key(&user, sha);
            k.namespace = namespace;
            pieces.piece(store, 1 << 20, k, 0, false, body(b"x")).await
        }
    };
    for i in 1..MAX_OPEN_PER_NAMESPACE {
        open("ns".into(), format!("n{i}")).await.unwrap();
    }
    let refused = open("ns".into(), "late".into()).await;
    assert!(matches!(refused, Err(Refused::TooMany)), "{refused:?}");
    for i in MAX_OPEN_PER_NAMESPACE..MAX_OPEN {
        open(format!("other-{}", i % 4), format!("n{i}"))
            .await
            .unwrap();
    }
    let refused = open("fresh".into(), "late".into()).await;
    assert!(matches!(refused, Err(Refused::TooMany)), "{refused:?}");
}
