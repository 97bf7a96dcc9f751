"""corebus-ctl against the real broker: cluster, topic, produce and consume commands with
their exit codes and JSON output, records checked against what real clients see; offline
`log dump|verify` on a real data directory, clean, after SIGKILL, and corrupted; and a clean
SIGTERM stop leaving every log marked clean, with a relative data directory restarted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CTL_TIMEOUT_SECONDS = 60


def ctl_binary():
    return Path(harness.corebus_binary()).with_name("corebus-ctl")


def ctl(*args, brokers=None, stdin=None, check=True, env_brokers=None):
    """Runs corebus-ctl; returns (exit code, stdout, stderr)."""
    argv = [str(ctl_binary())]
    if brokers is not None:
        argv += ["--brokers", brokers]
    argv += list(args)
    env = dict(os.environ)
    env.pop("COREBUS_BROKERS", None)
    if env_brokers is not None:
        env["COREBUS_BROKERS"] = env_brokers
    p = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=CTL_TIMEOUT_SECONDS, env=env
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def ctl_json(*args, **kwargs):
    _, out, _ = ctl("--format", "json", *args, **kwargs)
    return json.loads(out)


@pytest.fixture
def broker(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield b
    assert b.stop() == 0, b.log_tail()


def test_cluster_info_and_health(broker):
    info = ctl_json("cluster", "info", brokers=broker.bootstrap)
    assert [x["id"] for x in info["brokers"]] == [1]
    assert info["brokers"][0]["port"] == broker.port
    assert info["controller"] == 1
    # COREBUS_BROKERS is the default for --brokers.
    _, out, _ = ctl("cluster", "health", env_brokers=broker.bootstrap)
    assert "healthy: true" in out


def test_unreachable_cluster_exits_3():
    code, _, err = ctl("--brokers", f"127.0.0.1:{harness.free_port()}", "topic", "list", check=False)
    assert code == 3, err
    assert "cannot connect" in err


def test_topic_lifecycle(broker):
    b = broker.bootstrap
    created = ctl_json("topic", "create", "orders", "-p", "3", "-c", "retention.ms=3600000", brokers=b)
    assert created[0]["partitions"] == 3 and created[0]["error"] is None
    # Creating it again fails with Kafka's error, exit 1.
    code, out, _ = ctl("topic", "create", "orders", "-p", "3", brokers=b, check=False)
    assert code == 1 and "TOPIC_ALREADY_EXISTS" in out
    assert [t["name"] for t in ctl_json("topic", "list", brokers=b)] == ["orders"]

    described = ctl_json("topic", "describe", "orders", brokers=b)[0]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 1 and p["isr"] == [1] for p in described["partitions"])
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "dynamic-topic"

    ctl("topic", "alter-config", "orders", "--set", "retention.ms=1000", "--delete", "cleanup.policy", brokers=b)
    configs = {c["name"]: c for c in ctl_json("topic", "describe", "orders", brokers=b)[0]["configs"]}
    assert configs["retention.ms"]["value"] == "1000"
    code, out, _ = ctl("topic", "alter-config", "orders", "--set", "no.such.config=1", brokers=b, check=False)
    assert code == 1 and "INVALID_CONFIG" in out

    ctl("topic", "add-partitions", "orders", "--total", "5", brokers=b)
    assert len(ctl_json("topic", "describe", "orders", brokers=b)[0]["partitions"]) == 5

    code, out, _ = ctl("topic", "delete", "orders", "ghost", brokers=b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in out
    assert ctl_json("topic", "list", brokers=b) == []
    code, _, err = ctl("topic", "describe", "orders", brokers=b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err


def test_produce_and_consume_round_trip_with_real_clients(broker):
    from confluent_kafka import Consumer, TopicPartition
    from kafka.partitioner.default import murmur2

    b = broker.bootstrap
    ctl("topic", "create", "events", "-p", "4", brokers=b)
    lines = [f"h1=a{i},h2=b{i}|key-{i}:value-{i}" for i in range(500)]
    produced = ctl_json(
        "produce", "events", "-k", ":", "--header-sep", "|", "-H", "src=ctl", "-z", "zstd",
        brokers=b, stdin="\n".join(lines) + "\n",
    )
    assert sum(p["records"] for p in produced) == 500

    # A real client sees every record, in the partition Kafka's default partitioner picks.
    c = Consumer({"bootstrap.servers": b, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition("events", p, 0) for p in range(4)])
    seen = {}
    deadline = time.monotonic() + CTL_TIMEOUT_SECONDS
    while len(seen) < 500 and time.monotonic() < deadline:
        for m in c.consume(500, timeout=1):
            assert m.error() is None, m.error()
            seen[m.key().decode()] = (m.partition(), m.value().decode(), m.headers())
    c.close()
    assert len(seen) == 500
    for i in range(500):
        partition, value, headers = seen[f"key-{i}"]
        assert value == f"value-{i}"
        assert headers == [("src", b"ctl"), ("h1", f"a{i}".encode()), ("h2", f"b{i}".encode())]
        assert partition == (murmur2(f"key-{i}".encode()) & 0x7FFFFFFF) % 4

    # corebus-ctl consume reads them back: all, a count, from an offset, as a template.
    records = [json.loads(x) for x in ctl("--format", "json", "consume", "events", "-e", brokers=b)[1].splitlines()]
    assert sorted(r["key"] for r in records) == sorted(seen)
    assert all(r["headers"][0] == {"key": "src", "value": "ctl"} for r in records)
    _, out, _ = ctl("consume", "events", "-p", "0", "-o", "1", "-n", "2", "-f", "%p:%o:%k=%v\\n", brokers=b)
    assert out.splitlines()[0].startswith("0:1:key-") and len(out.splitlines()) == 2
    _, out, _ = ctl("consume", "events", "-o", "latest", "-e", brokers=b)
    assert out == ""
    # acks=0 and a keyless produce to one partition.
    ctl("produce", "events", "-p", "2", "--acks", "0", brokers=b, stdin="x\ny\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tail = ctl("consume", "events", "-p", "2", "-e", "-f", "%v\\n", brokers=b)[1].splitlines()
        if tail[-2:] == ["x", "y"]:
            break
        time.sleep(0.2)
    assert tail[-2:] == ["x", "y"]


def test_log_verify_and_dump_on_a_real_data_dir(tmp_path):
    data = tmp_path / "data"
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        ctl("produce", "logs", "-k", ":", brokers=b.bootstrap, stdin="".join(f"k{i}:v{i}\n" for i in range(300)))
        ctl("produce", "logs", "-z", "gzip", brokers=b.bootstrap, stdin="".join(f"w{i}\n" for i in range(200)))
    finally:
        assert b.stop() == 0, b.log_tail()
    # A clean stop leaves every log synced, trimmed, indexed and marked clean.
    verified = ctl_json("log", "verify", str(data))
    assert [(p["next_offset"], p["clean_shutdown"], p["problems"]) for p in verified] == [(500, True, [])]

    dumped = ctl_json("log", "dump", str(data / "logs-0"), "--records")
    batches = [x for seg in dumped for x in seg["batches"]]
    assert [x["base_offset"] for x in batches] == [0, 300]
    assert all(x["crc_ok"] for x in batches)
    records = [r for x in batches for r in x["record_list"]]
    assert [r["offset"] for r in records] == list(range(500))
    assert records[0]["key"] == "k0" and records[0]["value"] == "v0"
    assert records[300]["key"] is None and records[300]["value"] == "w0"

    # Killed mid-life: the tail may be torn or padded, which recovery handles: not an error.
    b = harness.start_broker(data, tmp_path / "broker.log")
    ctl("produce", "logs", brokers=b.bootstrap, stdin="after\n")
    b.process.send_signal(signal.SIGKILL)
    b.process.wait()
    verified = ctl_json("log", "verify", str(data))
    assert verified[0]["clean_shutdown"] is False and verified[0]["problems"] == []
    assert verified[0]["next_offset"] == 501

    # One flipped byte inside the first batch: verify names it and exits 1.
    segment = data / "logs-0" / "00000000000000000000.log"
    raw = bytearray(segment.read_bytes())
    raw[100] ^= 0xFF
    segment.write_bytes(bytes(raw))
    code, out, err = ctl("log", "verify", str(data / "logs-0"), check=False)
    assert code == 1, (out, err)
    assert "fails its CRC32C" in out
    code, _, err = ctl("log", "verify", str(tmp_path / "nothing-here"), check=False)
    assert code == 1 and "cannot read" in err


def test_relative_data_dir_restarts_clean(tmp_path):
    """The default data dir is relative (./data): a clean stop and a restart must work
    there too (glommio opens directories without a base descriptor)."""
    b = harness.start_broker(Path("data"), tmp_path / "broker.log", cwd=tmp_path)
    try:
        ctl("produce", "rel", brokers=b.bootstrap, stdin="one\ntwo\n")
    finally:
        assert b.stop() == 0, b.log_tail()
    assert "WARN" not in b.log_tail(), b.log_tail()
    assert ctl_json("log", "verify", str(tmp_path / "data"))[0]["clean_shutdown"] is True
    b = harness.start_broker(Path("data"), tmp_path / "broker.log", cwd=tmp_path)
    try:
        _, out, _ = ctl("consume", "rel", "-e", brokers=b.bootstrap)
        assert out.splitlines() == ["one", "two"]
        ctl("produce", "rel", brokers=b.bootstrap, stdin="three\n")
    finally:
        assert b.stop() == 0, b.log_tail()
    assert "cannot open partition log" not in b.log_tail(), b.log_tail()
