"""The failover benchmark (issue 11): how long partitions stop taking acknowledged writes when
their leader is killed, over many kills. Not part of the test suite (the file name keeps
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
