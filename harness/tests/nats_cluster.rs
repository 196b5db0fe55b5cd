//! NatsCluster: three routed JetStream nodes that take an R3 stream and survive a node loss.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use citypulse_harness::{create_stream_patiently, wait_for, NatsCluster};

#[tokio::test]
async fn replicated_stream_survives_the_loss_of_one_node() {
    let mut cluster = NatsCluster::start();
    assert_eq!(cluster.urls().len(), 3);
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    let js = jetstream::new(client);
    let config = stream::Config {
        name: "READINGS".to_owned(),
        subjects: vec!["readings.>".to_owned()],
        num_replicas: 3,
        ..Default::default()
    };
    let mut created = create_stream_patiently(&js, config).await;
    let info = created.info().await.unwrap();
    let cluster_info = info.cluster.clone().unwrap();
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");
    // Interest in a new stream's subjects reaches the other nodes over routes a moment later,
    // and a stream elects a new leader after a node loss: a cluster test polls, never assumes.
    acked_publish(&js, "readings.d01").await;

    cluster.kill_node(0);
    acked_publish(&js, "readings.d02").await;

    cluster.restart_node(0);
    assert!(cluster.node(0).is_running());
    let node0 = jetstream::new(async_nats::connect(cluster.node(0).url()).await.unwrap());
    wait_for(
        Duration::from_secs(20),
        "READINGS to hold both messages",
        || async {
            let Ok(mut stream) = node0.get_stream("READINGS").await else {
                return false;
            };
            matches!(stream.info().await, Ok(info) if info.state.messages >= 2)
        },
    )
    .await;
}

/// Publishes until one publish is acked (a retry may store a second copy: count with `>=`).
async fn acked_publish(js: &jetstream::Context, subject: &'static str) {
    wait_for(
        Duration::from_secs(20),
        &format!("an acked publish to {subject}"),
        || async {
            match js.publish(subject, "reading".into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await;
}
