"""Black-box test of the log cleaner: a compacted topic with small segments, keyed records
overwritten many times and some deleted (tombstones), written by confluent-kafka (lz4,
idempotent). With the cleaner tuned to wake every 200 ms (`--override`), a consumer from the
beginning soon sees only the latest value of each key at the offset it was written at; the
tombstones disappear once delete.retention.ms has passed after their first clean; a restart
keeps the compacted log.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402,F401

CLIENT_TIMEOUT_SECONDS = 60
CLEANER_ARGS = ["--override", "log.cleaner.backoff.ms=200"]
KEYS = 30
ROUNDS = 12
DELETED = {b"key-3", b"key-7", b"key-11"}
DELETE_RETENTION_MS = 3000
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "8192",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(DELETE_RETENTION_MS),
}


def produce(bootstrap, records):
    """Produces (key, value) records one batch per round; returns {(key, value): offset}."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "linger.ms": 2,
            # Batches well below segment.bytes (a batch larger than a segment is refused).
            "batch.size": 2000,
        }
    )
    offsets, errors = {}, []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            offsets[(msg.key(), msg.value())] = msg.offset()

    for key, value in records:
        p.produce("compacted", key=key, value=value, partition=0, on_delivery=done)
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert not errors, errors
    return offsets


def read_all(bootstrap):
    """Every record from the beginning up to the high watermark: [(offset, key, value)]."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition("compacted", 0), timeout=CLIENT_TIMEOUT_SECONDS)
    c.assign([TopicPartition("compacted", 0, low)])
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while (not got or got[-1][0] < high - 1) and time.monotonic() < deadline:
        for m in c.consume(1000, timeout=1):
            assert m.error() is None, m.error()
            got.append((m.offset(), m.key(), m.value()))
    c.close()
    assert got and got[-1][0] == high - 1, f"read up to {got[-1][0] if got else None} of {high}"
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets)), "offsets must increase"
    return got


def read_all_kafka_python(bootstrap, high):
    """The same with kafka-python (its own fetch code: gaps and emptied batches)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    tp = TopicPartition("compacted", 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while (not got or got[-1][0] < high - 1) and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=1000).values():
            got.extend((m.offset, m.key, m.value) for m in batch)
    c.close()
    return got


def wait_for(bootstrap, condition, what, timeout_seconds=40):
    deadline = time.monotonic() + timeout_seconds
    while True:
        got = read_all(bootstrap)
        if condition(got):
            return got
        assert time.monotonic() < deadline, f"{what} did not happen; the log holds {len(got)} records"
        time.sleep(0.5)


def test_compacted_topic_keeps_the_latest_value_per_key(broker_factory):
    from confluent_kafka.admin import AdminClient, NewTopic

    b = broker_factory(extra_args=CLEANER_ARGS)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("compacted", 1, 1, config=TOPIC_CONFIG)])["compacted"].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    records = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"key-{k}".encode()
            tombstone = r == ROUNDS - 1 and key in DELETED
            records.append((key, None if tombstone else f"value-{k}-round-{r}-".encode() + b"x" * 40))
    # Unique keys after the overwrites: they roll segments, so every overwrite ends up in a
    # sealed (cleanable) segment while the active one holds only these.
    records += [(f"filler-{i}".encode(), b"f" * 60) for i in range(150)]
    written = produce(b.bootstrap, records)
    latest = {}
    for key, value in records:
        latest[key] = value

    def compacted(got, tombstones_gone):
        keys = [k for _, k, _ in got]
        if len(keys) != len(set(keys)):
            return False
        want = {k: v for k, v in latest.items() if not (tombstones_gone and v is None)}
        return {k: v for _, k, v in got} == want

    got = wait_for(b.bootstrap, lambda g: compacted(g, False), "compaction")
    for offset, key, value in got:
        assert written[(key, value)] == offset, "a kept record keeps its offset"
    assert any(v is None for _, _, v in got), "tombstones stay until delete.retention.ms"
    assert len(got) < len(records) // 2
    # After delete.retention.ms (counted from their first clean) the tombstones go, with no
    # new writes to make the log dirty.
    got = wait_for(b.bootstrap, lambda g: compacted(g, True), "tombstone removal")
    assert not any(k in DELETED for _, k, _ in got)
    assert read_all_kafka_python(b.bootstrap, got[-1][0] + 1) == got
    assert b.stop() == 0
    again = broker_factory(data_dir=b.data_dir, extra_args=CLEANER_ARGS)
    assert read_all(again.bootstrap) == got, "a restart keeps the compacted log"
    # And the log takes writes again after the gaps compaction left.
    more = produce(again.bootstrap, [(b"key-0", b"after restart")])
    assert more[(b"key-0", b"after restart")] == got[-1][0] + 1
