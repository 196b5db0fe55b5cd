//! The KV checkpoint store against a real nats-server: large checkpoints are chunked and read
//! back whole, a torn checkpoint is refused, and a second writer of the same partition is
//! detected instead of interleaving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_harness::NatsServer;
use citypulse_processors::checkpoint;
use citypulse_processors::nats::{checkpoint_bucket, CheckpointStore, StoreError};

fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[tokio::test]
async fn large_checkpoints_are_chunked_and_read_back_whole() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = checkpoint_bucket(&js, 1).await.unwrap();
    // A 40 KiB message limit: 24 KiB chunks.
    let mut store = CheckpointStore::new(kv.clone(), 3, 40 * 1024);
    assert_eq!(store.load().await.unwrap(), None, "no checkpoint yet");
    for (len, salt) in [(100_000, 1), (10, 2), (250_000, 3), (60_000, 4)] {
        let b = bytes(len, salt);
        store.save(&bytes::Bytes::from(b.clone())).await.unwrap();
        let mut fresh = CheckpointStore::new(kv.clone(), 3, 40 * 1024);
        assert_eq!(
            fresh.load().await.unwrap().as_deref(),
            Some(&b[..]),
            "{len} bytes"
        );
    }
    // The current checkpoint (60 000 bytes) spans three chunks; damage one.
    let mut fresh = CheckpointStore::new(kv.clone(), 3, 40 * 1024);
    fresh.load().await.unwrap();
    let manifest = checkpoint::Manifest::decode(&kv.get("p3").await.unwrap().unwrap()).unwrap();
    assert_eq!(manifest.chunks, 3);
    let key = checkpoint::chunk_key(3, manifest.slot, 1);
    kv.put(&key, bytes(10, 9).into()).await.unwrap();
    let err = CheckpointStore::new(kv.clone(), 3, 40 * 1024)
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { partition: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_writer_of_the_same_partition_is_detected() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = checkpoint_bucket(&js, 1).await.unwrap();
    let mut first = CheckpointStore::new(kv.clone(), 0, 1024 * 1024);
    first.load().await.unwrap();
    first
        .save(&bytes::Bytes::from_static(b"one"))
        .await
        .unwrap();
    // Another instance takes the partition over: it loads, then writes.
    let mut second = CheckpointStore::new(kv.clone(), 0, 1024 * 1024);
    assert_eq!(second.load().await.unwrap().as_deref(), Some(&b"one"[..]));
    second
        .save(&bytes::Bytes::from_static(b"two"))
        .await
        .unwrap();
    // The first one's next write is refused rather than silently overwriting.
    let err = first
        .save(&bytes::Bytes::from_static(b"three"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { partition: 0, .. }),
        "{err}"
    );
    let mut reader = CheckpointStore::new(kv.clone(), 0, 1024 * 1024);
    assert_eq!(reader.load().await.unwrap().as_deref(), Some(&b"two"[..]));
    // A store that never loaded may not create over an existing checkpoint either.
    let mut blind = CheckpointStore::new(kv, 0, 1024 * 1024);
    assert!(matches!(
        blind.save(&bytes::Bytes::from_static(b"four")).await,
        Err(StoreError::Fenced { .. })
    ));
}
