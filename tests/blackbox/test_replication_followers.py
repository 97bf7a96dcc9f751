"""Replication, step 2 (`broker/src/replication`):
a topic of replication factor 3 on three brokers has every partition on every broker, and
each follower copies its leader's log byte for byte (offsets and leader epochs as the leader
gave them), also after it was killed with SIGKILL and restarted. Real processes: a group of
three consensus nodes, three `--roles broker` brokers (one with two shards), confluent-kafka
clients (a consumer group, whose `__consumer_offsets` gets 3 replicas too); the copies compared with DescribeLogDirs while running and with `corebus-ctl log dump
--records` once stopped.

Without the setting a replication factor above 1 is refused (unit tests of CreateTopics), and
what is not built yet (ISR tracking, a high watermark across replicas, acks=all across
replicas, truncation, failover) is listed in `broker/src/replication/mod.rs`.
"""

import struct
import subprocess
import time

import harness
from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    SESSION_OVERRIDE,
    admin,
    consume_all,
    group,
    wait_view,
)
from test_consensus_sessions import serving_group
from test_partition_leaders import wait_agreement

TOPIC = "copied"
PARTITIONS = 3
CATCH_UP_SECONDS = 60


def replica_broker(broker_factory, group, node_id, data_dir=None, shards=1, extra=(), port=None):
    return broker_factory(
        data_dir=data_dir,
        port=port,
        shards=shards,
        extra_args=["--roles", "broker", "--node-id", str(node_id), "--consensus-peers",
                    group.peers, *SESSION_OVERRIDE, *extra],
    )


def start_brokers(group, broker_factory, ids=(1, 2, 3), extra=()):
    """Brokers `ids` with replication on, beside a serving group of three consensus nodes,
    each seeing all of them; returns (brokers by id, the bootstrap list of all of them)."""
    serving_group(group)
    brokers = {n: replica_broker(broker_factory, group, n, extra=list(extra)) for n in ids}
    for b in brokers.values():
        wait_view(b.bootstrap, sorted(ids))
    return brokers, ",".join(b.bootstrap for b in brokers.values())


def log_dir_sizes(port, topic):
    """{partition: bytes} of `topic` on the broker at `port` (DescribeLogDirs v1, all topics)."""
    reply = harness.kafka_request(port, 35, 1, struct.pack(">i", -1), client=b"replication-test")
    pos = 4  # throttle time
    (dirs,) = struct.unpack_from(">i", reply, pos)
    pos += 4
    sizes = {}
    for _ in range(dirs):
        _err, name_len = struct.unpack_from(">hh", reply, pos)
        pos += 4 + name_len
        (topics,) = struct.unpack_from(">i", reply, pos)
        pos += 4
        for _ in range(topics):
            (tlen,) = struct.unpack_from(">h", reply, pos)
            name = reply[pos + 2 : pos + 2 + tlen].decode()
            pos += 2 + tlen
            (parts,) = struct.unpack_from(">i", reply, pos)
            pos += 4
            for _ in range(parts):
                p, size, _lag, _future = struct.unpack_from(">iqq?", reply, pos)
                pos += 21
                if name == topic:
                    sizes[p] = size
    return sizes


def wait_copies(brokers, least_bytes):
    """Until every broker holds every partition with the same size, at least `least_bytes`
    in all."""
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while True:
        views = [log_dir_sizes(b.port, TOPIC) for b in brokers]
        same = all(v == views[0] for v in views) and len(views[0]) == PARTITIONS
        if same and sum(views[0].values()) >= least_bytes:
            return views[0]
        assert time.monotonic() < deadline, f"replicas never caught up: {views}"
        time.sleep(0.2)


def produce_to(bootstrap, partitions, values):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5})
    errors = []
    for i, v in enumerate(values):
        p.produce(TOPIC, v.encode(), partition=partitions[i % len(partitions)],
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors[:5]


def dump(broker, partition):
    out = subprocess.run(
        [str(harness.corebus_binary().parent / "corebus-ctl"), "log", "dump",
         str(broker.data_dir / f"{TOPIC}-{partition}"), "--records"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Positions in the file may differ (a follower rolls its segments on its own clock):
    # compare what every batch and record says.
    return [line.split(" position ")[0] + " " + line.split(" max_timestamp ", 1)[-1]
            if " position " in line else line
            for line in out.stdout.splitlines() if not line.startswith("segment")]


def test_followers_copy_their_leaders_log_byte_for_byte(group, broker_factory):
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    brokers = {n: replica_broker(broker_factory, group, n, shards=2 if n == 2 else 1) for n in (1, 2, 3)}
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    a = admin(bootstrap)
    a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    view = wait_agreement(list(brokers.values()), TOPIC, PARTITIONS)
    assert all(sorted(v[1]) == [1, 2, 3] for v in view.values()), view
    led = {p: v[0] for p, v in view.items()}
    assert sorted(led.values()) == [1, 2, 3], view

    first = [f"a-{i}" for i in range(3000)]
    produce_to(bootstrap, list(range(PARTITIONS)), first)
    wait_copies(list(brokers.values()), 3000 * 10)

    # A follower killed and restarted catches up with what it missed.
    victim = 3
    victim_led = next(p for p, l in led.items() if l == victim)
    brokers[victim].process.kill()
    brokers[victim].process.wait(timeout=10)
    others = [p for p in range(PARTITIONS) if p != victim_led]
    second = [f"b-{i}" for i in range(2000)]
    produce_to(",".join(brokers[n].bootstrap for n in (1, 2)), others, second)
    brokers[victim] = replica_broker(broker_factory, group, victim, data_dir=brokers[victim].data_dir)
    wait_view(brokers[victim].bootstrap, [1, 2, 3])
    wait_copies(list(brokers.values()), (3000 + 2000) * 10)

    got = consume_all(bootstrap, TOPIC, len(first) + len(second))
    assert sorted(got) == sorted(first + second)
    # The group's offsets topic, created on the way, is replicated as configured
    # (offsets.topic.replication.factor, 3 by default, capped by the live brokers).
    offsets = wait_agreement(list(brokers.values()), "__consumer_offsets", 50)
    assert all(sorted(v[1]) == [1, 2, 3] for v in offsets.values()), offsets

    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
    for p in range(PARTITIONS):
        leader_dump = dump(brokers[led[p]], p)
        assert len(leader_dump) > 10, leader_dump[:5]
        for n, b in brokers.items():
            assert dump(b, p) == leader_dump, f"partition {p} on broker {n} differs from its leader"
