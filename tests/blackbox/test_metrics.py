"""Black-box tests of the metrics endpoint (`--metrics-listen`): the real broker on loopback,
driven with confluent-kafka, scraped over HTTP and parsed by the Prometheus project's own
Python client (its strict OpenMetrics parser and its Prometheus text parser).

Covers: counters that grow with produce and fetch traffic, histogram counts that equal the
request counts, error labels (UNKNOWN_TOPIC_OR_PARTITION), per-shard labels, partitions and
log size gauges, /health, /ready, 404 and 405, `--metrics-listen off`, and an explicit address
that is taken.
"""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 10
REFUSAL_TIMEOUT_SECONDS = 20
READY_TIMEOUT_SECONDS = 30
RECORDS = 50
PARTITIONS = 2


def get(port, path, method="GET"):
    """(status, content type, body) of one HTTP request to the metrics listener."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(port):
    """Every sample as {(name, frozenset(labels)): value}, parsed strictly (OpenMetrics) and
    checked to parse as Prometheus text too."""
    status, content_type, text = get(port, "/metrics")
    assert status == 200, text
    assert content_type.startswith("application/openmetrics-text"), content_type
    samples = {}
    families = list(parse_openmetrics(text))
    for family in families:
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    # The classic Prometheus text parser reads the same exposition.
    assert {f.name for f in parse_prometheus(text)} >= {"corebus_requests", "corebus_ready"}
    return samples, families


def total(samples, name, **labels):
    """Sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_ready(port):
    """Waits for /ready to answer 200, as a readiness probe does: the Kafka port accepts
    connections while shard 0 still registers the broker in the consensus tree."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = None
    while time.monotonic() < deadline:
        last = get(port, "/ready")
        if last[0] == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"/ready never answered 200 within {READY_TIMEOUT_SECONDS} s: {last}")


def partitions_agree(admin, port):
    """Waits until `corebus_partitions` equals the partitions Metadata lists; returns it."""
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while True:
        gauge = total(scrape(port)[0], "corebus_partitions")
        listed = sum(len(t.partitions) for t in admin.list_topics(timeout=10).topics.values())
        if gauge == listed or time.monotonic() > deadline:
            assert gauge == listed, f"corebus_partitions {gauge}, Metadata lists {listed}"
            return gauge
        time.sleep(0.2)


@pytest.fixture
def broker(tmp_path):
    port = harness.free_port()
    b = harness.start_broker(
        tmp_path / "data",
        tmp_path / "broker.log",
        shards=2,
        metrics_listen=f"127.0.0.1:{port}",
        extra_args=["--override", "auto.create.topics.enable=false"],
    )
    b.metrics_port = port
    wait_ready(port)
    yield b
    code = b.stop()
    assert code == 0, f"broker exited with {code}; log:\n{b.log_tail()}"


def create_topic(b, name):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=CLIENT_TIMEOUT_SECONDS)
    return admin


def produce(b, topic):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    errors = []
    for i in range(RECORDS):
        p.produce(
            topic,
            key=f"k{i}".encode(),
            value=b"v" * 100,
            partition=i % PARTITIONS,
            on_delivery=lambda err, _msg: err and errors.append(err),
        )
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert errors == []


def consume(b, topic):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = 0
    try:
        while got < RECORDS:
            msgs = c.consume(RECORDS, timeout=CLIENT_TIMEOUT_SECONDS)
            assert msgs, f"no records after {got}"
            for m in msgs:
                assert m.error() is None, m.error()
                got += 1
    finally:
        c.close()
    return got


def test_counters_and_histograms_follow_produce_and_fetch(broker):
    before, _ = scrape(broker.metrics_port)
    assert total(before, "corebus_ready") == 1
    assert total(before, "corebus_shard_up") == 2
    admin = create_topic(broker, "metered")
    produce(broker, "metered")
    assert consume(broker, "metered") == RECORDS
    # Metadata for a topic that does not exist (auto-creation is off): an error label.
    md = admin.list_topics(topic="missing", timeout=CLIENT_TIMEOUT_SECONDS)
    assert md.topics["missing"].error is not None

    after, families = scrape(broker.metrics_port)
    produced = total(after, "corebus_requests_total", api="Produce", error="NONE")
    assert produced >= 1, after
    assert total(after, "corebus_requests_total", api="Fetch", error="NONE") >= 1
    assert total(after, "corebus_requests_total", api="CreateTopics", error="NONE") == 1
    assert total(after, "corebus_requests_total", api="Metadata", error="UNKNOWN_TOPIC_OR_PARTITION") >= 1
    # Both shards report under their own label.
    shards = {dict(ls).get("shard") for (n, ls) in after if n == "corebus_requests_total"}
    assert shards <= {"0", "1"} and shards, shards
    for name in ("corebus_network_received_bytes_total", "corebus_network_sent_bytes_total"):
        assert total(after, name) > total(before, name), name
    # RECORDS records of 100 bytes went in, and came out again.
    assert total(after, "corebus_network_received_bytes_total") > RECORDS * 100
    assert total(after, "corebus_network_sent_bytes_total") > RECORDS * 100

    # Histogram counts equal the request counts of their API, and buckets are cumulative up
    # to +Inf == count.
    for api, hist in (("Produce", "corebus_produce_latency_seconds"), ("Fetch", "corebus_fetch_latency_seconds")):
        requests = total(after, "corebus_requests_total", api=api)
        assert total(after, f"{hist}_count") == requests, (api, requests)
        assert total(after, f"{hist}_bucket", le="+Inf") == requests
        assert total(after, f"{hist}_sum") > 0
    for family in families:
        if family.type != "histogram":
            continue
        by_shard = {}
        for s in family.samples:
            if s.name.endswith("_bucket"):
                by_shard.setdefault(s.labels["shard"], []).append(s.value)
        for counts in by_shard.values():
            assert counts == sorted(counts), (family.name, counts)
    # acks=all waits for the fdatasync: the group commit ran and was timed.
    assert total(after, "corebus_storage_fsync_latency_seconds_count") >= 1

    # Every partition the broker serves: this test's topic, plus __consumer_offsets once the
    # consumer's group.id made librdkafka look for a coordinator (created asynchronously, so
    # the gauge is compared with Metadata until the two agree).
    assert partitions_agree(admin, broker.metrics_port) >= PARTITIONS
    assert total(after, "corebus_log_size_bytes") > RECORDS * 100
    assert total(after, "corebus_produce_memory_budget_bytes") > 0
    assert total(after, "corebus_connections_accepted_total") >= 3
    # The embedded consensus group of one leads.
    assert total(after, "corebus_consensus_role", role="leading") == 1
    assert total(after, "corebus_consensus_serving") == 1
    # CreateTopics wrote to the consensus tree: the committed zxid is past epoch 1's start.
    assert total(after, "corebus_consensus_committed_zxid") > total(before, "corebus_consensus_committed_zxid")
    assert total(after, "corebus_consensus_epoch") >= 1
    # The broker's own registration holds a session in the embedded group.
    assert total(after, "corebus_consensus_sessions") >= 1


def test_health_ready_and_unknown_paths(broker):
    port = broker.metrics_port
    assert get(port, "/health")[0] == 200
    assert get(port, "/ready") == (200, "text/plain; charset=utf-8", "ready\n")
    assert get(port, "/ready?verbose=1")[0] == 200
    status, _, body = get(port, "/no-such-path")
    assert status == 404 and "/metrics" in body
    assert get(port, "/metrics", method="POST")[0] == 405


def test_metrics_off_listens_nowhere(tmp_path):
    port = harness.free_port()
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log", metrics_listen="off")
    try:
        # Nothing took the chosen port: the metrics listener did not start.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_SECONDS).close()
        assert "/ready listening" not in b.log_tail()
    finally:
        assert b.stop() == 0


def test_an_explicit_address_that_is_taken_stops_start_up(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        p = subprocess.run(
            [
                str(harness.corebus_binary()),
                "--listen", f"127.0.0.1:{harness.free_port()}",
                "--consensus-listen", "127.0.0.1:0",
                "--data-dir", str(tmp_path / "data"),
                "--shards", "1",
                "--metrics-listen", f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=REFUSAL_TIMEOUT_SECONDS,
        )
    assert p.returncode != 0
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in p.stderr, p.stderr


def test_alive_but_not_ready_while_the_metadata_waits_for_a_quorum(tmp_path):
    # Node 1 of a two-member consensus group whose other member never starts: the broker waits
    # for the group to serve the metadata (up to 30 s), with the probes already answering.
    metrics_port = harness.free_port()
    peers = f"1@127.0.0.1:{harness.free_port()},2@127.0.0.1:{harness.free_port()}"
    log_path = tmp_path / "broker.log"
    with open(log_path, "wb") as log:
        p = subprocess.Popen(
            [
                str(harness.corebus_binary()),
                "--listen", f"127.0.0.1:{harness.free_port()}",
                "--node-id", "1",
                "--consensus-peers", peers,
                "--data-dir", str(tmp_path / "data"),
                "--shards", "1",
                "--metrics-listen", f"127.0.0.1:{metrics_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + harness.BROKER_START_TIMEOUT_SECONDS
        while True:
            assert p.poll() is None, log_path.read_text()
            try:
                status = get(metrics_port, "/health")[0]
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(harness.PROBE_INTERVAL_SECONDS)
        assert status == 200
        assert get(metrics_port, "/ready") == (503, "text/plain; charset=utf-8", "starting\n")
        samples, _ = scrape(metrics_port)
        assert total(samples, "corebus_ready") == 0
        assert total(samples, "corebus_shard_up") == 0
        assert total(samples, "corebus_consensus_serving") == 0
        assert total(samples, "corebus_consensus_role", role="leading") == 0
    finally:
        p.kill()
        p.wait()
