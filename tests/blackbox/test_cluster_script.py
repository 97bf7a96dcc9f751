"""`scripts/cluster` (the README's local cluster): three nodes, each a broker and a member of
the consensus group, started, shown and stopped with one command each; a topic's partitions
are spread over the three brokers, and a client bootstrapped with all three writes and reads
every record (as a consumer group, coordinated by whichever broker leads its offsets
partition)."""

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import harness
from test_broker_registration import CLIENT_TIMEOUT_SECONDS, admin, consume_all, produce
from test_ctl import ctl, ctl_json
from test_partition_leaders import wait_agreement

REPO = Path(__file__).resolve().parents[2]
SCRIPT_TIMEOUT_SECONDS = 180
BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"


class Endpoint:
    def __init__(self, port):
        self.bootstrap = f"127.0.0.1:{port}"


def cluster(*args, dir):
    env = dict(os.environ, COREBUS_BIN=str(harness.corebus_binary()),
               COREBUS_CLUSTER_ARGS="--shards 1")
    return subprocess.run(
        [str(REPO / "scripts" / "cluster"), *args, "--dir", str(dir)],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS, env=env,
    )


def test_three_nodes_start_serve_spread_partitions_and_stop(tmp_path):
    from confluent_kafka.admin import NewTopic

    d = tmp_path / "cluster"
    try:
        out = cluster("start", "--nodes", "3", dir=d)
        assert out.returncode == 0, out.stdout + out.stderr
        assert BOOTSTRAP in out.stdout, out.stdout
        status = cluster("status", dir=d)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count(": running, pid") == 3, status.stdout

        a = admin(BOOTSTRAP)
        a.create_topics([NewTopic("spread", 6, 1)])["spread"].result(timeout=CLIENT_TIMEOUT_SECONDS)
        view = wait_agreement([Endpoint(p) for p in (19092, 19093, 19094)], "spread", 6)
        assert sorted(Counter(v[0] for v in view.values()).values()) == [2, 2, 2], view
        values = [str(i) for i in range(600)]
        produce(BOOTSTRAP, "spread", values)
        got = consume_all(BOOTSTRAP, "spread", len(values), group="cluster-script", commit=True)
        assert sorted(got, key=int) == values

        # corebus-ctl's topic writes reach the controller whichever single broker it is
        # given (at least two of the three are not the controller, which answers
        # NOT_CONTROLLER to them).
        for port in (19092, 19093, 19094):
            via = f"127.0.0.1:{port}"
            name = f"ctl-{port}"
            ctl("topic", "create", name, "--partitions", "2", brokers=via)
            ctl("topic", "add-partitions", name, "--total", "3", brokers=via)
            ctl("topic", "alter-config", name, "--set", "retention.ms=3600000", brokers=via)
            described = ctl_json("topic", "describe", name, brokers=via)
            assert "3600000" in json.dumps(described), described
            # Every broker agrees on the 3 partitions (polls until then).
            wait_agreement([Endpoint(p) for p in (19092, 19093, 19094)], name, 3)
            ctl("topic", "delete", name, brokers=via)
    finally:
        out = cluster("stop", dir=d)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "stopped 3 node(s)" in out.stdout, out.stdout
    assert not list(d.glob("node-*/pid"))
    for i in (1, 2, 3):
        assert "corebus stopped cleanly" in (d / f"node-{i}" / "corebus.log").read_text(errors="replace")


def test_the_last_node_of_a_cluster_without_quorum_stops_without_waiting_out_its_hand_over(tmp_path):
    """Replicated partitions, then two of the three nodes killed: the consensus group has no
    quorum, so no controller can move the last node's leaderships. SIGTERM to it: its
    controlled shutdown gives up once the controller stayed unreachable for two sessions and
    more (2 s each here), well before `corebus.controlled.shutdown.timeout.ms` (30 s), and it
    stops cleanly."""
    import signal
    import time

    from confluent_kafka.admin import NewTopic

    d = tmp_path / "cluster"
    env_args = "--shards 1 --override corebus.consensus.session.timeout.ms=2000"
    env = dict(os.environ, COREBUS_BIN=str(harness.corebus_binary()),
               COREBUS_CLUSTER_ARGS=env_args)

    def run(*args):
        return subprocess.run([str(REPO / "scripts" / "cluster"), *args, "--dir", str(d)],
                              capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS,
                              env=env)

    try:
        out = run("start", "--nodes", "3")
        assert out.returncode == 0, out.stdout + out.stderr
        a = admin(BOOTSTRAP)
        a.create_topics([NewTopic("kept", 3, 3)])["kept"].result(timeout=CLIENT_TIMEOUT_SECONDS)
        view = wait_agreement([Endpoint(p) for p in (19092, 19093, 19094)], "kept", 3)
        assert sorted(v[0] for v in view.values()) == [1, 2, 3], view
        pids = {i: int((d / f"node-{i}" / "pid").read_text()) for i in (1, 2, 3)}
        for i in (1, 2):
            os.kill(pids[i], signal.SIGKILL)
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(pids[3], signal.SIGTERM)
        log = d / "node-3" / "corebus.log"
        deadline = started + 25
        while "corebus stopped cleanly" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        took = time.monotonic() - started
        text = log.read_text(errors="replace")
        assert "stopping without handing over" in text, text[-3000:]
        print(f"the last node stopped {took:.1f} s after SIGTERM")
        assert took < 20, f"{took:.1f} s"
    finally:
        run("stop")
