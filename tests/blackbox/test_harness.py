"""Self-tests of the black-box harness, runnable without a working broker: the pinned
clients are installed and run, and the broker start/probe/stop logic works against a
stand-in that speaks just enough Kafka (ApiVersions v0)."""

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

import harness

# A stand-in broker: answers every request with an ApiVersions v0 response listing
# ApiVersions 0..3, then exits on SIGTERM like a server would.
FAKE_BROKER = r"""
import signal, socket, struct, sys
port = int(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(8)
print("fake broker listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        size = struct.unpack(">i", conn.recv(4))[0]
        body = b""
        while len(body) < size:
            body += conn.recv(size - len(body))
        correlation_id = struct.unpack(">i", body[4:8])[0]
        reply = struct.pack(">ihihhh", correlation_id, 0, 1, 18, 0, 3)
        conn.sendall(struct.pack(">i", len(reply)) + reply)
"""


def pins(path):
    """name -> version from a requirements file of `name==version` lines."""
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def test_venv_holds_exactly_the_pinned_python_packages():
    pinned = pins(harness.REPO / "tests" / "requirements.txt")
    assert {"confluent-kafka", "kafka-python", "pytest"} <= pinned.keys()
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version, name


def test_confluent_kafka_runs_its_librdkafka():
    import confluent_kafka

    version, _ = confluent_kafka.libversion()
    assert int(version.split(".")[0]) >= 2
    # A round trip through librdkafka's own mock cluster: proves the client works end to end
    # without depending on corebus.
    producer = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    delivered = []
    producer.produce("harness", b"v", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(10) == 0
    assert delivered == [None]


def test_kafka_python_has_every_codec():
    from kafka import codec

    assert codec.has_gzip()
    assert codec.has_snappy()
    assert codec.has_lz4()
    assert codec.has_zstd()


def test_kcat_runs(kcat):
    out = subprocess.run([kcat, "-V"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"librdkafka \d+\.\d+\.\d+", out), out


def test_kafkajs_is_the_pinned_version(node_env):
    package = json.loads((harness.REPO / "tests" / "package.json").read_text())
    script = (
        "const k = require('kafkajs'); require('kafkajs-snappy');"
        "if (typeof k.Kafka !== 'function') process.exit(3);"
        "console.log(require('kafkajs/package.json').version)"
    )
    out = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, env=node_env
    ).stdout
    assert out.strip() == package["dependencies"]["kafkajs"]


def test_start_probe_stop_with_a_stand_in_broker(tmp_path):
    b = harness.start_broker(
        tmp_path / "data",
        tmp_path / "broker.log",
        command=[sys.executable, "-c", FAKE_BROKER, "{port}"],
    )
    try:
        assert b.api_versions == {18: (0, 3)}
        assert b.bootstrap == f"127.0.0.1:{b.port}"
        # A second probe works too: the broker serves every connection.
        assert harness.api_versions_probe(b.port) == {18: (0, 3)}
    finally:
        code = b.stop()
    assert code == 0
    assert "fake broker listening" in b.log_tail()


def test_a_broker_that_exits_early_is_reported_with_its_log(tmp_path):
    script = "import sys; print('refusing: bad config'); sys.exit(2)"
    with pytest.raises(harness.HarnessError, match="(?s)exited with code 2.*refusing: bad config"):
        harness.start_broker(
            tmp_path / "data",
            tmp_path / "broker.log",
            command=[sys.executable, "-c", script],
        )


def test_probe_rejects_a_peer_that_does_not_speak_kafka(tmp_path):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer_garbage():
        conn, _ = srv.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    with pytest.raises((ValueError, ConnectionError)):
        harness.api_versions_probe(srv.getsockname()[1])
    t.join(5)
    srv.close()
