"""High watermark checkpoints (`broker/src/storage/hw_checkpoint.rs`): each shard writes the
high watermark of every partition it holds to `high-watermarks.<shard>` in the data directory
every `replica.high.watermark.checkpoint.interval.ms` and at a clean stop, and a restarted
replica opens its replicated logs at those values instead of at the log start.

Three brokers (replication on) beside a group of three consensus nodes, a topic of 4
partitions with replication factor 3, acks=all records in every partition:
- broker 1 runs 2 shards: once the records are in, its two files together hold every
  partition's high watermark (each partition in one file), and after a clean stop too;
- broker 2, killed with SIGKILL, left files holding them (written by the ticker, not at stop);
- broker 1 started again with 1 shard: the file of the shard it no longer runs goes, the
  other holds every partition (read from both at start);
- both restarted brokers rejoin every in-sync set, and every acknowledged record is read once.
"""

import struct
import time
from pathlib import Path

from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_consensus_sessions import serving_group
from test_replication_failover import create_in_sync, read_partition, wait_for, all_in_sync
from test_replication_followers import replica_broker

TOPIC = "failover"  # the failover helpers' topic
PARTITIONS = 3
PER_PARTITION = 200
INTERVAL = ["--override", "replica.high.watermark.checkpoint.interval.ms=200"]
SETTLE_SECONDS = 60


def checkpoints(data_dir):
    """{shard: {(topic id bytes, partition): high watermark}} of the files in `data_dir`
    (the layout of `hw_checkpoint.rs`: "CBHW", version, reserved, count, crc32c, entries)."""
    files = {}
    for f in Path(data_dir).glob("high-watermarks.*"):
        suffix = f.name.split(".", 1)[1]
        if not suffix.isdigit():
            continue
        b = f.read_bytes()
        assert b[:4] == b"CBHW", f"{f}: {b[:16]!r}"
        version, _reserved, count, _crc = struct.unpack_from(">HHII", b, 4)
        assert version == 1, version
        assert len(b) % 4096 == 0 and len(b) >= 16 + 28 * count, (f, len(b), count)
        entries = {}
        for i in range(count):
            topic, partition, hw = struct.unpack_from(">16siq", b, 16 + 28 * i)
            entries[(topic, partition)] = hw
        files[int(suffix)] = entries
    return files


def topic_id(bootstrap):
    from confluent_kafka import TopicCollection

    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    d = a.describe_topics(TopicCollection([TOPIC]))[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    u = d.topic_id
    return (u.get_most_significant_bits().to_bytes(8, "big", signed=True)
            + u.get_least_significant_bits().to_bytes(8, "big", signed=True))


def of_topic(files, tid):
    """{partition: (shard, high watermark)} of topic `tid`; a partition in two files fails."""
    out = {}
    for shard, entries in files.items():
        for (t, p), hw in entries.items():
            if t == tid:
                assert p not in out, f"partition {p} in the files of shards {out[p][0]} and {shard}"
                out[p] = (shard, hw)
    return out


def wait_checkpointed(data_dir, tid, want):
    """Polls until the files in `data_dir` hold high watermark `want` for every partition."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        got = of_topic(checkpoints(data_dir), tid)
        if {p: hw for p, (_, hw) in got.items()} == {p: want for p in range(PARTITIONS)}:
            return got
        assert time.monotonic() < deadline, f"checkpoints of {data_dir}: {got}, wanted {want}"
        time.sleep(0.2)


def produce(bootstrap, prefix):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    errors = []
    values = {q: [f"{prefix}-{q}-{i}" for i in range(PER_PARTITION)] for q in range(PARTITIONS)}
    for q, vs in values.items():
        for v in vs:
            p.produce(TOPIC, v.encode(), partition=q,
                      on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS * 2) == 0
    assert errors == [], errors[:3]
    return values


def test_replicas_checkpoint_their_high_watermarks_and_reopen_at_them(group, broker_factory):
    serving_group(group)
    brokers = {
        1: replica_broker(broker_factory, group, 1, shards=2, extra=INTERVAL),
        2: replica_broker(broker_factory, group, 2, extra=INTERVAL),
        3: replica_broker(broker_factory, group, 3, extra=INTERVAL),
    }
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    create_in_sync(brokers.values(), bootstrap, TOPIC, PARTITIONS)
    tid = topic_id(bootstrap)
    first = produce(bootstrap, "a")

    # Every replica's files reach the high watermark; broker 1's partitions are spread over
    # its two shards' files.
    for n in (1, 2, 3):
        got = wait_checkpointed(brokers[n].data_dir, tid, PER_PARTITION)
        if n == 1:
            assert {shard for shard, _ in got.values()} == {0, 1}, got

    # A kill leaves the files the ticker wrote; a clean stop writes them last.
    dir1, dir2 = brokers[1].data_dir, brokers[2].data_dir
    brokers[2].process.kill()
    brokers[2].process.wait(timeout=10)
    wait_checkpointed(dir2, tid, PER_PARTITION)
    assert brokers[1].stop() == 0, brokers[1].log_tail()
    got = wait_checkpointed(dir1, tid, PER_PARTITION)
    assert {shard for shard, _ in got.values()} == {0, 1}, got

    # Broker 3 goes on alone (min.insync.replicas 2 refuses acks=all meanwhile); both come
    # back, broker 1 with one shard: it read both files, and its next checkpoint holds
    # everything in file 0 and removes file 1.
    brokers[1] = replica_broker(broker_factory, group, 1, data_dir=dir1, shards=1, extra=INTERVAL)
    brokers[2] = replica_broker(broker_factory, group, 2, data_dir=dir2, extra=INTERVAL)
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    wait_for("all in sync again", all_in_sync, bootstrap, TOPIC, PARTITIONS)
    second = produce(bootstrap, "b")
    for n in (1, 2, 3):
        wait_checkpointed(brokers[n].data_dir, tid, 2 * PER_PARTITION)
    deadline = time.monotonic() + SETTLE_SECONDS
    while set(checkpoints(dir1)) != {0}:
        assert time.monotonic() < deadline, f"files of broker 1: {sorted(checkpoints(dir1))}"
        time.sleep(0.2)

    for q in range(PARTITIONS):
        want = first[q] + second[q]
        assert read_partition(bootstrap, q, len(want)) == want, f"partition {q}"
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
