//! Encoding, and the store against a real consensus node of one over TCP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use corebus_consensus::client::Client;
use corebus_consensus::runtime::{ConsensusNode, RuntimeConfig};
use corebus_consensus::types::NodeId;
use glommio::{LocalExecutorBuilder, Placement};

use super::*;

#[test]
fn values_round_trip_and_bad_ones_are_errors() {
    let t = TopicMeta {
        name: "orders".into(),
        id: TopicId::random(),
        partitions: vec![PartitionMeta::led_by(1), PartitionMeta::led_by(4)],
        configs: BTreeMap::new(),
    };
    let path = topic_path("orders");
    let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    let back = decode_topic("orders", &path, &topic_value(&t), configs.clone()).unwrap();
    assert_eq!(back.id, t.id);
    assert_eq!(back.partitions, t.partitions);
    assert_eq!(back.configs, configs);
    let c: ConfigNode = decode("/c", &config_value(&configs)).unwrap();
    assert_eq!(c.configs, configs);
    assert_eq!(
        decode_producer_ids(&producer_ids_value(7000)).unwrap(),
        7000
    );

    let refused = |bytes: &[u8]| match decode_topic("orders", &path, bytes, BTreeMap::new()) {
        Err(MetadataError::BadNode { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        other => panic!("{other:?}"),
    };
    assert!(refused(b"").contains("not a corebus value"));
    assert!(refused(b"{ torn").contains("not a corebus value"));
    let newer = format!(r#"{{"version":3,"id":"{}","partitions":[]}}"#, t.id.0);
    assert!(refused(newer.as_bytes()).contains("format version 3"));
    assert!(refused(br#"{"version":0}"#).contains("format version 0"));
    let nil = r#"{"version":1,"id":"00000000-0000-0000-0000-000000000000","partitions":[0]}"#;
    assert!(refused(nil.as_bytes()).contains("nil"));
    let empty = format!(r#"{{"version":1,"id":"{}","partitions":[]}}"#, t.id.0);
    assert!(refused(empty.as_bytes()).contains("without partitions"));
    let bad_shard = format!(r#"{{"version":1,"id":"{}","partitions":[-1]}}"#, t.id.0);
    refused(bad_shard.as_bytes());
    // Format 2 refuses impossible partitions, naming which.
    let no_replicas = format!(
        r#"{{"version":2,"id":"{}","partitions":[{{"replicas":[],"leader":-1,"leader_epoch":0,"isr":[],"partition_epoch":0}}]}}"#,
        t.id.0
    );
    assert!(refused(no_replicas.as_bytes()).contains("partition 0 has no replicas"));
    let foreign_leader = format!(
        r#"{{"version":2,"id":"{}","partitions":[{{"replicas":[1],"leader":2,"leader_epoch":0,"isr":[1],"partition_epoch":0}}]}}"#,
        t.id.0
    );
    assert!(refused(foreign_leader.as_bytes()).contains("not one of the replicas"));
    assert!(decode_producer_ids(br#"{"version":1,"next":-5}"#).is_err());
    assert!(decode_producer_ids(br#"{"version":1}"#).is_err());
}

#[test]
fn a_format_1_topic_node_reads_as_unassigned_partitions() {
    let id = TopicId::random();
    let v1 = format!(r#"{{"version":1,"id":"{}","partitions":[0,3,1]}}"#, id.0);
    let t = decode_topic("old", "/corebus/topics/old", v1.as_bytes(), BTreeMap::new()).unwrap();
    assert_eq!(t.id, id);
    assert_eq!(t.partitions, vec![PartitionMeta::unassigned(); 3]);
    // Written back, it is format 2 and names no shard.
    let written = String::from_utf8(topic_value(&t)).unwrap();
    assert!(written.contains(r#""version":2"#), "{written}");
    assert!(!written.contains("shard"), "{written}");
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A consensus node of one in `dir`, serving.
fn node(dir: &std::path::Path, addr: SocketAddr) -> ConsensusNode {
    let members = BTreeMap::from([(NodeId(1), addr)]);
    let n =
        ConsensusNode::start(RuntimeConfig::new(NodeId(1), members, addr, dir.join("c"))).unwrap();
    assert!(n.wait_serving(Duration::from_secs(20)));
    n
}

fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

fn topic(name: &str, partitions: usize) -> TopicMeta {
    TopicMeta {
        name: name.into(),
        id: TopicId::random(),
        partitions: vec![PartitionMeta::led_by(1); partitions],
        configs: BTreeMap::new(),
    }
}

#[test]
fn changes_are_in_the_tree_and_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let n = node(dir.path(), addr);
    let (a, b) = (topic("a", 2), topic("b", 1));
    let (a2, b2) = (a.clone(), b.clone());
    let first = on_executor(async move || {
        let client = metadata_client(vec![addr], None).unwrap();
        let store = ConsensusStore::new(
            client,
            ConsensusStore::load(&metadata_client(vec![addr], None).unwrap())
                .await
                .unwrap(),
        );
        let fresh = store.current();
        assert!(fresh.topics.is_empty());
        assert_eq!(fresh.next_producer_id, 1000);
        store
            .apply(vec![
                MetadataCommand::CreateTopic(a2.clone()),
                MetadataCommand::CreateTopic(b2.clone()),
                MetadataCommand::AllocateProducerIds { count: 1000 },
            ])
            .await
            .unwrap();
        let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        store
            .apply(vec![
                MetadataCommand::SetTopicConfigs { id: a2.id, configs },
                MetadataCommand::AddPartitions {
                    id: a2.id,
                    added: vec![PartitionMeta::led_by(2)],
                },
                MetadataCommand::DeleteTopic { id: b2.id },
            ])
            .await
            .unwrap();
        // A refused change writes nothing.
        assert!(matches!(
            store
                .apply(vec![MetadataCommand::CreateTopic(topic("a", 1))])
                .await,
            Err(MetadataError::TopicExists(_))
        ));
        let raw = store.client().children(TOPICS).await.unwrap();
        assert_eq!(raw, vec!["a".to_string()]);
        assert!(
            store
                .client()
                .exists(&topic_config_path("b"))
                .await
                .unwrap()
                .is_none()
        );
        (*store.current()).clone()
    });
    // Stopped and started again: the log carries everything.
    n.stop().unwrap();
    let n = node(dir.path(), addr);
    let again = on_executor(async move || {
        ConsensusStore::load(&metadata_client(vec![addr], None).unwrap())
            .await
            .unwrap()
            .image
    });
    assert_eq!(again.cluster_id, first.cluster_id);
    assert_eq!(again.topics, first.topics);
    let a_back = again.topic_by_id(a.id).unwrap();
    assert_eq!(a_back.partitions.len(), 3);
    assert_eq!(a_back.configs["retention.ms"], "1000");
    assert!(again.topic("b").is_none());
    assert_eq!(again.next_producer_id, 2000);
    n.stop().unwrap();
}

/// The tree of the node at `addr`, read through a client of its own.
async fn load_tree(addr: SocketAddr) -> LoadedTree {
    ConsensusStore::load(&metadata_client(vec![addr], None).unwrap())
        .await
        .unwrap()
}

async fn block(s: &ConsensusStore) -> std::ops::Range<i64> {
    let img = s
        .apply(vec![MetadataCommand::AllocateProducerIds { count: 1000 }])
        .await
        .unwrap();
    img.next_producer_id - 1000..img.next_producer_id
}

#[test]
fn producer_id_blocks_retry_a_stale_counter_and_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let n = node(dir.path(), addr);
    on_executor(async move || {
        let loaded = load_tree(addr).await;
        let one = ConsensusStore::new(metadata_client(vec![addr], None).unwrap(), loaded.clone());
        let two = ConsensusStore::new(metadata_client(vec![addr], None).unwrap(), loaded);
        let mut blocks = vec![block(&one).await];
        // `two` still holds the version `one` just moved past: its CAS fails, it re-reads.
        blocks.push(block(&two).await);
        blocks.push(block(&one).await);
        blocks.push(block(&two).await);
        for (i, x) in blocks.iter().enumerate() {
            for y in &blocks[i + 1..] {
                assert!(x.end <= y.start || y.end <= x.start, "{x:?} overlaps {y:?}");
            }
        }
        let stored = ConsensusStore::load(&Client::new(ClientConfig::new(vec![addr])).unwrap())
            .await
            .unwrap();
        assert_eq!(stored.image.next_producer_id, 5000);
    });
    n.stop().unwrap();
}

#[test]
fn an_unreachable_group_is_an_error_within_the_timeout() {
    let addr = free_addr();
    let started = std::time::Instant::now();
    let outcome = on_executor(async move || {
        let client = metadata_client(vec![addr], None).unwrap();
        ConsensusStore::load(&client).await.map(|_| ())
    });
    assert!(
        matches!(outcome, Err(MetadataError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(METADATA_STORE_TIMEOUT_MS * 2));
}

#[test]
fn a_local_image_is_imported_with_its_ids_and_counter() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let n = node(dir.path(), addr);
    let mut file = MetadataImage::new_cluster();
    for t in [topic("x", 2), topic("y", 1)] {
        file.apply(MetadataCommand::CreateTopic(t)).unwrap();
    }
    file.next_producer_id = 7000;
    let expected = file.clone();
    let imported = on_executor(async move || {
        let client = metadata_client(vec![addr], None).unwrap();
        let store = ConsensusStore::new(
            client,
            ConsensusStore::load(&metadata_client(vec![addr], None).unwrap())
                .await
                .unwrap(),
        );
        store.import(&file).await.unwrap();
        assert!(
            store
                .client()
                .exists(IMPORT_MARKER)
                .await
                .unwrap()
                .is_none()
        );
        let fresh = ConsensusStore::load(&metadata_client(vec![addr], None).unwrap())
            .await
            .unwrap();
        (fresh.image, store.current().epoch)
    });
    let (image, epoch) = imported;
    assert!(epoch > 0);
    assert_eq!(image.cluster_id, expected.cluster_id);
    assert_eq!(image.topics, expected.topics);
    assert_eq!(image.next_producer_id, 7000);
    n.stop().unwrap();
}

#[test]
fn only_the_controller_changes_topics_and_a_replaced_one_is_fenced() {
    use crate::cluster::election::{Claim, claim};

    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let n = node(dir.path(), addr);
    on_executor(async move || {
        let loaded = load_tree(addr).await;
        let session = || metadata_client(vec![addr], Some(2_000)).unwrap();
        let one = ConsensusStore::new(session(), loaded.clone());
        let two = ConsensusStore::new(session(), loaded);
        let Claim::Won {
            epoch,
            fence_version,
        } = claim(one.client(), 1).await.unwrap()
        else {
            panic!("the first claim of a fresh tree wins");
        };
        assert_eq!(epoch, 1);
        // Asking again is idempotent: still ours, same fence.
        assert_eq!(
            claim(one.client(), 1).await.unwrap(),
            Claim::Won {
                epoch,
                fence_version
            }
        );
        one.set_role(WriterRole::Controller { fence_version });
        assert_eq!(
            claim(two.client(), 2).await.unwrap(),
            Claim::Held {
                node_id: 1,
                epoch: 1
            }
        );
        two.set_role(WriterRole::Follower);
        one.apply(vec![MetadataCommand::CreateTopic(topic("a", 1))])
            .await
            .unwrap();
        // A follower refuses topic changes but still takes producer ids.
        assert!(matches!(
            two.apply(vec![MetadataCommand::CreateTopic(topic("b", 1))])
                .await,
            Err(MetadataError::NotController)
        ));
        let ids = block(&two).await;
        assert!(ids.start >= 1000);
        // The controller's session ends; the other claims and bumps the epoch.
        one.client().close_session().await.unwrap();
        let Claim::Won {
            epoch: two_epoch,
            fence_version: two_fence,
        } = claim(two.client(), 2).await.unwrap()
        else {
            panic!("the controller node went with its session");
        };
        assert_eq!(two_epoch, 2);
        two.set_role(WriterRole::Controller {
            fence_version: two_fence,
        });
        two.reload().await.unwrap();
        two.apply(vec![MetadataCommand::CreateTopic(topic("b", 1))])
            .await
            .unwrap();
        // The old controller, unaware, through a client of its own: fenced, nothing written.
        let stale = ConsensusStore::new(metadata_client(vec![addr], None).unwrap(), one.loaded());
        stale.set_role(WriterRole::Controller { fence_version });
        assert!(matches!(
            stale
                .apply(vec![MetadataCommand::CreateTopic(topic("c", 1))])
                .await,
            Err(MetadataError::NotController)
        ));
        assert_eq!(stale.role(), WriterRole::Follower);
        let mut names = two.client().children(TOPICS).await.unwrap();
        names.sort();
        assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
    });
    n.stop().unwrap();
}
