"""The failover benchmark (issue 11): how long partitions stop taking acknowledged writes when
their leader is killed, over many kills; and produce latency while partitions move
(`test_produce_latency_during_a_rebalance`, report in `REBALANCE_REPORT`). Not part of the test suite (the file name keeps
pytest from collecting it); run it with `scripts/failover-bench`.

Three brokers beside a group of three consensus nodes (the test harness's), replication on, a
topic of 3 partitions with 3 replicas and min.insync.replicas 2, an idempotent acks=all
confluent-kafka producer writing all the time. `FAILOVER_KILLS` times (20 by default): the
leader of the next partition is killed with SIGKILL, and the window is the time from the kill
to that partition's first acknowledgement after it; the broker is restarted on its port and
the next kill waits until every replica is in sync again. Then a controlled shutdown (SIGTERM)
of each partition's leader in turn, measured the same way.

The baseline is the session timeout of the run (the time the cluster needs to notice a dead
broker): the report gives each window, its distribution and the windows minus the session
timeout. Every acknowledged record is still checked (read exactly once, in order). Writes
the report to `FAILOVER_REPORT` (default /tmp/failover-bench/report.md) and prints it.
"""

import os
import time
from pathlib import Path

from test_broker_registration import SESSION_TIMEOUT_MS, group, wait_view  # noqa: F401
from test_replication_failover import (
    PARTITIONS,
    SETTLE_SECONDS,
    Writer,
    all_in_sync,
    check_every_acknowledged_record,
    start_cluster,
    wait_for,
)
from test_replication_followers import replica_broker

KILLS = int(os.environ.get("FAILOVER_KILLS", "20"))
REPORT = Path(os.environ.get("FAILOVER_REPORT", "/tmp/failover-bench/report.md"))


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(name, windows):
    if not windows:
        return f"| {name} | 0 | - | - | - | - | - |"
    beyond = [w - SESSION_TIMEOUT_MS / 1000 for w in windows]
    return (f"| {name} | {len(windows)} | {min(windows):.2f} | {percentile(windows, 0.5):.2f} | "
            f"{percentile(windows, 0.9):.2f} | {max(windows):.2f} | "
            f"{percentile(beyond, 0.5):+.2f} / {max(beyond):+.2f} |")


def one_round(brokers, bootstrap, writer, group, broker_factory, partition, stop):
    """Stops the leader of `partition` with `stop`, waits for the producer to go on, restarts
    it; the window of each partition it led."""
    view = wait_for("all in sync", all_in_sync, bootstrap)
    victim = view[partition][0]
    led = [p for p, (leader, _) in view.items() if leader == victim]
    at = time.monotonic()
    stop(brokers[victim])
    # Until every partition it led took an acknowledged write again (each failover measured
    # alone, not overlapping the next); a partition that does not within the settle time
    # counts as never.
    deadline = time.monotonic() + SETTLE_SECONDS
    while any(writer.unavailable(p, at) is None for p in led):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    brokers[victim] = replica_broker(broker_factory, group, victim,
                                     data_dir=brokers[victim].data_dir, port=brokers[victim].port)
    wait_view(brokers[victim].bootstrap, [1, 2, 3])
    windows = [writer.unavailable(p, at) for p in led]
    print(f"stopped {victim} (leader of {led}): windows {windows}", flush=True)
    return windows


def test_failover_windows(group, broker_factory):  # noqa: F811 (group is a fixture)
    def kill(broker):
        broker.process.kill()
        broker.process.wait(timeout=10)

    def terminate(broker):
        assert broker.stop() == 0, broker.log_tail()

    brokers, bootstrap = start_cluster(group, broker_factory)
    writer = Writer(bootstrap)
    writer.start()
    killed, stopped = [], []
    try:
        for i in range(KILLS):
            killed += one_round(brokers, bootstrap, writer, group, broker_factory,
                                i % PARTITIONS, kill)
        for i in range(PARTITIONS):
            stopped += one_round(brokers, bootstrap, writer, group, broker_factory, i, terminate)
        wait_for("all in sync at the end", all_in_sync, bootstrap)
    finally:
        writer.stop.set()
        writer.join(timeout=180)
    check_every_acknowledged_record(writer, bootstrap)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()

    lines = [
        "# Failover windows",
        "",
        f"Session timeout {SESSION_TIMEOUT_MS} ms (the baseline: the time to notice a dead "
        f"broker); {KILLS} SIGKILLs and {PARTITIONS} SIGTERMs of a partition leader; "
        f"{writer.count()} records acknowledged, all read back once and in order.",
        "",
        "| stop | windows | min s | p50 s | p90 s | max s | beyond the session timeout, p50 / max s |",
        "|---|---|---|---|---|---|---|",
        summary("SIGKILL (failover)", [w for w in killed if w is not None]),
        summary("SIGTERM (controlled shutdown)", [w for w in stopped if w is not None]),
        "",
        "Each SIGKILL window: " + ", ".join(f"{w:.2f}" if w is not None else "never" for w in killed),
        "",
    ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
    print("\n" + "\n".join(lines))
    assert all(w is not None for w in killed + stopped), "a partition never took writes again"


REBALANCE_REPORT = Path(os.environ.get("REBALANCE_REPORT", "/tmp/failover-bench/rebalance.md"))
REBALANCE_TOPIC = "rebalanced"
REBALANCE_PARTITIONS = 6
# Records of this size, and before the move this many per partition (what the move copies).
VALUE_BYTES = 1024
PREFILL_PER_PARTITION = 5_000
# The paced producer runs at this fraction of the maximum measured first, in the same run
# (low enough for one Python producer to keep its pace: above it the client itself lags).
RATE_FRACTION = 0.05
STEADY_SECONDS = 10


def paced_latencies(bootstrap, rate, until):
    """Open loop: one 1 KiB acks=all record every 1/rate s to the partitions in turn, from
    now until `until()` is true; each latency counted from its intended send time."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                  "message.timeout.ms": 60_000})
    lat = []
    value = b"v" * VALUE_BYTES
    start = time.monotonic()
    i = 0
    while not until():
        due = start + i / rate
        now = time.monotonic()
        if now < due:
            p.poll(min(due - now, 0.01))
            continue
        p.produce(REBALANCE_TOPIC, value, partition=i % REBALANCE_PARTITIONS,
                  on_delivery=lambda err, m, due=due: lat.append(
                      time.monotonic() - due if err is None else None))
        i += 1
        p.poll(0)
    p.flush(60)
    return lat


def test_produce_latency_during_a_rebalance(group, broker_factory):  # noqa: F811
    """Produce p99 while partitions move (a reassignment of every partition, one replica each,
    with its data), next to the same paced load in steady state just before."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic
    from test_broker_registration import admin
    from test_ctl import ctl
    from test_replication_followers import start_brokers

    brokers, bootstrap = start_brokers(group, broker_factory)
    a = admin(bootstrap)
    a.create_topics([NewTopic(REBALANCE_TOPIC, num_partitions=REBALANCE_PARTITIONS,
                              replication_factor=2)
                     ])[REBALANCE_TOPIC].result(timeout=60)
    # Prefill (closed loop: also the maximum rate this producer gets here).
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    value = b"v" * VALUE_BYTES
    n = PREFILL_PER_PARTITION * REBALANCE_PARTITIONS
    t0 = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce(REBALANCE_TOPIC, value, partition=i % REBALANCE_PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0
    max_rate = n / (time.monotonic() - t0)
    rate = max_rate * RATE_FRACTION

    steady_until = time.monotonic() + STEADY_SECONDS
    steady = paced_latencies(bootstrap, rate, lambda: time.monotonic() > steady_until)

    md = a.list_topics(REBALANCE_TOPIC, timeout=30).topics[REBALANCE_TOPIC].partitions
    moves = {}
    for pid, m in md.items():
        outside = next(b for b in (1, 2, 3) if b not in m.replicas)
        moves[pid] = [m.replicas[1], outside]
    started = time.monotonic()
    for pid, to in moves.items():
        ctl("partition", "move", REBALANCE_TOPIC, str(pid), "--replicas",
            ",".join(map(str, to)), brokers=bootstrap)
    moving = {"done": False, "at": None}

    def moved():
        if time.monotonic() - started > 600:
            raise AssertionError("the moves never completed")
        cur = a.list_topics(REBALANCE_TOPIC, timeout=30).topics[REBALANCE_TOPIC].partitions
        done = all(list(cur[q].replicas) == moves[q] and sorted(cur[q].isrs) == sorted(moves[q])
                   for q in moves)
        if done and moving["at"] is None:
            moving["at"] = time.monotonic() - started
        return done

    last = {"t": 0.0, "v": False}

    def until_moved():
        # Metadata looked at most every 0.5 s, off the producer's pacing.
        if time.monotonic() - last["t"] > 0.5:
            last["t"], last["v"] = time.monotonic(), moved()
        return last["v"]

    during = paced_latencies(bootstrap, rate, until_moved)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()

    def row(name, lat):
        ok = [x * 1000 for x in lat if x is not None]
        return (f"| {name} | {len(lat)} | {len(lat) - len(ok)} | {percentile(ok, 0.5):.1f} | "
                f"{percentile(ok, 0.99):.1f} | {max(ok):.1f} |")

    ok_steady = [x for x in steady if x is not None]
    ok_during = [x for x in during if x is not None]
    ratio = percentile(ok_during, 0.99) / percentile(ok_steady, 0.99)
    lines = [
        "# Produce latency during a rebalance",
        "",
        f"Three brokers, {REBALANCE_PARTITIONS} partitions x 2 replicas, "
        f"{PREFILL_PER_PARTITION} records of {VALUE_BYTES} B each before the move; every "
        f"partition moves one replica to the third broker (`corebus-ctl partition move`), "
        f"which took {moving['at']:.1f} s. Open loop, acks=all, at {RATE_FRACTION:.0%} of the "
        f"{max_rate:.0f} records/s this producer reached closed loop ({rate:.0f} records/s).",
        "",
        "| phase | records | failed | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        row(f"steady ({STEADY_SECONDS} s)", steady),
        row("during the moves", during),
        "",
        f"p99 during the moves / steady: {ratio:.2f}",
        "",
    ]
    REBALANCE_REPORT.parent.mkdir(parents=True, exist_ok=True)
    REBALANCE_REPORT.write_text("\n".join(lines))
    print("\n" + "\n".join(lines))
    assert not [x for x in during if x is None], "a record failed during the moves"
