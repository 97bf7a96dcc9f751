"""Which shard serves a partition is computed by each node from its own shard count
(`broker/src/shard/router.rs`), never read from or written to the replicated metadata.

- One data directory restarted with 2, then 1, then 3 shards: every partition and every
  consumer group is served each time, no record is lost, and no restart rewrites the topic's
  node in the consensus tree (its version stays).
- While it runs, no partition's segment file is open in two places of the process
  (/proc/PID/fd).
"""

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import harness
from test_broker_registration import consume_all, embedded_addr
from test_consensus_sessions import session_binary

TOPIC = "owned"
PARTITIONS = 6
PER_ROUND = 50
CLIENT_TIMEOUT_SECONDS = 30


def topic_node_version(broker):
    out = subprocess.run(
        [str(session_binary()), "get", "--server", embedded_addr(broker), "--path", f"/corebus/topics/{TOPIC}"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    node = json.loads(out.stdout)
    assert node["exists"], node
    return node["version"]


def produce_round(bootstrap, round_no):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(PER_ROUND * PARTITIONS):
        p.produce(TOPIC, f"{round_no}:{i}".encode(), partition=i % PARTITIONS,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors


def consume_committed(bootstrap, expected):
    """Reads from the group's committed offsets (so the group must be served too) and commits."""
    return consume_all(bootstrap, TOPIC, expected, group="owners", commit=True)


def open_segment_files(pid, data_dir, topic=TOPIC):
    """How many times each segment file of `topic` under the data directory is open in the
    process."""
    fds = Path(f"/proc/{pid}/fd")
    counts = Counter()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(data_dir)) and f"/{topic}-" in target and target.endswith(".log"):
            counts[target] += 1
    return counts


def test_restarts_with_other_shard_counts_serve_every_partition_and_rewrite_nothing(broker_factory, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    data = tmp_path / "data"
    b = broker_factory(data_dir=data, shards=2)
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    version = topic_node_version(b)
    produce_round(b.bootstrap, 0)
    assert len(consume_committed(b.bootstrap, PER_ROUND * PARTITIONS)) == PER_ROUND * PARTITIONS
    seen = 1
    for shards in (1, 3):
        assert b.stop() == 0, b.log_tail()
        b = broker_factory(data_dir=data, shards=shards)
        produce_round(b.bootstrap, seen)
        got = consume_committed(b.bootstrap, PER_ROUND * PARTITIONS)
        # Exactly this round's records: the group's offsets were kept and served.
        assert sorted(got) == sorted(f"{seen}:{i}" for i in range(PER_ROUND * PARTITIONS)), (shards, len(got))
        assert topic_node_version(b) == version, f"restarting with {shards} shards rewrote the topic"
        files = open_segment_files(b.process.pid, data)
        assert files, "no segment file of the topic is open"
        twice = {f: n for f, n in files.items() if n > 1}
        assert not twice, twice
        seen += 1
    # Everything written in every round is still there, from the start.
    total = len(consume_all(b.bootstrap, TOPIC, seen * PER_ROUND * PARTITIONS))
    assert total == seen * PER_ROUND * PARTITIONS
