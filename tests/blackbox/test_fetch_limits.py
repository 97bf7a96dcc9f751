"""Fetch honours the request's `max_bytes` as Kafka does (KIP-74): a consumer whose
`fetch.max.bytes` is far below one partition's data reads it all, in responses its
`receive.message.max.bytes` accepts (librdkafka's test 0082 failed with "Invalid response
size" when the broker returned a whole partition up to `max.partition.fetch.bytes`).
"""

import time

RECORDS = 6_000
VALUE_BYTES = 1_024
CLIENT_TIMEOUT_SECONDS = 60


def test_consumer_with_fetch_max_bytes_below_a_partitions_data_reads_it_all(broker_factory):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    b = broker_factory(shards=2)
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic("limited", 2, 1)])["limited"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, "batch.size": 64 * 1024})
    errors = []
    for i in range(RECORDS):
        p.produce("limited", (b"%08d" % i) * (VALUE_BYTES // 8), partition=i % 2,
                  on_delivery=lambda err, msg: err and errors.append(err))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0 and not errors, errors
    # Each partition holds about 3 MB; a response may carry 200 kB (librdkafka refuses
    # responses above receive.message.max.bytes, which must exceed fetch.max.bytes by 512).
    c = Consumer({
        "bootstrap.servers": b.bootstrap, "group.id": "limited", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.max.bytes": 200_000, "message.max.bytes": 100_000,
        "max.partition.fetch.bytes": 50_000_000, "receive.message.max.bytes": 250_000,
    })
    c.subscribe(["limited"])
    seen = {0: 0, 1: 0}
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    consumer_errors = []
    while sum(seen.values()) < RECORDS and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            consumer_errors.append(str(m.error()))
            continue
        i = int(m.value()[:8])
        assert i % 2 == m.partition() and i // 2 == seen[m.partition()], (i, m.partition(), seen)
        seen[m.partition()] += 1
    c.close()
    assert sum(seen.values()) == RECORDS, f"read {seen} of {RECORDS}; errors {consumer_errors[:5]}"
