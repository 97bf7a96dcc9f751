"""Black-box tests of the broker's open segment files against the process's open-file limit:
the real broker on loopback, driven with confluent-kafka, its descriptors read from
/proc/PID/fd and /proc/PID/limits, its metrics scraped over HTTP.

Covers: the soft open-file limit raised to the hard one at start-up and the per-shard budget
derived from it (`corebus.shard.max.open.files` = 0); a budget smaller than the written
partitions keeps the open segment files within it (files closed and opened again, counted in
`corebus_segment_files_closed_for_limit`) and loses nothing; a budget that holds every
partition closes nothing.
"""

import os
import resource
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 60
SMALL_BUDGET = 256
PARTITIONS = 600
ROUNDS = 3


def open_segment_files(pid, data_dir, topic=""):
    """Paths of the segment and index files the process holds open under `data_dir` (of
    `topic`'s partitions only, when given)."""
    found = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue  # closed meanwhile
        if not target.startswith(f"{data_dir}/{topic}-" if topic else str(data_dir)):
            continue
        if target.endswith((".log", ".index", ".timeindex")):
            found.append(target)
    return found


def metric_total(port, name):
    """The sum of every sample of `name` in the metrics exposition."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    value = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, v = line.rpartition(" ")
            if head.split("{")[0] in (name, f"{name}_total"):
                value += float(v)
    return value


def produce_everywhere(bootstrap, topic, rounds):
    """One record per partition per round, acks=all; returns the values, in order per partition."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    sent = {i: [] for i in range(PARTITIONS)}
    for r in range(rounds):
        for i in range(PARTITIONS):
            value = f"p{i}-r{r}".encode()
            p.produce(topic, value=value, partition=i,
                      on_delivery=lambda err, _msg: err and errors.append(err))
            sent[i].append(value)
            p.poll(0)
        assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert errors == [], errors[:5]
    return sent


def create_topic(bootstrap, topic):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic].result(timeout=CLIENT_TIMEOUT_SECONDS)


def start(tmp_path, budget):
    port = harness.free_port()
    extra = ["--override", f"corebus.shard.max.open.files={budget}"] if budget else []
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log", shards=1,
                             metrics_listen=f"127.0.0.1:{port}", extra_args=extra)
    b.metrics_port = port
    return b


def test_a_small_budget_bounds_open_files_and_loses_nothing(tmp_path):
    from confluent_kafka import TopicPartition

    b = start(tmp_path, SMALL_BUDGET)
    try:
        create_topic(b.bootstrap, "many")
        sent = produce_everywhere(b.bootstrap, "many", ROUNDS)
        # Files held by an I/O in flight may briefly exceed the budget; at rest they do not.
        opened = harness.poll_until(
            f"at most {SMALL_BUDGET} open segment files",
            lambda: open_segment_files(b.process.pid, b.data_dir),
            lambda files: len(files) <= SMALL_BUDGET,
            CLIENT_TIMEOUT_SECONDS,
        )
        assert opened, "no segment file open at all"
        closed = metric_total(b.metrics_port, "corebus_segment_files_closed_for_limit")
        assert closed > 0, "600 written partitions on a 256-file budget closed no file"
        assert "exceed its open-file budget" in b.log_tail(200_000)
        # Every record is still there, in order per partition, read through reopened files.
        got = harness.read_values(
            b.bootstrap, [TopicPartition("many", i, 0) for i in range(PARTITIONS)],
            PARTITIONS * ROUNDS, CLIENT_TIMEOUT_SECONDS)
        assert sorted(got) == sorted(v for vs in sent.values() for v in vs)
        for i in range(PARTITIONS):
            mine = [v for v in got if v.startswith(f"p{i}-".encode())]
            assert mine == sent[i], f"partition {i}: {mine}"
    finally:
        code = b.stop()
    assert code == 0, b.log_tail()


def test_the_soft_limit_is_raised_and_a_derived_budget_closes_nothing(tmp_path):
    import shutil

    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 4096:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room to raise")
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    # Start the broker with a soft limit of 1,024, as many shells do.
    port = harness.free_port()
    data_dir = tmp_path / "data"
    args = [str(harness.corebus_binary()), "--listen", "127.0.0.1:{port}",
            "--consensus-listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--shards", "1",
            "--metrics-listen", f"127.0.0.1:{port}",
            # Room for the files below the hard limit on machines where it is small.
            "--override", "max.connections=1000"]
    b = harness.start_broker(data_dir, tmp_path / "broker.log",
                             command=["prlimit", "--nofile=1024:" + str(hard), *args])
    b.metrics_port = port
    try:
        pid = b.process.pid
        # `prlimit` execs the broker: same pid.
        limits = Path(f"/proc/{pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)], row
        want = max(256, (hard - 1000 - 1024))
        assert f"segment_files_per_shard={want}" in b.log_tail(200_000)
        create_topic(b.bootstrap, "many")
        produce_everywhere(b.bootstrap, "many", 2)
        assert metric_total(port, "corebus_segment_files_closed_for_limit") == 0
        assert len(open_segment_files(pid, data_dir, "many")) >= PARTITIONS
    finally:
        code = b.stop()
    assert code == 0, b.log_tail()
