"""Partition leadership lives in the replicated metadata (`broker/src/metadata`): each partition
names its replicas, its leader, its leader epoch and its ISR by broker id, as Kafka's
`PartitionRecord` does, and no core index. Real processes: a group of three consensus nodes,
brokers `--roles broker` on it, confluent-kafka clients, the tree read and written with the
`consensus-session` example.

- Two brokers on one group, one with `--shards 1` and one with `--shards 2`: a new topic's
  partitions are spread over both; Metadata from either gives the same leader, replicas and
  ISR for every partition; every partition is written through a client bootstrapped with one
  broker and read, all of it, through a client bootstrapped with the other (and as a consumer
  group, whose coordinator is the leader of its offsets partition); the broker that does not
  lead a partition answers NOT_LEADER_OR_FOLLOWER; no partition's segment file is open in a
  broker that does not lead it, or twice in one that does. The second broker restarted with
  `--shards 1` still serves its partitions with every record.
- Upgrade: a topic node of tree format 1 (a shard index per partition, what the previous
  release wrote) is adopted by the broker at its next start, rewritten as format 2, and its
  records are served; the same for a data directory of the release before the consensus
  tree (a local metadata file of format 1, imported into the tree at start-up).
"""

import json
import struct
import time
from collections import Counter

import harness
from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    VIEW_TIMEOUT_SECONDS,
    admin,
    consume_all,
    embedded_addr,
    get_node,
    group,
    group_broker,
    produce,
    wait_view,
)
from test_consensus_sessions import serving_group, session_binary
from test_shard_ownership import open_segment_files

TOPIC = "spread"
PARTITIONS = 8
RECORDS = 8000
NOT_LEADER_OR_FOLLOWER = 6


def leaders(bootstrap, topic):
    """{partition: (leader, replicas, isr)} from one broker's Metadata, or None if the topic
    is not there yet."""
    md = admin(bootstrap).list_topics(topic=topic, timeout=CLIENT_TIMEOUT_SECONDS)
    t = md.topics.get(topic)
    if t is None or t.error is not None or len(t.partitions) == 0:
        return None
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in t.partitions.values()}


def wait_agreement(brokers, topic, partitions):
    deadline = time.monotonic() + VIEW_TIMEOUT_SECONDS
    while True:
        views = [leaders(b.bootstrap, topic) for b in brokers]
        if all(v is not None and len(v) == partitions for v in views) and all(v == views[0] for v in views):
            return views[0]
        assert time.monotonic() < deadline, f"brokers disagree on {topic}: {views}"
        time.sleep(0.2)


def list_offsets_raw(port, topic, partition):
    """ListOffsets v1 for the latest offset of one partition, sent to this broker itself;
    returns (error code, offset)."""
    body = struct.pack(">ii", -1, 1) + struct.pack(">h", len(topic)) + topic.encode()
    body += struct.pack(">iiq", 1, partition, -1)
    reply = harness.kafka_request(port, 2, 1, body, client=b"leaders-test")
    count, name_len = struct.unpack(">ih", reply[:6])
    assert count == 1, reply
    parts, p, code, _ts, offset = struct.unpack(">iihqq", reply[6 + name_len : 32 + name_len])
    assert parts == 1 and p == partition, reply
    return code, offset


def partition_of(path, topic):
    return int(path.split(f"/{topic}-", 1)[1].split("/", 1)[0])


def test_two_brokers_agree_on_leaders_and_serve_every_partition_through_either(group, broker_factory):
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    first = group_broker(broker_factory, group, 7)
    wait_view(first.bootstrap, [7], 7)
    second = broker_factory(
        extra_args=["--roles", "broker", "--node-id", "8", "--consensus-peers", group.peers],
        shards=2,
    )
    for b in (first, second):
        wait_view(b.bootstrap, [7, 8], 7)
    a = admin(second.bootstrap)
    a.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    view = wait_agreement([first, second], TOPIC, PARTITIONS)
    led = {p: v[0] for p, v in view.items()}
    assert sorted(Counter(led.values())) == [7, 8], view
    assert all(v[1] == [v[0]] and v[2] == [v[0]] for v in view.values()), view
    # The tree says the same, with no core index.
    node = json.loads(get_node(group.addr(1), f"/corebus/topics/{TOPIC}")["data"])
    assert node["version"] == 2, node
    assert [p["leader"] for p in node["partitions"]] == [led[p] for p in range(PARTITIONS)], node
    assert "shard" not in json.dumps(node), node

    # Written through a client that knows only the first broker...
    p = Producer({"bootstrap.servers": first.bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(RECORDS):
        p.produce(TOPIC, str(i).encode(), partition=i % PARTITIONS,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors[:5]
    # ...and read, all of it, through one that knows only the second, as a group.
    got = consume_all(second.bootstrap, TOPIC, RECORDS, group="through-the-other", commit=True)
    assert sorted(got, key=int) == [str(i) for i in range(RECORDS)]

    per_partition = RECORDS // PARTITIONS
    for part, leader in led.items():
        mine, other = (first, second) if leader == 7 else (second, first)
        assert list_offsets_raw(mine.port, TOPIC, part) == (0, per_partition)
        code, _ = list_offsets_raw(other.port, TOPIC, part)
        assert code == NOT_LEADER_OR_FOLLOWER, (part, leader, code)

    for b, node_id in ((first, 7), (second, 8)):
        files = open_segment_files(b.process.pid, b.data_dir, TOPIC)
        assert files, f"broker {node_id} has no segment open"
        assert max(files.values()) == 1, files
        assert {partition_of(f, TOPIC) for f in files} <= {p for p, l in led.items() if l == node_id}, files

    # The second broker with one shard instead of two: its partitions served, nothing lost.
    assert second.stop() == 0, second.log_tail()
    second = broker_factory(
        data_dir=second.data_dir,
        extra_args=["--roles", "broker", "--node-id", "8", "--consensus-peers", group.peers],
        shards=1,
    )
    wait_view(first.bootstrap, [7, 8], 7)
    got = consume_all(first.bootstrap, TOPIC, RECORDS)
    assert sorted(got, key=int) == [str(i) for i in range(RECORDS)]


def assert_adopted(node, topic_id, partitions):
    """A topic node rewritten in format 2 with broker 1 as the only replica and leader."""
    assert node["version"] == 2 and node["id"] == topic_id, node
    adopted = {"replicas": [1], "leader": 1, "leader_epoch": 0, "isr": [1], "partition_epoch": 0}
    assert node["partitions"] == [adopted] * partitions, node


def create_topic(b, name, partitions):
    from confluent_kafka.admin import NewTopic

    # Kept in a variable: a collected AdminClient cancels its futures.
    a = admin(b.bootstrap)
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=CLIENT_TIMEOUT_SECONDS)


def set_node(addr, path, data):
    import subprocess

    out = subprocess.run(
        [str(session_binary()), "set", "--server", addr, "--path", path, "--data", data],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def legacy_topic(broker_factory, data, partitions, count):
    """A single node on `data` with the topic "legacy" of `partitions` partitions holding
    `count` records; returns (the running broker, the values, the topic id)."""
    b = broker_factory(data_dir=data)
    create_topic(b, "legacy", partitions)
    values = [f"old-{i}" for i in range(count)]
    produce(b.bootstrap, "legacy", values)
    topic_id = json.loads(get_node(embedded_addr(b), "/corebus/topics/legacy")["data"])["id"]
    return b, values, topic_id


def test_a_topic_node_of_tree_format_1_is_adopted_and_its_records_served(broker_factory, tmp_path):
    data = tmp_path / "data"
    b, values, topic_id = legacy_topic(broker_factory, data, 3, 300)
    # What the previous release wrote: a shard index per partition.
    addr = embedded_addr(b)
    path = "/corebus/topics/legacy"
    set_node(addr, path, json.dumps({"version": 1, "id": topic_id, "partitions": [0, 1, 0]}))
    assert b.stop() == 0, b.log_tail()

    b = broker_factory(data_dir=data)
    assert_adopted(json.loads(get_node(embedded_addr(b), path)["data"]), topic_id, 3)
    assert "adopted" in b.log_path.read_text(errors="replace")
    assert sorted(consume_all(b.bootstrap, "legacy", len(values))) == sorted(values)
    produce(b.bootstrap, "legacy", ["new"])


def test_a_local_metadata_file_of_format_1_is_imported_adopted_and_its_records_served(broker_factory, tmp_path):
    import shutil

    data = tmp_path / "data"
    b, values, topic_id = legacy_topic(broker_factory, data, 2, 100)
    assert b.stop() == 0, b.log_tail()
    # The data directory as the release before the consensus tree left it: the partitions'
    # logs and a local metadata file of format 1 (a shard index per partition), no tree.
    shutil.rmtree(data / "consensus")
    old = {
        "format_version": 1, "cluster_id": "0123456789abcdef0123456789abcdef", "epoch": 3,
        "topics": {"legacy": {"name": "legacy", "id": topic_id,
                              "partitions": [{"shard": 0}, {"shard": 1}], "configs": {}}},
        "next_producer_id": 5000,
    }
    (data / "corebus-metadata.json").write_text(json.dumps(old))

    b = broker_factory(data_dir=data)
    assert (data / "corebus-metadata.json.imported").exists()
    assert_adopted(json.loads(get_node(embedded_addr(b), "/corebus/topics/legacy")["data"]), topic_id, 2)
    assert sorted(consume_all(b.bootstrap, "legacy", len(values))) == sorted(values)
    assert leaders(b.bootstrap, "legacy") == {0: (1, [1], [1]), 1: (1, [1], [1])}
