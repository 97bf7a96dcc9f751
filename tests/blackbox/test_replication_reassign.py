"""Partition reassignment (`broker/src/metadata/reassign.rs`,
`broker/src/handlers/partition_reassignments.rs`), driven by kafkajs's admin client
(`alterPartitionReassignments`, `listPartitionReassignments`) against three brokers
beside a group of three consensus nodes.

A partition of one replica holding acknowledged records is moved to the two other brokers:
while the new replicas copy, ListPartitionReassignments shows the move; once they are in sync
the old replica leaves, one of the new ones leads, every acknowledged record is still there in
order and the partition takes writes again. A target naming a broker that does not exist is
refused with INVALID_REPLICA_ASSIGNMENT, and nothing changes.
"""

import json
import subprocess
import time
from pathlib import Path

import harness

from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_partition_leaders import wait_agreement
from test_replication_followers import replica_broker, start_brokers

TOPIC = "moving"
RECORDS = 2000
MOVE_TIMEOUT_SECONDS = 90
NODE_TIMEOUT_SECONDS = 120

# argv: bootstrap, command ("alter" topic partition replicas-csv | "delete" topic partition
# offset | "list"). Prints one JSON line: the list's topics, or the error kafkajs reports
# ({"error": type}).
KAFKAJS_ADMIN = r"""
const { Kafka, logLevel } = require('kafkajs');
const [bootstrap, cmd, topic, partition, replicas] = process.argv.slice(1);
const kafka = new Kafka({ clientId: 'reassign-test', brokers: bootstrap.split(','),
                          logLevel: logLevel.NOTHING, retry: { retries: 8 } });
(async () => {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (cmd === 'alter') {
      await admin.alterPartitionReassignments({ topics: [{ topic, partitionAssignment: [
        { partition: Number(partition), replicas: replicas.split(',').map(Number) }] }] });
      console.log(JSON.stringify({ ok: true }));
    } else if (cmd === 'delete') {
      // deleteTopicRecords: partition's records below `replicas` (an offset) are deleted.
      await admin.fetchTopicMetadata({ topics: [topic] });
      await admin.deleteTopicRecords({ topic, partitions: [
        { partition: Number(partition), offset: replicas }] });
      console.log(JSON.stringify({ ok: true }));
    } else {
      const r = await admin.listPartitionReassignments({});
      console.log(JSON.stringify(r.topics));
    }
  } catch (e) {
    // Per-partition errors come as an aggregate of one error per partition.
    const type = e.type || (e.errors && e.errors.length && e.errors[0].type) || String(e);
    console.log(JSON.stringify({ error: type }));
  }
  await admin.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def kafkajs_admin(node_env, bootstrap, *args):
    out = subprocess.run(["node", "-e", KAFKAJS_ADMIN, bootstrap, *args], capture_output=True,
                         text=True, timeout=NODE_TIMEOUT_SECONDS, env=node_env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def partition_view(bootstrap):
    """(leader, replicas, sorted isr) of partition 0, from Metadata."""
    md = admin(bootstrap).list_topics(TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
    p = md.topics[TOPIC].partitions[0]
    return p.leader, list(p.replicas), sorted(p.isrs)


def start_cluster(group, broker_factory, extra=()):
    """Three brokers and a topic of one partition with one replica; returns (brokers,
    bootstrap, the replica's broker, the two others)."""
    from confluent_kafka.admin import NewTopic

    brokers, bootstrap = start_brokers(group, broker_factory, extra=extra)
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    a.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    wait_agreement(list(brokers.values()), TOPIC, 1)
    leader, replicas, _ = partition_view(bootstrap)
    assert replicas == [leader], replicas
    return brokers, bootstrap, leader, [n for n in (1, 2, 3) if n != leader]


def produce(bootstrap, values):
    """Produces `values` to partition 0 with acks=all; all of them acknowledged."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked = []
    for v in values:
        p.produce(TOPIC, value=v, partition=0,
                  on_delivery=lambda err, m: acked.append(m.value()) if err is None else None)
    assert p.flush(CLIENT_TIMEOUT_SECONDS * 2) == 0
    assert acked == values


def wait_moved(bootstrap, new):
    """Waits until partition 0 is on exactly `new`, all in sync, led by one of them."""
    harness.poll_until("the move completed", lambda: partition_view(bootstrap),
                       lambda v: v[1] == new and v[2] == new and v[0] in new,
                       MOVE_TIMEOUT_SECONDS)


def consume_all(bootstrap, count):
    from confluent_kafka import TopicPartition

    return harness.read_values(bootstrap, [TopicPartition(TOPIC, 0, 0)], count,
                               CLIENT_TIMEOUT_SECONDS * 2)


def test_a_partition_moves_to_other_brokers_with_every_acknowledged_record(
    group, broker_factory, node_env
):
    brokers, bootstrap, old, new = start_cluster(group, broker_factory)
    before = [f"r{i}".encode() for i in range(RECORDS)]
    produce(bootstrap, before)

    # A broker that does not exist: refused, and the partition stays as it was.
    refused = kafkajs_admin(node_env, bootstrap, "alter", TOPIC, "0", f"{new[0]},99")
    assert refused == {"error": "INVALID_REPLICA_ASSIGNMENT"}, refused
    assert partition_view(bootstrap)[1] == [old]

    moved = kafkajs_admin(node_env, bootstrap, "alter", TOPIC, "0", ",".join(map(str, new)))
    assert moved == {"ok": True}, moved
    # Listed until the new replicas are in sync (it may already be done on a fast machine).
    listed = kafkajs_admin(node_env, bootstrap, "list")
    if listed:
        (t,) = listed
        assert t["name"] == TOPIC, listed
        (part,) = t["partitions"]
        assert sorted(part["addingReplicas"]) == new, listed
        assert part["removingReplicas"] == [old], listed
        assert sorted(part["replicas"]) == [1, 2, 3], listed
    wait_moved(bootstrap, new)
    assert kafkajs_admin(node_env, bootstrap, "list") == []
    # The old replica's log is deleted from its broker's disk (as Kafka's StopReplica does).
    gone = Path(brokers[old].data_dir) / f"{TOPIC}-0"
    deadline = time.monotonic() + MOVE_TIMEOUT_SECONDS
    while gone.exists() or list(gone.parent.glob(f"{TOPIC}-0.*")):
        assert time.monotonic() < deadline, f"{gone} is still there"
        time.sleep(0.2)
    assert (Path(brokers[new[0]].data_dir) / f"{TOPIC}-0").exists()

    # Every acknowledged record, in order, from the new leader; and it takes writes again.
    after = [f"after{i}".encode() for i in range(100)]
    produce(bootstrap, after)
    seen = consume_all(bootstrap, RECORDS + 100)
    assert seen == before + after, (len(seen), seen[:3], seen[-3:])
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


# follower.replication.throttled.rate in the throttled test, and what it copies: about 1 MB
# at 100 kB/s takes about 10 s; the check allows half of that.
THROTTLE_BYTES_PER_SEC = 100_000
THROTTLED_RECORDS = 1000
THROTTLED_VALUE_BYTES = 1000
THROTTLED_MIN_SECONDS = 5.0


def test_a_throttled_move_copies_no_faster_than_its_rate(group, broker_factory, node_env):
    brokers, bootstrap, old, new = start_cluster(
        group, broker_factory,
        ["--override", f"follower.replication.throttled.rate={THROTTLE_BYTES_PER_SEC}"],
    )
    values = [f"{i:08d}".encode() + b"x" * (THROTTLED_VALUE_BYTES - 8)
              for i in range(THROTTLED_RECORDS)]
    produce(bootstrap, values)
    started = time.monotonic()
    moved = kafkajs_admin(node_env, bootstrap, "alter", TOPIC, "0", ",".join(map(str, new)))
    assert moved == {"ok": True}, moved
    # Still copying a moment later: listed with both new replicas adding.
    (t,) = kafkajs_admin(node_env, bootstrap, "list")
    assert sorted(t["partitions"][0]["addingReplicas"]) == new, t
    # The old replica still leads and takes writes meanwhile.
    produce(bootstrap, [b"during"])
    wait_moved(bootstrap, new)
    took = time.monotonic() - started
    print(f"\nthrottled move of {THROTTLED_RECORDS * THROTTLED_VALUE_BYTES} bytes "
          f"at {THROTTLE_BYTES_PER_SEC} B/s took {took:.1f} s")
    assert took >= THROTTLED_MIN_SECONDS, took
    seen = consume_all(bootstrap, THROTTLED_RECORDS + 1)
    assert seen == values + [b"during"], len(seen)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


BALANCE_TOPIC = "spread"
BALANCE_PARTITIONS = 4


def test_a_new_broker_gets_partitions_from_corebus_ctl_balance(group, broker_factory):
    """Two brokers hold a topic; a third joins and gets nothing until asked. `corebus-ctl
    partition balance` proposes moves onto it (printing only), `--execute` starts them, and
    once they are done every broker holds its share, each partition is fully in sync and no
    acknowledged record is lost."""
    from confluent_kafka.admin import NewTopic
    from test_ctl import ctl

    brokers, bootstrap = start_brokers(group, broker_factory, ids=(1, 2))
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    a.create_topics([NewTopic(BALANCE_TOPIC, BALANCE_PARTITIONS, 2)])[BALANCE_TOPIC].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    wait_agreement(list(brokers.values()), BALANCE_TOPIC, BALANCE_PARTITIONS)
    values = [f"v{i}".encode() for i in range(400)]
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(BALANCE_TOPIC, value=v, partition=i % BALANCE_PARTITIONS)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0

    brokers[3] = replica_broker(broker_factory, group, 3)
    wait_view(brokers[3].bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())

    _, out, _ = ctl("--format", "json", "partition", "balance", "--topic", BALANCE_TOPIC,
                    brokers=bootstrap)
    planned = json.loads(out)
    print(f"\nplanned: {planned}")
    assert planned and all(3 in m["to"] for m in planned), planned
    # Only printed: nothing moved yet.
    md = admin(bootstrap).list_topics(BALANCE_TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
    assert all(3 not in m.replicas for m in md.topics[BALANCE_TOPIC].partitions.values())

    _, out, _ = ctl("--format", "json", "partition", "balance", "--topic", BALANCE_TOPIC,
                    "--execute", brokers=bootstrap)
    started = json.loads(out)
    assert [r["result"] for r in started] == ["started"] * len(planned), started

    deadline = time.monotonic() + MOVE_TIMEOUT_SECONDS
    while True:
        md = admin(bootstrap).list_topics(BALANCE_TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
        parts = md.topics[BALANCE_TOPIC].partitions.values()
        held = {n: sum(n in m.replicas for m in parts) for n in (1, 2, 3)}
        done = all(len(m.replicas) == 2 and sorted(m.isrs) == sorted(m.replicas)
                   and m.leader in m.replicas for m in parts)
        if done and max(held.values()) - min(held.values()) <= 1:
            break
        assert time.monotonic() < deadline, f"never balanced: {held} {[vars(m) for m in parts]}"
        time.sleep(0.3)
    _, out, _ = ctl("--format", "json", "partition", "reassignments", brokers=bootstrap)
    assert json.loads(out) == [], out
    # The plan is now empty, and every record is still there.
    _, out, _ = ctl("--format", "json", "partition", "balance", "--topic", BALANCE_TOPIC,
                    brokers=bootstrap)
    assert json.loads(out) == [], out
    from confluent_kafka import TopicPartition

    every = [TopicPartition(BALANCE_TOPIC, q, 0) for q in range(BALANCE_PARTITIONS)]
    seen = harness.read_values(bootstrap, every, len(values), CLIENT_TIMEOUT_SECONDS * 2)
    assert sorted(seen) == sorted(values), len(seen)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


def test_a_move_after_delete_records_copies_from_the_leaders_log_start(
    group, broker_factory, node_env
):
    """The leader's log start is past 0 (DeleteRecords, as retention would do): the new
    replicas have nothing below it to fetch, start at the leader's log start, catch up, and
    the move completes with every record above it."""
    brokers, bootstrap, old, new = start_cluster(group, broker_factory)
    values = [f"d{i}".encode() for i in range(RECORDS)]
    produce(bootstrap, values)
    deleted = kafkajs_admin(node_env, bootstrap, "delete", TOPIC, "0", str(RECORDS // 2))
    assert deleted == {"ok": True}, deleted
    moved = kafkajs_admin(node_env, bootstrap, "alter", TOPIC, "0", ",".join(map(str, new)))
    assert moved == {"ok": True}, moved
    wait_moved(bootstrap, new)
    after = [b"after-delete"]
    produce(bootstrap, after)
    seen = consume_all(bootstrap, RECORDS // 2 + 1)
    assert seen == values[RECORDS // 2:] + after, (len(seen), seen[:2])
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
