"""Drives confluent-kafka (the librdkafka it bundles) through the recording proxy: an
idempotent producer with every codec, a consumer group that reads everything, commits
synchronously and leaves, plus offset look-ups; then a KIP-848 consumer
(group.protocol=consumer) that does the same through ConsumerGroupHeartbeat. Last stdout
line: client versions as JSON.

Usage: confluent_kafka_driver.py BOOTSTRAP TOPIC GROUP
"""

import json
import sys

import confluent_kafka
from driver_common import MESSAGES_PER_CODEC, consume_all
from confluent_kafka import Consumer, Producer, TopicPartition

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def produce(bootstrap, topic):
    for codec in CODECS:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "compression.type": codec,
                "linger.ms": 5,
            }
        )
        for i in range(MESSAGES_PER_CODEC):
            producer.produce(
                topic,
                key=f"key-{codec}-{i}",
                value=f"value {i} compressed with {codec}",
                partition=0,
                headers=[("source", b"confluent-kafka"), ("codec", codec.encode())],
            )
        if producer.flush(30) != 0:
            raise RuntimeError(f"{codec}: messages left unsent")


def consume(bootstrap, topic, group):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])

    def poll_count():
        msg = consumer.poll(0.5)
        return 0 if msg is None or msg.error() else 1

    consume_all(poll_count, MESSAGES_PER_CODEC * len(CODECS))
    consumer.commit(asynchronous=False)
    consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=10)
    consumer.close()


def consume_kip848(bootstrap, topic, group):
    """The next-generation consumer protocol (KIP-848): ConsumerGroupHeartbeat instead of
    JoinGroup/SyncGroup/Heartbeat, which the mock cluster implements."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{group}-kip848",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])

    def poll_count():
        msg = consumer.poll(0.5)
        return 0 if msg is None or msg.error() else 1

    consume_all(poll_count, MESSAGES_PER_CODEC * len(CODECS))
    consumer.commit(asynchronous=False)
    consumer.close()


def main():
    bootstrap, topic, group = sys.argv[1:4]
    produce(bootstrap, topic)
    consume(bootstrap, topic, group)
    consume_kip848(bootstrap, topic, group)
    print(
        json.dumps(
            {
                # version() is the package's version string; libversion() a (string, int) pair.
                "confluent-kafka": confluent_kafka.version(),
                "librdkafka": confluent_kafka.libversion()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
