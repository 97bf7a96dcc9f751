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
