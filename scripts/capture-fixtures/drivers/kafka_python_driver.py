"""Drives kafka-python through the recording proxy: an idempotent producer with every codec,
a consumer group that reads everything, commits synchronously and leaves, plus offset
look-ups. Last stdout line: client versions as JSON.

Usage: kafka_python_driver.py BOOTSTRAP TOPIC GROUP
"""

import json
import sys
import time

import kafka
from driver_common import MESSAGES_PER_CODEC, consume_all
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
HEARTBEAT_WAIT_SECONDS = 1.5


def produce(bootstrap, topic):
    for codec in CODECS:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            compression_type=codec,
            linger_ms=5,
        )
        name = codec or "none"
        for i in range(MESSAGES_PER_CODEC):
            producer.send(
                topic,
                key=f"key-{name}-{i}".encode(),
                value=f"value {i} compressed with {name}".encode(),
                partition=0,
                headers=[("source", b"kafka-python"), ("codec", name.encode())],
            )
        producer.flush(timeout=30)
        producer.close(timeout=10)


def consume(bootstrap, topic, group):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=500,
    )
    consumer.subscribe([topic])
    consume_all(
        lambda: sum(len(r) for r in consumer.poll(timeout_ms=500).values()),
        MESSAGES_PER_CODEC * len(CODECS),
    )
    # Stay in the group long enough to heartbeat (heartbeat_interval_ms above).
    deadline = time.monotonic() + HEARTBEAT_WAIT_SECONDS
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=200)
    consumer.commit()
    tp = TopicPartition(topic, 0)
    consumer.committed(tp)
    consumer.end_offsets([tp])
    consumer.offsets_for_times({tp: 0})
    consumer.close()


def main():
    bootstrap, topic, group = sys.argv[1:4]
    produce(bootstrap, topic)
    consume(bootstrap, topic, group)
    print(json.dumps({"kafka-python": kafka.__version__}))


if __name__ == "__main__":
    main()
