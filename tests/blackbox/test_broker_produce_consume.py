"""Black-box produce/consume tests: the real `corebus` binary driven by kcat (librdkafka
2.0.2), confluent-kafka (librdkafka 2.16) and kafka-python, with keys, headers and every
compression codec; records are read back and compared byte for byte, again after a restart;
ListOffsets by timestamp; a long-poll fetch woken by an append.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 60
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Records per codec per client; 5 codecs x 2 clients x 10,000 = 100,000 records in all.
RECORDS_PER_CODEC = 10_000


@pytest.fixture
def broker(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield b
    code = b.stop()
    assert code == 0, f"broker exited with {code}; log:\n{b.log_tail()}"


def records(prefix, n):
    """Distinct keys, values of varying size, two headers (one repeated key kept twice)."""
    out = []
    for i in range(n):
        key = f"{prefix}-k{i}".encode()
        value = (f"{prefix}-v{i}-" + "x" * (i % 97)).encode()
        headers = [("h", f"{i}".encode()), ("h", b"dup"), ("bin", bytes([i % 256, 0, 255]))]
        out.append((key, value, headers))
    return out


def produce_confluent(bootstrap, topic, recs, codec, acks="all"):
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "acks": acks,
            "linger.ms": 5,
            "enable.idempotence": True,
        }
    )
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for key, value, headers in recs:
        p.produce(topic, value=value, key=key, headers=headers, partition=0, on_delivery=cb)
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert not errors, errors[:3]


def produce_kafka_python(bootstrap, topic, recs, codec):
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if codec == "none" else codec,
        acks="all",
        linger_ms=5,
        # kafka-python 3 turns idempotence on by default; keep it explicit.
        enable_idempotence=True,
    )
    futures = [p.send(topic, value=v, key=k, headers=h, partition=0) for k, v, h in recs]
    for f in futures:
        f.get(timeout=CLIENT_TIMEOUT_SECONDS)
    p.close()


def consume_confluent(bootstrap, topic, count):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    # No group coordinator yet: assign the partition directly.
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(got) < count and time.monotonic() < deadline:
        for m in c.consume(1000, timeout=1):
            assert m.error() is None, m.error()
            got.append((m.key(), m.value(), [(k, v) for k, v in (m.headers() or [])], m.offset()))
    c.close()
    return got


def consume_kafka_python(bootstrap, topic, count):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(got) < count and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=1000).values():
            got.extend((m.key, m.value, list(m.headers), m.offset) for m in batch)
    c.close()
    return got


def expected(all_recs):
    return [(k, v, h) for k, v, h in all_recs]


def test_every_codec_round_trips_byte_for_byte_across_clients_and_restart(tmp_path):
    data = tmp_path / "data"
    b = harness.start_broker(data, tmp_path / "broker.log")
    produced = []
    try:
        for codec in CODECS:
            recs = records(f"ck-{codec}", RECORDS_PER_CODEC)
            produce_confluent(b.bootstrap, "codecs", recs, codec)
            produced.extend(recs)
            recs = records(f"kp-{codec}", RECORDS_PER_CODEC)
            produce_kafka_python(b.bootstrap, "codecs", recs, codec)
            produced.extend(recs)
        total = len(produced)
        got = consume_confluent(b.bootstrap, "codecs", total)
        assert [(k, v, h) for k, v, h, _ in got] == expected(produced)
        assert [o for *_, o in got] == list(range(total)), "offsets are dense from 0"
        got = consume_kafka_python(b.bootstrap, "codecs", total)
        assert [(k, v, h) for k, v, h, _ in got] == expected(produced)
    finally:
        assert b.stop() == 0, b.log_tail()
    # A clean restart keeps everything.
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        got = consume_confluent(b.bootstrap, "codecs", len(produced))
        assert [(k, v, h) for k, v, h, _ in got] == expected(produced)
        # Appends continue after the last offset.
        produce_confluent(b.bootstrap, "codecs", records("after", 10), "lz4")
        got = consume_confluent(b.bootstrap, "codecs", len(produced) + 10)
        assert got[-1][3] == len(produced) + 9
    finally:
        assert b.stop() == 0, b.log_tail()


def test_kcat_produce_and_consume(broker):
    lines = "\n".join(f"line-{i}" for i in range(5000)) + "\n"
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = subprocess.run(
            [harness.kcat_binary(), "-b", broker.bootstrap, "-P", "-t", "kc", "-p", "0", "-z", codec, "-X", "acks=all"],
            input=lines,
            text=True,
            capture_output=True,
            timeout=CLIENT_TIMEOUT_SECONDS,
        )
        assert p.returncode == 0 and "ERROR" not in p.stderr, p.stderr
    c = subprocess.run(
        [harness.kcat_binary(), "-b", broker.bootstrap, "-C", "-t", "kc", "-e", "-q"],
        text=True,
        capture_output=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
    )
    assert c.returncode == 0, c.stderr
    assert c.stdout == lines * 5


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    from confluent_kafka import Consumer, TopicPartition

    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    base = int(time.time() * 1000) - 100_000
    for i in range(100):
        # One record per millisecond step of 1000: distinct, increasing CreateTime stamps.
        p.produce("ts", value=str(i).encode(), partition=0, timestamp=base + i * 1000)
        p.flush(CLIENT_TIMEOUT_SECONDS)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    low, high = c.get_watermark_offsets(TopicPartition("ts", 0), timeout=CLIENT_TIMEOUT_SECONDS)
    assert (low, high) == (0, 100)
    for i in [0, 1, 37, 99]:
        [tp] = c.offsets_for_times([TopicPartition("ts", 0, base + i * 1000)], timeout=CLIENT_TIMEOUT_SECONDS)
        assert tp.offset == i
        # Between two records: the next one.
        [tp] = c.offsets_for_times([TopicPartition("ts", 0, base + i * 1000 - 1)], timeout=CLIENT_TIMEOUT_SECONDS)
        assert tp.offset == i
    [tp] = c.offsets_for_times([TopicPartition("ts", 0, base + 1_000_000)], timeout=CLIENT_TIMEOUT_SECONDS)
    assert tp.offset == -1, "no record that late: end"
    c.close()


def test_long_poll_is_woken_by_an_append(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("lp", 1, 1)])["lp"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    # A 20 s max wait: the record must arrive long before it.
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=20_000, group_id=None)
    tp = TopicPartition("lp", 0)
    c.assign([tp])
    c.seek(tp, 0)
    c.poll(timeout_ms=100)  # the first fetch is now parked on the broker

    def produce_later():
        time.sleep(1.0)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap)
        p.send("lp", b"wake", partition=0).get(timeout=CLIENT_TIMEOUT_SECONDS)
        p.close()

    t = threading.Thread(target=produce_later)
    started = time.monotonic()
    t.start()
    got = []
    while not got and time.monotonic() - started < 15:
        for batch in c.poll(timeout_ms=15_000).values():
            got.extend(batch)
    t.join()
    elapsed = time.monotonic() - started
    c.close()
    assert [m.value for m in got] == [b"wake"]
    assert elapsed < 10, f"took {elapsed:.1f}s: the append did not wake the fetch"


def test_produce_errors_use_kafkas_codes(broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("small", 1, 1, config={"max.message.bytes": "2000"})])["small"].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 100_000, "compression.type": "none"})
    p.produce("small", value=b"x" * 5000, partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(CLIENT_TIMEOUT_SECONDS)
    assert errors and errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"
    # A batch within the limit still goes through.
    errors.clear()
    p.produce("small", value=b"x" * 100, partition=0, on_delivery=lambda e, m: errors.append(e))
    p.flush(CLIENT_TIMEOUT_SECONDS)
    assert errors == [None]


def test_delete_records_moves_the_log_start(broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(50):
        p.produce("dr", value=str(i).encode(), partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    [f] = a.delete_records([TopicPartition("dr", 0, 20)]).values()
    assert f.result(timeout=CLIENT_TIMEOUT_SECONDS).low_watermark == 20
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "auto.offset.reset": "earliest"})
    assert c.get_watermark_offsets(TopicPartition("dr", 0), timeout=CLIENT_TIMEOUT_SECONDS) == (20, 50)
    c.assign([TopicPartition("dr", 0, 0)])  # below the start: reset to earliest
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(got) < 30 and time.monotonic() < deadline:
        got.extend(m.value() for m in c.consume(100, timeout=1) if m.error() is None)
    c.close()
    assert got[0] == b"20" and got[-1] == b"49"


def test_a_compacted_topic_refuses_records_without_a_key(broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"})])["compacted"].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    results = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4"})
    p.produce("compacted", value=b"no key", partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(CLIENT_TIMEOUT_SECONDS)
    p.produce("compacted", key=b"k", value=b"keyed", partition=0, on_delivery=lambda e, m: results.append(e))
    p.flush(CLIENT_TIMEOUT_SECONDS)
    assert results[0] is not None and results[0].name() == "INVALID_RECORD"
    assert results[1] is None


def test_kafka_python_uses_an_incremental_fetch_session(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(100):
        p.send("sess", str(i).encode(), partition=0)
    p.flush()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=100)
    tp = TopicPartition("sess", 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    for _ in range(10):
        for batch in c.poll(timeout_ms=300).values():
            got.extend(m.value for m in batch)
    # Later records arrive through the incremental session too.
    p.send("sess", b"late", partition=0).get(timeout=CLIENT_TIMEOUT_SECONDS)
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while b"late" not in got and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=300).values():
            got.extend(m.value for m in batch)
    p.close()
    # kafka-python's session handler (an internal, but the only place the session shows).
    [handler] = c._fetcher._session_handlers.values()
    session_id, epoch = handler.next_metadata.session_id, handler.next_metadata.epoch
    c.close()
    assert got == [str(i).encode() for i in range(100)] + [b"late"]
    assert session_id != 0 and epoch > 1, "the broker created a session and the client used it"


def test_retention_deletes_old_segments(tmp_path):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    b = harness.start_broker(
        tmp_path / "data", tmp_path / "broker.log", extra_args=["--override", "log.retention.check.interval.ms=300"]
    )
    try:
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        config = {"segment.bytes": "16384", "retention.ms": "1000"}
        a.create_topics([NewTopic("ret", 1, 1, config=config)])["ret"].result(timeout=CLIENT_TIMEOUT_SECONDS)
        # Batches must fit a segment (16 KiB here).
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.size": 8000})
        for i in range(200):
            p.produce("ret", value=b"x" * 500, partition=0)
            p.poll(0)
        assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "unused"})
        deadline = time.monotonic() + 20
        low = 0
        while low == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            low, high = c.get_watermark_offsets(TopicPartition("ret", 0), timeout=CLIENT_TIMEOUT_SECONDS)
        c.close()
        assert 0 < low <= 200 and high == 200, (low, high)
        assert "retention deleted segments" in b.log_tail()
    finally:
        assert b.stop() == 0, b.log_tail()


def test_two_shards_route_partitions_across_cores(tmp_path):
    """The one test about sharding: partitions spread over two shards, requests arriving on
    either shard reach each partition's owner, and a restart keeps the placement."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    data = tmp_path / "data"
    b = harness.start_broker(data, tmp_path / "broker.log", shards=2)
    try:
        deadline = time.monotonic() + 10
        while "corebus is ready" not in b.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "shard=1 cpu=" in b.log_tail()
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        a.create_topics([NewTopic("spread", 8, 1)])["spread"].result(timeout=CLIENT_TIMEOUT_SECONDS)
        p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True})
        for part in range(8):
            for i in range(50):
                p.produce("spread", value=f"{part}-{i}".encode(), partition=part)
        assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    finally:
        assert b.stop() == 0, b.log_tail()
    b = harness.start_broker(data, tmp_path / "broker.log", shards=2)
    try:
        # Several consumers, so connections land on both shards.
        for _ in range(3):
            c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "unused"})
            c.assign([TopicPartition("spread", part, 0) for part in range(8)])
            got = {}
            deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
            while sum(len(v) for v in got.values()) < 400 and time.monotonic() < deadline:
                for m in c.consume(500, timeout=1):
                    assert m.error() is None, m.error()
                    got.setdefault(m.partition(), []).append(m.value())
            c.close()
            for part in range(8):
                assert got.get(part) == [f"{part}-{i}".encode() for i in range(50)], part
    finally:
        assert b.stop() == 0, b.log_tail()


KAFKAJS_PRODUCE = r"""
// Produces with kafkajs: idempotent (acks=all), keys and headers, one send per codec that
// kafkajs carries built in (none, gzip) plus snappy through kafkajs-snappy.
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');
const [bootstrap, topic, perCodec] = [process.argv[1], process.argv[2], Number(process.argv[3])];
const codecs = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy };
(async () => {
  const kafka = new Kafka({ clientId: 'blackbox-kafkajs', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const [name, codec] of Object.entries(codecs)) {
    for (let start = 0; start < perCodec; start += 500) {
      const messages = [];
      for (let i = start; i < Math.min(start + 500, perCodec); i++) {
        messages.push({ key: `js-${name}-k${i}`, value: `js-${name}-v${i}-` + 'y'.repeat(i % 89),
                        partition: 0, headers: { h: `${i}` } });
      }
      await producer.send({ topic, acks: -1, compression: codec, messages });
    }
  }
  await producer.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_kafkajs_produces_with_its_codecs(broker, node_env):
    """kafkajs (its own protocol implementation, not librdkafka) produces idempotently with
    none, gzip and snappy; confluent-kafka reads every record back byte for byte. (kafkajs's
    consumer always joins a group, so it is exercised by the groups tests.)"""
    per_codec = 2_000
    subprocess.run(
        ["node", "-e", KAFKAJS_PRODUCE, broker.bootstrap, "js", str(per_codec)],
        check=True,
        env=node_env,
        timeout=CLIENT_TIMEOUT_SECONDS * 2,
    )
    want = [
        (f"js-{c}-k{i}".encode(), (f"js-{c}-v{i}-" + "y" * (i % 89)).encode(), [("h", f"{i}".encode())])
        for c in ("none", "gzip", "snappy")
        for i in range(per_codec)
    ]
    got = consume_confluent(broker.bootstrap, "js", len(want))
    assert [(k, v, h) for k, v, h, _ in got] == want
    assert [o for *_, o in got] == list(range(len(want)))
