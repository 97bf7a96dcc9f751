"""Unclean leader election (`broker/src/metadata/elect.rs`, `unclean.leader.election.enable`):
two brokers beside a group of three consensus nodes.

A partition of two replicas whose topic enables unclean election: its follower is killed and
leaves the in-sync set, then its leader is killed, so no in-sync replica is left. When the
old follower comes back, the controller makes it the leader (alone in sync) and the partition
takes writes again; Kafka warns that records only the lost leader held are lost, and they
are. A topic without the setting stays without a leader meanwhile (the clean default)."""


import harness
from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_partition_leaders import wait_agreement
from test_replication_followers import replica_broker, start_brokers

SETTLE_SECONDS = 60
UNCLEAN = "unclean-ok"
CLEAN = "clean-only"


def partition(bootstrap, topic):
    """(leader, sorted isr) of partition 0 of `topic`."""
    md = admin(bootstrap).list_topics(topic, timeout=CLIENT_TIMEOUT_SECONDS)
    p = md.topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def wait_for(what, bootstrap, check):
    return harness.poll_until(what, lambda: {t: partition(bootstrap, t) for t in (UNCLEAN, CLEAN)},
                              check, SETTLE_SECONDS)


def test_unclean_election_brings_back_a_partition_whose_in_sync_replicas_are_gone(
    group, broker_factory
):
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    brokers, bootstrap = start_brokers(group, broker_factory, ids=(1, 2))
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    # Both partitions led by broker 1, followed by 2.
    futures = a.create_topics([
        NewTopic(UNCLEAN, num_partitions=1, replica_assignment=[[1, 2]],
                 config={"unclean.leader.election.enable": "true"}),
        NewTopic(CLEAN, num_partitions=1, replica_assignment=[[1, 2]]),
    ])
    for f in futures.values():
        f.result(timeout=CLIENT_TIMEOUT_SECONDS)
    for t in (UNCLEAN, CLEAN):
        wait_agreement(list(brokers.values()), t, 1)
    wait_for("both in sync, led by 1", bootstrap,
             lambda v: all(x == (1, [1, 2]) for x in v.values()))

    # The follower dies: the partitions go on with 1 alone in sync.
    brokers[2].process.kill()
    brokers[2].process.wait(timeout=10)
    only_1 = brokers[1].bootstrap
    wait_for("1 alone in sync", only_1, lambda v: all(x == (1, [1]) for x in v.values()))
    p = Producer({"bootstrap.servers": only_1, "acks": "all"})
    p.produce(UNCLEAN, b"only-on-1", partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0

    # Then the leader dies, and the old follower comes back.
    brokers[1].process.kill()
    brokers[1].process.wait(timeout=10)
    brokers[2] = replica_broker(broker_factory, group, 2, data_dir=brokers[2].data_dir,
                                port=brokers[2].port)
    wait_view(brokers[2].bootstrap, [2])
    back = brokers[2].bootstrap
    v = wait_for("the unclean topic led by 2", back, lambda v: v[UNCLEAN] == (2, [2]))
    # The clean topic waits for its in-sync replica.
    assert v[CLEAN][0] == -1, v

    p = Producer({"bootstrap.servers": back, "acks": "all"})
    p.produce(UNCLEAN, b"after", partition=0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    from confluent_kafka import TopicPartition

    seen = harness.read_values(back, [TopicPartition(UNCLEAN, 0, 0)], 1, CLIENT_TIMEOUT_SECONDS)
    # What only the lost leader held is gone, as Kafka warns; the new write is there.
    assert seen == [b"after"], seen
    assert brokers[2].stop() == 0, brokers[2].log_tail()
