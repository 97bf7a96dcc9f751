"""Black-box tests of Produce's record validation (parity with Kafka's LogValidator for
client batches): the real `corebus` binary receives hand-encoded Produce v8 requests whose
batches carry a valid CRC but are malformed (record count 0, an offset range that disagrees
with the count, truncated or garbled record bodies, also inside a gzip batch, control batches,
a producer id without a sequence, keyless records on a compacted topic). Each must be refused
with Kafka's error code (INVALID_RECORD 87; CORRUPT_MESSAGE 2 for a CRC mismatch) and a
message, record-level refusals must name the record in `record_errors` (KIP-467), nothing of a
refused batch may reach the log (the latest offset does not move), a valid batch beside it in
the same request is appended, and ordinary clients still produce and consume afterwards.
"""

import gzip
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 30
API_KEY_PRODUCE = 0
# v8: the last non-flexible version, the first with record_errors and error_message.
PRODUCE_VERSION = 8
INVALID_RECORD = 87
CORRUPT_MESSAGE = 2
MAX_RESPONSE_BYTES = 1 << 20


# --- CRC32C (Castagnoli), table-driven: the crc32c package is not among the pinned deps. ---
def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


# --- Record and batch encoding (KIP-98 layout), with every field open to corruption. ---
def varint(n):
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def nullable(field):
    return varint(-1) if field is None else varint(len(field)) + field


def record_body(offset_delta, key, value, headers=()):
    body = b"\x00" + varint(0) + varint(offset_delta) + nullable(key) + nullable(value)
    body += varint(len(headers))
    for hk, hv in headers:
        body += nullable(hk) + nullable(hv)
    return body


def record(offset_delta, key=b"k", value=b"v", headers=()):
    body = record_body(offset_delta, key, value, headers)
    return varint(len(body)) + body


def batch(records_data, count, last_offset_delta=None, attributes=0, producer_id=-1, base_sequence=-1, crc=None):
    """One magic-2 batch over already-encoded (and, per `attributes`, compressed) record data,
    with a correct CRC unless `crc` is given."""
    if last_offset_delta is None:
        last_offset_delta = max(count - 1, 0)
    now = int(time.time() * 1000)
    after_crc = (
        struct.pack(">hiqqqhii", attributes, last_offset_delta, now, now, producer_id, 0, base_sequence, count)
        + records_data
    )
    checksum = crc32c(after_crc) if crc is None else crc
    after_length = struct.pack(">ibI", -1, 2, checksum) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def good_batch(n=1, key=b"k"):
    return batch(b"".join(record(i, key=key, value=b"ok-%d" % i) for i in range(n)), n)


# --- Produce v8 over a raw socket. ---
def _read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed")
        out += chunk
    return out


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def produce_raw(port, topic, partitions):
    """Sends one Produce v8 (acks=-1) with {partition: record set bytes} and returns
    {partition: (error_code, base_offset, [(batch_index, message)], error_message)}."""
    body = struct.pack(">hhi", -1, -1, 10_000)  # no transactional id, acks=all, timeout
    body += struct.pack(">i", 1) + _string(topic) + struct.pack(">i", len(partitions))
    for index, records in partitions.items():
        body += struct.pack(">ii", index, len(records)) + records
    header = struct.pack(">hhi", API_KEY_PRODUCE, PRODUCE_VERSION, 77) + _string("validation-test")
    request = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_SECONDS) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exact(s, 4))
        assert 0 < size <= MAX_RESPONSE_BYTES
        r = _read_exact(s, size)
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, r, pos)
        pos += struct.calcsize(fmt)
        return values

    def nullable_string():
        (n,) = take(">h")
        if n < 0:
            return None
        nonlocal pos
        out = r[pos : pos + n].decode()
        pos += n
        return out

    (correlation_id,) = take(">i")
    assert correlation_id == 77
    out = {}
    (topics,) = take(">i")
    for _ in range(topics):
        assert nullable_string() == topic
        (count,) = take(">i")
        for _ in range(count):
            index, error, base_offset, _append_time, _log_start = take(">ihqqq")
            (n_errors,) = take(">i")
            record_errors = []
            for _ in range(n_errors):
                (batch_index,) = take(">i")
                record_errors.append((batch_index, nullable_string()))
            out[index] = (error, base_offset, record_errors, nullable_string())
    take(">i")  # throttle_time_ms
    assert pos == len(r), "trailing bytes in the Produce response"
    return out


def create_topic(b, name, partitions, config=None):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )


def latest_offsets(b, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "unused"})
    try:
        return [
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=CLIENT_TIMEOUT_SECONDS)[1]
            for p in range(partitions)
        ]
    finally:
        c.close()


def consume_values(b, topic, partition, count):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(got) < count and time.monotonic() < deadline:
        for m in c.consume(100, timeout=1):
            assert m.error() is None, m.error()
            got.append(m.value())
    c.close()
    return got


def _garbled_cases():
    """(name, record set, expected code, expected message fragment, expected record index)."""
    two = record(0) + record(1)
    # Record 1's length says 50 bytes, 8 are present.
    truncated = record(0) + varint(50) + record_body(1, b"k", b"v")
    # Key length -2 inside a gzip batch.
    bad_key = b"\x00" + varint(0) + varint(1) + varint(-2) + varint(-1) + varint(0)
    gzip_inner = record(0) + varint(len(bad_key)) + bad_key
    # One record whose length covers a byte its fields do not use.
    padded = record_body(0, b"k", b"v") + b"\x00"
    return [
        ("record count 0", batch(b"", 0, last_offset_delta=0), INVALID_RECORD, "Invalid reported count", None),
        (
            "huge last offset delta",
            batch(record(0), 1, last_offset_delta=2**31 - 1),
            INVALID_RECORD,
            "Inconsistent batch offset range",
            None,
        ),
        ("count above the records", batch(two, 3), INVALID_RECORD, "declares 3 records", None),
        ("truncated record body", batch(truncated, 2), INVALID_RECORD, "invalid record", 1),
        ("garbage after the records", batch(two + b"\x07\x01", 2), INVALID_RECORD, "bytes remain", None),
        ("byte left inside a record", batch(varint(len(padded)) + padded, 1), INVALID_RECORD, "record length", 0),
        ("offset deltas not 0..n", batch(record(0) + record(0), 2), INVALID_RECORD, "offset delta", 1),
        (
            "malformed record inside gzip",
            batch(gzip.compress(gzip_inner), 2, attributes=1),
            INVALID_RECORD,
            "record key",
            1,
        ),
        ("gzip garbage", batch(b"\xff" * 32, 1, attributes=1), CORRUPT_MESSAGE, "decompression", None),
        ("control batch", batch(record(0), 1, attributes=0x20), INVALID_RECORD, "control records", None),
        (
            "producer id without a sequence",
            batch(record(0), 1, producer_id=5, base_sequence=-1),
            INVALID_RECORD,
            "Invalid sequence number",
            None,
        ),
        ("CRC mismatch", batch(record(0), 1, crc=0x1234), CORRUPT_MESSAGE, "CRC", None),
    ]


def test_malformed_batches_are_refused_and_nothing_is_appended(broker_factory):
    b = broker_factory()
    create_topic(b, "strict", 2)
    cases = _garbled_cases()
    for n, (name, bad, code, fragment, index) in enumerate(cases):
        # The bad batch on partition 0 and a valid one on partition 1, in one request.
        result = produce_raw(b.port, "strict", {0: bad, 1: good_batch()})
        error, base_offset, record_errors, message = result[0]
        assert error == code, f"{name}: code {error}, message {message!r}"
        assert base_offset == -1, name
        assert message and fragment.lower() in message.lower(), f"{name}: {message!r}"
        if index is None:
            assert record_errors == [], f"{name}: {record_errors}"
        else:
            assert [i for i, _ in record_errors] == [index], f"{name}: {record_errors}"
            assert record_errors[0][1] == message
        assert result[1][:2] == (0, n), f"{name}: the valid partition was refused: {result[1]}"
        # A valid batch after a malformed one in the same record set: the whole set is refused.
        result = produce_raw(b.port, "strict", {0: good_batch() + bad})
        assert result[0][0] == code, f"{name} after a valid batch: {result[0]}"
    assert latest_offsets(b, "strict", 2) == [0, len(cases)], "a refused batch reached the log"

    # The partition still takes ordinary produces and serves them to consumers.
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "compression.type": "lz4"})
    for i in range(5):
        p.produce("strict", key=b"k", value=b"after-%d" % i, partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    result = produce_raw(b.port, "strict", {0: good_batch(3)})
    assert result[0][:2] == (0, 5)
    assert latest_offsets(b, "strict", 2) == [8, len(cases)]
    assert consume_values(b, "strict", 0, 8) == [b"after-%d" % i for i in range(5)] + [
        b"ok-0",
        b"ok-1",
        b"ok-2",
    ]


def test_compacted_topics_name_the_keyless_record(broker_factory):
    b = broker_factory()
    create_topic(b, "keyed", 1, {"cleanup.policy": "compact"})
    keyless_second = record(0, key=b"a") + record(1, key=None) + record(2, key=b"c")
    for attributes, data in [(0, keyless_second), (1, gzip.compress(keyless_second))]:
        result = produce_raw(b.port, "keyed", {0: batch(data, 3, attributes=attributes)})
        error, _, record_errors, message = result[0]
        assert error == INVALID_RECORD, result
        assert "without key" in message
        assert [i for i, _ in record_errors] == [1], record_errors
    assert latest_offsets(b, "keyed", 1) == [0]
    result = produce_raw(b.port, "keyed", {0: good_batch(2)})
    assert result[0][:2] == (0, 0)
    assert consume_values(b, "keyed", 0, 2) == [b"ok-0", b"ok-1"]


@pytest.mark.parametrize("version", [3, 7])
def test_older_versions_get_the_code_without_record_errors(broker_factory, version):
    """Produce v3..v7 responses carry no record_errors or error_message: only the code."""
    b = broker_factory()
    create_topic(b, "old", 1)
    body = struct.pack(">hhi", -1, -1, 10_000) + struct.pack(">i", 1) + _string("old") + struct.pack(">i", 1)
    bad = batch(b"", 0, last_offset_delta=0)
    body += struct.pack(">ii", 0, len(bad)) + bad
    request = struct.pack(">hhi", API_KEY_PRODUCE, version, 5) + _string("v") + body
    with socket.create_connection(("127.0.0.1", b.port), timeout=CLIENT_TIMEOUT_SECONDS) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exact(s, 4))
        r = _read_exact(s, size)
    # correlation id, 1 topic, "old", 1 partition, index, error, base offset, append time,
    # log start (v5+), throttle time.
    tail = 8 + 8 + (8 if version >= 5 else 0) + 4
    expected_size = 4 + 4 + 2 + 3 + 4 + 4 + 2 + tail
    assert len(r) == expected_size
    (error,) = struct.unpack_from(">h", r, 4 + 4 + 2 + 3 + 4 + 4)
    assert error == INVALID_RECORD
    assert latest_offsets(b, "old", 1) == [0]


def test_librdkafka_fails_only_the_keyless_records_of_a_batch_to_a_compacted_topic(broker):
    """librdkafka's own test 0011 (variation 0) against corebus: 100 records in one batch to a
    compacted topic, every tenth without a key. The broker names every keyless record in
    `record_errors` (as Kafka does), so librdkafka fails exactly those 10 with INVALID_RECORD
    and the 90 others with its local _INVALID_DIFFERENT_RECORD (retriable by the
    application), instead of failing all 100 with INVALID_RECORD."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic("compact-0011", 1, 1, config={"cleanup.policy": "compact"})])[
        "compact-0011"
    ].result(timeout=CLIENT_TIMEOUT_SECONDS)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 500})
    errors = {}
    for i in range(100):
        key = None if i % 10 == 0 else f"k{i}".encode()
        p.produce("compact-0011", f"v{i}".encode(), key=key, partition=0,
                  on_delivery=lambda err, msg, i=i: errors.__setitem__(i, err and err.code()))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert len(errors) == 100
    assert sorted(i for i, e in errors.items() if e == KafkaError.INVALID_RECORD) == list(range(0, 100, 10))
    assert sum(e == KafkaError._INVALID_DIFFERENT_RECORD for e in errors.values()) == 90
