"""Black-box tests of the broker runtime and its admin APIs: the real `corebus` binary on a
free loopback port, driven by kcat (librdkafka 2.0.2), confluent-kafka (librdkafka 2.16) and
kafka-python, as a Kafka user would.

Covers: start and clean stop on SIGTERM, refusal of a taken port and of unknown or malformed
settings, ApiVersions, Metadata (auto-creation, topic ids), CreateTopics (validate_only,
configs, per-topic errors), DeleteTopics (a recreated topic gets a new id), CreatePartitions,
DescribeCluster, DescribeConfigs (sources, synonyms), IncrementalAlterConfigs/AlterConfigs,
and metadata surviving a restart.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

# Generous: a debug build on a busy 2-core machine.
CLIENT_TIMEOUT_SECONDS = 30
KCAT_TIMEOUT_SECONDS = 30
# How long a refused start may take to exit.
REFUSAL_TIMEOUT_SECONDS = 20


@pytest.fixture
def broker(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield b
    code = b.stop()
    assert code == 0, f"broker exited with {code}; log:\n{b.log_tail()}"


def admin(b):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": b.bootstrap, "socket.timeout.ms": 10000})


def wait_all(futures):
    return {k: f.result(timeout=CLIENT_TIMEOUT_SECONDS) for k, f in futures.items()}


def run_refused(tmp_path, *args):
    """Runs corebus expecting it to refuse to start; returns (exit code, output)."""
    p = subprocess.run(
        [str(harness.corebus_binary()), "--data-dir", str(tmp_path / "data"), "--shards", "1", *args],
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_SECONDS,
    )
    return p.returncode, p.stdout + p.stderr


# --- start, stop, refusals -------------------------------------------------------------------


def test_starts_answers_and_stops_cleanly_on_sigterm(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log")
    assert 18 in b.api_versions, "ApiVersions must advertise itself"
    started = time.monotonic()
    assert b.stop() == 0
    assert time.monotonic() - started < harness.BROKER_STOP_TIMEOUT_SECONDS
    log = b.log_tail()
    assert "shard started" in log and "cpu=" in log
    assert "stopped cleanly" in log


def test_refuses_a_port_already_taken(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, out = run_refused(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert code != 0
    assert "already in use" in out


def test_refuses_a_second_broker_on_the_same_port(broker, tmp_path):
    code, out = run_refused(tmp_path / "second", "--listen", broker.bootstrap)
    assert code != 0
    assert "already in use" in out
    # The first one still serves.
    assert 18 in harness.api_versions_probe(broker.port)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--override", "num.partitons=3"], "num.partitons"),
        (["--override", "num.partitions=many"], "num.partitions"),
        (["--override", "log.cleanup.policy=shred"], "log.cleanup.policy"),
        (["--override", "default.replication.factor=0"], "default.replication.factor"),
    ],
)
def test_refuses_unknown_or_malformed_settings(tmp_path, args, named):
    code, out = run_refused(tmp_path, "--listen", "127.0.0.1:0", *args)
    assert code != 0
    assert named in out


def test_reads_kafka_server_properties(tmp_path):
    props = tmp_path / "server.properties"
    props.write_text(
        "# as Kafka ships it\nnode.id=7\nnum.partitions=3\nnum.io.threads=8\nlog.retention.hours=24\n"
    )
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log", extra_args=["--config", str(props)])
    try:
        md = admin(b).list_topics(topic="from-props", timeout=CLIENT_TIMEOUT_SECONDS)
        assert list(md.brokers) == [7]
        assert len(md.topics["from-props"].partitions) == 3
        assert "num.io.threads" in b.log_tail(), "an inert setting is logged, not silently ignored"
    finally:
        assert b.stop() == 0


def test_a_malformed_config_file_line_is_named(tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("log.segment.bytes=big\n")
    code, out = run_refused(tmp_path, "--listen", "127.0.0.1:0", "--config", str(props))
    assert code != 0
    assert "log.segment.bytes" in out and str(props) in out


# --- metadata and topics -----------------------------------------------------------------------


def test_kcat_lists_metadata_and_auto_creates(broker):
    out = subprocess.run(
        [harness.kcat_binary(), "-b", broker.bootstrap, "-L", "-t", "auto-created"],
        capture_output=True,
        text=True,
        timeout=KCAT_TIMEOUT_SECONDS,
    )
    assert out.returncode == 0, out.stderr
    assert "broker 1 at 127.0.0.1" in out.stdout
    assert 'topic "auto-created" with 1 partitions' in out.stdout
    assert "leader 1, replicas: 1, isrs: 1" in out.stdout


def test_confluent_admin_create_describe_delete(broker):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    a = admin(broker)
    # validate_only creates nothing.
    wait_all(a.create_topics([NewTopic("orders", 4, 1)], validate_only=True))
    assert "orders" not in a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS).topics
    wait_all(a.create_topics([NewTopic("orders", 4, 1, config={"retention.ms": "60000", "cleanup.policy": "compact"})]))
    md = a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS)
    assert len(md.topics["orders"].partitions) == 4

    futures = a.create_topics(
        [
            NewTopic("orders", 1, 1),
            NewTopic("bad name!", 1, 1),
            NewTopic("three-replicas", 1, 3),
            NewTopic("bad-config", 1, 1, config={"retention.ms": "soon"}),
        ]
    )
    expected = {
        "orders": "TOPIC_ALREADY_EXISTS",
        "bad name!": "TOPIC_EXCEPTION",  # librdkafka's name for INVALID_TOPIC_EXCEPTION (17)
        "three-replicas": "INVALID_REPLICATION_FACTOR",
        "bad-config": "INVALID_CONFIG",
    }
    for name, code in expected.items():
        with pytest.raises(KafkaException) as e:
            futures[name].result(timeout=CLIENT_TIMEOUT_SECONDS)
        assert e.value.args[0].name() == code, name

    wait_all(a.create_partitions([__import__("confluent_kafka.admin").admin.NewPartitions("orders", 6)]))
    assert len(a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS).topics["orders"].partitions) == 6
    with pytest.raises(KafkaException) as e:
        a.create_partitions([__import__("confluent_kafka.admin").admin.NewPartitions("orders", 2)])[
            "orders"
        ].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"

    wait_all(a.delete_topics(["orders"]))
    assert "orders" not in a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS).topics


def test_describe_cluster_and_topic_ids(broker):
    from confluent_kafka.admin import NewTopic

    a = admin(broker)
    cluster = a.describe_cluster(request_timeout=CLIENT_TIMEOUT_SECONDS).result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert [n.id for n in cluster.nodes] == [1]
    assert cluster.controller.id == 1
    assert cluster.cluster_id

    wait_all(a.create_topics([NewTopic("ids", 2, 1)]))
    from confluent_kafka import TopicCollection

    first = a.describe_topics(TopicCollection(["ids"]))["ids"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    wait_all(a.delete_topics(["ids"]))
    wait_all(a.create_topics([NewTopic("ids", 2, 1)]))
    second = a.describe_topics(TopicCollection(["ids"]))["ids"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert str(first.topic_id) != str(second.topic_id), "a recreated topic gets a new id"


def test_describe_and_alter_configs(broker):
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ConfigSource,
        NewTopic,
    )

    a = admin(broker)
    wait_all(a.create_topics([NewTopic("cfg", 1, 1, config={"retention.ms": "120000"})]))
    res = ConfigResource(ConfigResource.Type.TOPIC, "cfg")
    configs = a.describe_configs([res])[res].result(timeout=CLIENT_TIMEOUT_SECONDS)
    r = configs["retention.ms"]
    assert r.value == "120000"
    assert r.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert [s.name for s in r.synonyms.values()] == ["retention.ms", "log.retention.hours"]
    seg = configs["segment.bytes"]
    assert seg.value == "1073741824" and seg.source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "delete"

    alter = ConfigResource(
        ConfigResource.Type.TOPIC,
        "cfg",
        incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    wait_all(a.incremental_alter_configs([alter]))
    configs = a.describe_configs([res])[res].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["retention.ms"].value == str(168 * 3600 * 1000)
    assert configs["segment.bytes"].value == "1048576"

    bad = ConfigResource(
        ConfigResource.Type.TOPIC,
        "cfg",
        incremental_configs=[ConfigEntry("segment.bytes", "huge", incremental_operation=AlterConfigOpType.SET)],
    )
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([bad])[bad].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert e.value.args[0].name() == "INVALID_CONFIG"

    broker_res = ConfigResource(ConfigResource.Type.BROKER, "1")
    bc = a.describe_configs([broker_res])[broker_res].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert bc["num.partitions"].value == "1"
    assert bc["log.retention.hours"].value == "168"
    # The harness's --listen and --data-dir count as what they stand for in server.properties
    # (kafka-python's suite checks advertised.listeners the same way).
    assert bc["listeners"].value == f"PLAINTEXT://127.0.0.1:{broker.port}"
    assert bc["listeners"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert bc["log.dirs"].value == str(broker.data_dir)
    assert bc["log.dirs"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert bc["num.partitions"].source == ConfigSource.DEFAULT_CONFIG.value


def test_kafka_python_admin(broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=CLIENT_TIMEOUT_SECONDS * 1000)
    try:
        a.create_topics([NewTopic("kp", num_partitions=2, replication_factor=1, topic_configs={"retention.ms": "5000"})])
        assert "kp" in a.list_topics()
        described = a.describe_topics(["kp"])
        assert len(described[0]["partitions"]) == 2
        a.create_partitions({"kp": NewPartitions(total_count=3)})
        assert len(a.describe_topics(["kp"])[0]["partitions"]) == 3
        resp = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp")])
        text = repr(resp)
        assert "retention.ms" in text and "5000" in text
        a.delete_topics(["kp"])
        assert "kp" not in a.list_topics()
    finally:
        a.close()


def test_topics_survive_a_restart(tmp_path):
    from confluent_kafka.admin import NewTopic

    data = tmp_path / "data"
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        # The client is kept in a variable: a collected AdminClient cancels its futures.
        a = admin(b)
        wait_all(a.create_topics([NewTopic("durable", 3, 1, config={"retention.ms": "1000"})]))
        before = a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS)
    finally:
        assert b.stop() == 0
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        after = admin(b).list_topics(timeout=CLIENT_TIMEOUT_SECONDS)
        assert len(after.topics["durable"].partitions) == 3
        assert before.cluster_id == after.cluster_id
    finally:
        assert b.stop() == 0


def test_a_malformed_frame_closes_only_that_connection(broker):
    import struct

    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        # A frame whose api key exists but whose body is garbage.
        body = struct.pack(">hhi", 3, 12, 7) + b"\xff" * 20
        s.sendall(struct.pack(">i", len(body)) + body)
        assert s.recv(100) == b"", "the broker closes the connection"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        # A negative size prefix.
        s.sendall(struct.pack(">i", -5))
        assert s.recv(100) == b""
    assert 18 in harness.api_versions_probe(broker.port), "other connections are served"
    assert "closing the connection" in broker.log_tail()


def test_api_versions_at_an_unknown_version_gets_the_v0_fallback(broker):
    import struct

    request = struct.pack(">hhih", 18, 999, 42, 1) + b"x"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", harness._read_exact(s, 4))
        body = harness._read_exact(s, size)
    correlation_id, error = struct.unpack(">ih", body[:6])
    assert (correlation_id, error) == (42, 35), "UNSUPPORTED_VERSION in the v0 format"


def test_max_connections_closes_the_excess(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log", extra_args=["--override", "max.connections=2"])
    try:
        # The harness's readiness probe connection must be gone (and uncounted) first.
        time.sleep(1.5)
        held = [socket.create_connection(("127.0.0.1", b.port), timeout=10) for _ in range(2)]
        time.sleep(1.0)
        with socket.create_connection(("127.0.0.1", b.port), timeout=10) as extra:
            assert extra.recv(10) == b"", "the third connection is closed at accept"
        for s in held:
            s.close()
        time.sleep(0.5)
        assert 18 in harness.api_versions_probe(b.port), "closed connections free their slots"
        assert "max.connections reached" in b.log_tail()
    finally:
        assert b.stop() == 0


def test_describe_log_dirs(broker):
    from confluent_kafka import Producer
    from kafka.admin import KafkaAdminClient

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        p.produce("sized", value=b"x" * 100, partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=CLIENT_TIMEOUT_SECONDS * 1000)
    try:
        text = repr(a.describe_log_dirs())
    finally:
        a.close()
    assert str(broker.data_dir.resolve()) in text
    assert "sized" in text


def test_list_offsets_max_timestamp_names_the_record(broker):
    """KIP-734: MAX_TIMESTAMP answers the offset of the record carrying the largest timestamp,
    also when it sits in the middle of a batch (records at +100, +400, +200 ms in one batch:
    offset 1, not the batch's first offset)."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import NewTopic, OffsetSpec

    a = admin(broker)
    wait_all(a.create_topics([NewTopic("stamps", 1, 1)]))
    base = int(time.time() * 1000) - 60_000
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 500})
    for delta in (100, 400, 200):
        p.produce("stamps", b"v", partition=0, timestamp=base + delta)
    assert p.flush(30) == 0
    tp = TopicPartition("stamps", 0)
    got = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=30)
    assert (got.offset, got.timestamp) == (1, base + 400)
