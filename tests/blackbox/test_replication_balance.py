"""Leadership returns to the preferred replicas (`broker/src/metadata/elect.rs`,
`broker/src/replication/balance.rs`, `broker/src/handlers/elect_leaders.rs`): three brokers beside a group of three consensus nodes,
a topic of 3 partitions with 3 replicas. The preferred (first assigned) replica of a
partition is killed with SIGKILL, its partitions fail over, and it is restarted and catches
up. Then
- with `auto.leader.rebalance.enable` (the default) the controller gives it its partitions
  back at its next check (`leader.imbalance.check.interval.seconds`, 1 s here);
- without it, they stay with the others until an admin asks: ElectLeaders (confluent-kafka's
  `elect_leaders`, preferred) moves them back, and answers ELECTION_NOT_NEEDED for partitions
  already led by their preferred replica.
"""

import time

from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_consensus_sessions import serving_group
from test_partition_leaders import wait_agreement
from test_replication_followers import replica_broker

TOPIC = "balanced"
PARTITIONS = 3
SETTLE_SECONDS = 60


def view(bootstrap):
    """{partition: (leader, preferred replica, sorted isr)}"""
    md = admin(bootstrap).list_topics(TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
    return {p: (m.leader, m.replicas[0], sorted(m.isrs))
            for p, m in md.topics[TOPIC].partitions.items()}


def wait_for(what, check, bootstrap):
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            v = view(bootstrap)
            if len(v) == PARTITIONS and check(v):
                return v
        except Exception as e:  # noqa: BLE001 (a broker may be between lives)
            v = e
        assert time.monotonic() < deadline, f"never {what}: {v}"
        time.sleep(0.3)


def preferred_led(v):
    return all(leader == preferred for leader, preferred, _ in v.values())


def in_sync(v):
    return all(isr == [1, 2, 3] for _, _, isr in v.values())


def fail_over_preferred_replica(group, broker_factory, extra):
    """Starts the cluster, kills and restarts the preferred replica of partition 0 once it
    lost its partitions to the others; returns (brokers, bootstrap, the restarted broker id)."""
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    brokers = {n: replica_broker(broker_factory, group, n, extra=extra) for n in (1, 2, 3)}
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    a = admin(bootstrap)  # kept: a client handle destroyed fails its pending results
    a.create_topics([NewTopic(TOPIC, PARTITIONS, 3)])[TOPIC].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    wait_agreement(list(brokers.values()), TOPIC, PARTITIONS)
    v = wait_for("in sync", lambda v: in_sync(v) and preferred_led(v), bootstrap)
    victim = v[0][1]
    brokers[victim].process.kill()
    brokers[victim].process.wait(timeout=10)
    others = ",".join(b.bootstrap for n, b in brokers.items() if n != victim)
    wait_for(f"leaders other than {victim}",
             lambda v: all(leader not in (victim, -1) for leader, _, _ in v.values()), others)
    brokers[victim] = replica_broker(broker_factory, group, victim,
                                     data_dir=brokers[victim].data_dir,
                                     port=brokers[victim].port, extra=extra)
    wait_view(brokers[victim].bootstrap, [1, 2, 3])
    wait_for("the restarted broker in sync", in_sync, bootstrap)
    return brokers, bootstrap, victim


def test_the_controller_gives_partitions_back_to_their_preferred_replica(group, broker_factory):
    brokers, bootstrap, _ = fail_over_preferred_replica(
        group, broker_factory, ["--override", "leader.imbalance.check.interval.seconds=1"]
    )
    wait_for("leaders back on their preferred replicas", preferred_led, bootstrap)
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


def test_elect_leaders_moves_partitions_back_on_request(group, broker_factory):
    from confluent_kafka import ElectionType, KafkaError, TopicPartition

    brokers, bootstrap, victim = fail_over_preferred_replica(
        group, broker_factory, ["--override", "auto.leader.rebalance.enable=false"]
    )
    before = view(bootstrap)
    assert not preferred_led(before), before
    a = admin(bootstrap)
    asked = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    results = a.elect_leaders(ElectionType.PREFERRED, asked).result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    assert len(results) == PARTITIONS, results
    for tp, err in results.items():
        moved = before[tp.partition][0] != before[tp.partition][1]
        if moved:
            assert err is None, (tp, err)
        else:
            # A KafkaError (or a KafkaException carrying one).
            code = err.code() if isinstance(err, KafkaError) else err.args[0].code()
            assert code == KafkaError.ELECTION_NOT_NEEDED, (tp, err)
    after = wait_for("leaders back on their preferred replicas", preferred_led, bootstrap)
    assert any(leader == victim for leader, _, _ in after.values())
    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
