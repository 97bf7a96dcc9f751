"""The group coordinator follows the leadership of `__consumer_offsets` partitions
(`broker/src/groups/coordinator.rs`, `follow_leadership`): three brokers beside a group of three consensus
nodes, `__consumer_offsets` with 3 replicas. A consumer group (confluent-kafka) commits an
offset; the broker coordinating it is killed with SIGKILL; the group's offsets partition
gets a new leader, which loads the group from its copy of the log: a consumer of the same
group, through the surviving brokers, resumes exactly at the committed offset and commits
further there. The killed broker, restarted, no longer coordinates the group (its
partition stays led by the new coordinator): it answers FindCoordinator with the new one.
"""

import time

from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_partition_leaders import wait_agreement
from test_replication_followers import replica_broker, start_brokers

TOPIC = "resumed"
GROUP = "resuming-group"
RECORDS = 100
COMMITTED = 40
SETTLE_SECONDS = 60
# Few offsets partitions keep the start quick; all of them get 3 replicas.
OFFSETS = ["--override", "offsets.topic.num.partitions=3",
           "--override", "offsets.topic.replication.factor=3",
           "--override", "group.initial.rebalance.delay.ms=0"]


def consumer(bootstrap):
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 6000})


def first_records(c, count):
    """The next `count` records of `c` (subscribed), polled with a deadline."""
    got = []
    deadline = time.monotonic() + SETTLE_SECONDS
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records"
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    return got


def coordinator_of(bootstrap):
    a = admin(bootstrap)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            d = a.describe_consumer_groups([GROUP])[GROUP].result(timeout=CLIENT_TIMEOUT_SECONDS)
            if d.coordinator is not None and d.coordinator.id >= 0:
                return d.coordinator.id
        except Exception as e:  # noqa: BLE001 (the coordinator may be moving)
            last = e
        else:
            last = d
        assert time.monotonic() < deadline, f"no coordinator for {GROUP}: {last}"
        time.sleep(0.3)


def test_a_group_resumes_at_its_committed_offset_after_its_coordinator_is_killed(
    group, broker_factory
):
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    brokers, bootstrap = start_brokers(group, broker_factory, extra=OFFSETS)
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    a.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(timeout=CLIENT_TIMEOUT_SECONDS)
    wait_agreement(list(brokers.values()), TOPIC, 1)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(RECORDS):
        p.produce(TOPIC, f"r-{i}".encode(), partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0

    c = consumer(bootstrap)
    c.subscribe([TOPIC])
    got = first_records(c, COMMITTED)
    assert [m.offset() for m in got] == list(range(COMMITTED))
    c.commit(offsets=[TopicPartition(TOPIC, 0, COMMITTED)], asynchronous=False)
    c.close()

    victim = coordinator_of(bootstrap)
    brokers[victim].process.kill()
    brokers[victim].process.wait(timeout=10)
    others = ",".join(b.bootstrap for n, b in brokers.items() if n != victim)

    # The new coordinator (another broker) loaded the group: the same group resumes there.
    c = consumer(others)
    c.subscribe([TOPIC])
    got = first_records(c, 10)
    assert got[0].offset() == COMMITTED, f"resumed at {got[0].offset()}, committed {COMMITTED}"
    c.commit(offsets=[TopicPartition(TOPIC, 0, COMMITTED + 10)], asynchronous=False)
    c.close()
    moved_to = coordinator_of(others)
    assert moved_to != victim

    # Back, the old coordinator does not take the group back: the commit made on the new
    # one is what the group sees, through any broker.
    brokers[victim] = replica_broker(broker_factory, group, victim,
                                     data_dir=brokers[victim].data_dir,
                                     port=brokers[victim].port, extra=OFFSETS)
    wait_view(brokers[victim].bootstrap, [1, 2, 3])
    assert coordinator_of(brokers[victim].bootstrap) == moved_to
    c = consumer(brokers[victim].bootstrap)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        committed = c.committed([TopicPartition(TOPIC, 0)], timeout=CLIENT_TIMEOUT_SECONDS)
        if committed[0].offset == COMMITTED + 10:
            break
        assert time.monotonic() < deadline, f"committed offset seen: {committed[0].offset}"
        time.sleep(0.3)
    c.close()

    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
