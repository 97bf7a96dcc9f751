"""Losing brokers and losing consensus nodes (issue 11's cluster tests), three brokers beside a separate group of three
consensus-only nodes, a topic of 3 partitions with 3 replicas and min.insync.replicas 2.

- Two brokers killed: the survivor leads every partition; acks=all is refused with
  NOT_ENOUGH_REPLICAS (one in-sync replica of the two asked), what was acknowledged stays
  readable; the two come back on their own and the partitions take acks=all writes again
  with all three in sync, no operator action.
- A consensus node that is not the group's leader killed (a minority): producers and
  metadata changes go on as before.
- Two of the three consensus nodes killed (a majority): metadata changes stop (CreateTopics
  fails), the partitions' leaders keep serving acks=all writes and reads, no broker stops;
  the nodes come back and metadata changes work again.
"""

import time

import harness
import pytest
from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_consensus import leader_of
from test_replication_failover import create_in_sync
from test_replication_followers import replica_broker, start_brokers

TOPIC = "quorum"
PARTITIONS = 3
SETTLE_SECONDS = 60
# confluent-kafka's code for NOT_ENOUGH_REPLICAS.
NOT_ENOUGH_REPLICAS = 19


def view(bootstrap):
    """{partition: (leader, sorted isr)}"""
    md = admin(bootstrap).list_topics(TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
    return {p: (m.leader, sorted(m.isrs)) for p, m in md.topics[TOPIC].partitions.items()}


def wait_for(what, bootstrap, check):
    return harness.poll_until(what, lambda: view(bootstrap),
                              lambda v: len(v) == PARTITIONS and check(v), SETTLE_SECONDS)


def produce(bootstrap, values, retries=2_147_483_647):
    """Produces `values` round-robin over the partitions with acks=all; the delivery errors
    (None for each acknowledged one), in order."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "retries": retries, "message.timeout.ms": 30_000})
    errors = []
    for i, v in enumerate(values):
        p.produce(TOPIC, value=v, partition=i % PARTITIONS,
                  on_delivery=lambda err, m: errors.append(err))
    assert p.flush(60) == 0
    return errors


def read_all(bootstrap, count):
    from confluent_kafka import TopicPartition

    every = [TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)]
    return harness.read_values(bootstrap, every, count, CLIENT_TIMEOUT_SECONDS * 2)


def all_in_sync(v):
    return all(leader in (1, 2, 3) and isr == [1, 2, 3] for leader, isr in v.values())


def start(group, broker_factory):
    brokers, bootstrap = start_brokers(group, broker_factory)
    create_in_sync(brokers.values(), bootstrap, TOPIC, PARTITIONS)
    return brokers, bootstrap


def test_two_brokers_lost_refuse_acks_all_keep_reads_and_heal(group, broker_factory):
    brokers, bootstrap = start(group, broker_factory)
    first = [f"a{i}".encode() for i in range(300)]
    assert produce(bootstrap, first) == [None] * len(first)

    for n in (2, 3):
        brokers[n].process.kill()
        brokers[n].process.wait(timeout=10)
    survivor = brokers[1].bootstrap
    wait_for("broker 1 leading every partition alone", survivor,
             lambda v: all(x == (1, [1]) for x in v.values()))
    refused = produce(survivor, [b"refused"], retries=0)
    assert [e.code() if e else None for e in refused] == [NOT_ENOUGH_REPLICAS], refused
    assert sorted(read_all(survivor, len(first))) == sorted(first)

    for n in (2, 3):
        brokers[n] = replica_broker(broker_factory, group, n, data_dir=brokers[n].data_dir,
                                    port=brokers[n].port)
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    wait_for("all in sync again", bootstrap, all_in_sync)
    second = [f"b{i}".encode() for i in range(300)]
    assert produce(bootstrap, second) == [None] * len(second)
    assert sorted(read_all(bootstrap, len(first) + len(second))) == sorted(first + second)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


def test_a_consensus_minority_lost_goes_unnoticed(group, broker_factory):
    from confluent_kafka.admin import NewTopic

    brokers, bootstrap = start(group, broker_factory)
    statuses = group.statuses()
    leader = leader_of(statuses)
    follower = next(i for i in group.ports if i != leader)
    group.kill9(follower)
    values = [f"m{i}".encode() for i in range(600)]
    assert produce(bootstrap, values) == [None] * len(values)
    a = admin(bootstrap)
    a.create_topics([NewTopic("after-minority", 1, 3)])["after-minority"].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    v = view(bootstrap)
    assert all_in_sync(v), v
    assert sorted(read_all(bootstrap, len(values))) == sorted(values)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


def test_a_consensus_majority_lost_stops_metadata_changes_not_the_data(group, broker_factory):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    brokers, bootstrap = start(group, broker_factory)
    leader = leader_of(group.statuses())
    gone = [i for i in group.ports if i != leader]
    for i in gone:
        group.kill9(i)
    values = [f"x{i}".encode() for i in range(300)]
    assert produce(bootstrap, values) == [None] * len(values)
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    refused = a.create_topics([NewTopic("during-loss", 1, 3)], request_timeout=20)
    with pytest.raises(KafkaException) as why:
        refused["during-loss"].result(timeout=60)
    print(f"\nCreateTopics without a consensus majority: {why.value}")
    # The data path goes on meanwhile, and no broker stopped.
    more = [f"y{i}".encode() for i in range(300)]
    assert produce(bootstrap, more) == [None] * len(more)
    assert sorted(read_all(bootstrap, 600)) == sorted(values + more)
    assert all(b.process.poll() is None for b in brokers.values())

    for i in gone:
        group.start(i)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            a.create_topics([NewTopic("after-loss", 1, 3)])["after-loss"].result(
                timeout=CLIENT_TIMEOUT_SECONDS
            )
            break
        except Exception as e:  # noqa: BLE001 (the group may still be electing)
            assert time.monotonic() < deadline, f"metadata changes never came back: {e}"
            time.sleep(0.5)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
