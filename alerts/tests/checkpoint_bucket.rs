//! The evaluator checkpoint's KV bucket against a real nats-server: it stays the same size
//! however many checkpoints are written (two alternating slots), and a checkpoint written in the
//! earlier per-generation layout still loads and is cleaned up by the next save.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_alerts::nats::Checkpoints;
use citypulse_harness::NatsServer;

async fn bucket_messages(js: &jetstream::Context, bucket: &str) -> u64 {
    let mut s = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    s.info().await.unwrap().state.messages
}

/// A checkpoint of `n` bytes, distinct per `tag`.
fn state(tag: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_stays_bounded_however_many_checkpoints_are_written() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut cp = Checkpoints::open(&js, "cp", 1).await.unwrap();
    // 60 checkpoints of one to three 512 KiB chunks (the earlier layout left a purge marker
    // under a new key for every chunk of every checkpoint: about 120 entries here).
    let mut last = Vec::new();
    for g in 0..60u8 {
        last = state(g, 1_000 + usize::from(g % 3) * 600_000);
        cp.save(&last).await.unwrap();
    }
    let entries = bucket_messages(&js, "cp").await;
    assert!(entries <= 2 * 3 + 1, "{entries} entries in the bucket");
    let mut fresh = Checkpoints::open(&js, "cp", 1).await.unwrap();
    assert_eq!(fresh.load().await.unwrap(), Some(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_generation_checkpoint_loads_and_the_next_save_purges_it() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // As v0.2.0 left it: chunks under state.<generation>.<i>, a manifest without a layout.
    let mut cp = Checkpoints::open(&js, "cp", 1).await.unwrap();
    let kv = js.get_key_value("cp").await.unwrap();
    kv.put("state.7.0", "hello ".into()).await.unwrap();
    kv.put("state.7.1", "world".into()).await.unwrap();
    kv.put(
        "manifest",
        r#"{"generation":7,"chunks":2,"bytes":11}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(cp.load().await.unwrap(), Some(b"hello world".to_vec()));

    cp.save(b"next").await.unwrap();
    let mut fresh = Checkpoints::open(&js, "cp", 1).await.unwrap();
    assert_eq!(fresh.load().await.unwrap(), Some(b"next".to_vec()));
    for key in ["state.7.0", "state.7.1"] {
        assert_eq!(kv.get(key).await.unwrap(), None, "{key} purged");
    }
}
