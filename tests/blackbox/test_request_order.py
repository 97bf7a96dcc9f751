"""Requests of one connection take effect in the order they were sent, as Kafka handles a
connection's requests one at a time, even when the client pipelines them.

- A raw client sends DeleteRecords then ListOffsets(earliest), fifty times over, all in one
  write: every ListOffsets sees the log start its DeleteRecords just set.
- confluent-kafka's admin client issues delete_records and list_offsets without waiting
  between them (it pipelines both on one connection): the earliest offset it lists is the new
  log start.
- A producer pipelines acks=all batches to partitions owned by different shards of one
  broker: every record is acknowledged and read back in the order produced.
"""

import socket
import struct
import time

import harness

TOPIC = "ordered"
RECORDS = 100
ROUNDS = 50
CLIENT_TIMEOUT_SECONDS = 30
DELETE_RECORDS, LIST_OFFSETS = 21, 2
EARLIEST = -2


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation, body):
    header = struct.pack(">hhi", api_key, version, correlation) + string("order-test")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def delete_records_v1(correlation, topic, offset):
    body = struct.pack(">i", 1) + string(topic) + struct.pack(">iiq", 1, 0, offset)
    return frame(DELETE_RECORDS, 1, correlation, body + struct.pack(">i", 10_000))


def list_offsets_v1(correlation, topic, timestamp):
    body = struct.pack(">ii", -1, 1) + string(topic) + struct.pack(">iiq", 1, 0, timestamp)
    return frame(LIST_OFFSETS, 1, correlation, body)


def read_response(sock):
    size = struct.unpack(">i", harness._read_exact(sock, 4))[0]
    return harness._read_exact(sock, size)


def parse_delete_records_v1(reply):
    """(correlation id, low watermark, error code) of a one-partition answer."""
    correlation, _throttle, topics = struct.unpack(">iii", reply[:12])
    assert topics == 1, reply
    name_len = struct.unpack(">h", reply[12:14])[0]
    at = 14 + name_len
    partitions, index, low, error = struct.unpack(">iiqh", reply[at : at + 18])
    assert partitions == 1 and index == 0, reply
    return correlation, low, error


def parse_list_offsets_v1(reply):
    """(correlation id, offset, error code) of a one-partition answer."""
    correlation, topics = struct.unpack(">ii", reply[:8])
    assert topics == 1, reply
    name_len = struct.unpack(">h", reply[8:10])[0]
    at = 10 + name_len
    partitions, index, error, _timestamp, offset = struct.unpack(">iihqq", reply[at : at + 26])
    assert partitions == 1 and index == 0, reply
    return correlation, offset, error


def create_and_fill(bootstrap, topic, partitions=1, records=RECORDS):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=CLIENT_TIMEOUT_SECONDS)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    errors = []
    for i in range(records):
        p.produce(topic, str(i).encode(), partition=i % partitions,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors
    return a


def test_pipelined_delete_records_then_list_offsets_see_each_other(broker_factory):
    b = broker_factory(shards=2)
    create_and_fill(b.bootstrap, TOPIC)
    burst = b"".join(
        delete_records_v1(2 * k, TOPIC, k) + list_offsets_v1(2 * k + 1, TOPIC, EARLIEST)
        for k in range(1, ROUNDS + 1)
    )
    with socket.create_connection(("127.0.0.1", b.port), timeout=CLIENT_TIMEOUT_SECONDS) as s:
        s.sendall(burst)
        for k in range(1, ROUNDS + 1):
            assert parse_delete_records_v1(read_response(s)) == (2 * k, k, 0)
            # Sent right behind the DeleteRecords: it must see the log start that one set.
            assert parse_list_offsets_v1(read_response(s)) == (2 * k + 1, k, 0), f"round {k}"


def test_admin_client_delete_records_then_list_offsets_pipelined(broker_factory):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    b = broker_factory(shards=2)
    a = create_and_fill(b.bootstrap, TOPIC)
    a.list_topics(timeout=CLIENT_TIMEOUT_SECONDS)
    for k in (10, 37, 60):
        # Both issued before either is answered: librdkafka pipelines them to the leader.
        deleted = a.delete_records([TopicPartition(TOPIC, 0, k)])
        listed = a.list_offsets({TopicPartition(TOPIC, 0): OffsetSpec.earliest()})
        low = next(iter(deleted.values())).result(timeout=CLIENT_TIMEOUT_SECONDS)
        earliest = next(iter(listed.values())).result(timeout=CLIENT_TIMEOUT_SECONDS)
        assert low.low_watermark == k, low
        assert earliest.offset == k, f"earliest {earliest.offset} after deleting below {k}"


def test_pipelined_produce_to_several_shards_keeps_every_partitions_order(broker_factory):
    from confluent_kafka import Consumer

    b = broker_factory(shards=2)
    partitions, per_partition = 4, 500
    # Small batches, many in flight per connection: the requests overlap on the broker.
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic("spread", partitions, 1)])["spread"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    p = Producer({
        "bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1, "batch.num.messages": 10,
        "max.in.flight.requests.per.connection": 5, "enable.idempotence": True,
    })
    errors = []
    for i in range(per_partition):
        for part in range(partitions):
            p.produce("spread", f"{part}:{i}".encode(), partition=part,
                      on_delivery=lambda err, msg: err and errors.append(err))
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "order-check",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["spread"])
    got = {part: [] for part in range(partitions)}
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while sum(map(len, got.values())) < partitions * per_partition and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got[m.partition()].append(m.value().decode())
    c.close()
    for part in range(partitions):
        assert got[part] == [f"{part}:{i}" for i in range(per_partition)], f"partition {part}"


def test_list_offsets_special_timestamps(broker_factory):
    """The special timestamps of the ListOffsets versions advertised: earliest (-2) and
    earliest-local (-4) the log start, latest (-1) the high watermark, latest-tiered (-5) -1
    without an error (nothing is tiered, as Kafka answers without remote storage)."""
    b = broker_factory()
    create_and_fill(b.bootstrap, TOPIC, records=10)
    with socket.create_connection(("127.0.0.1", b.port), timeout=CLIENT_TIMEOUT_SECONDS) as s:
        s.sendall(delete_records_v1(1, TOPIC, 3))
        assert parse_delete_records_v1(read_response(s)) == (1, 3, 0)
        for corr, (timestamp, offset) in enumerate([(-2, 3), (-4, 3), (-1, 10), (-5, -1)], start=2):
            s.sendall(list_offsets_v1(corr, TOPIC, timestamp))
            assert parse_list_offsets_v1(read_response(s)) == (corr, offset, 0), timestamp
