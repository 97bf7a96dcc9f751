"""Replication, step 3 (`broker/src/replication/leader.rs`, `isr.rs`): a partition's high watermark is what every in-sync
replica holds, not what its leader wrote, acks=all waits for the in-sync replicas, and the
in-sync set follows the followers (`replica.lag.time.max.ms`).

Three brokers beside a group of three consensus nodes, confluent-kafka clients:
- acks=all answers only for records every in-sync replica holds, and a consumer reads them;
- with both followers frozen (SIGSTOP, within their 20 s session and the 30 s lag time, so
  they stay in the in-sync set), acks=1 still appends on the leader, but the high watermark
  stays (ListOffsets latest, a consumer sees nothing new) and acks=all is never acknowledged;
- once the followers run again they catch up and the high watermark reaches the leader's
  log end: the consumer then reads everything;
- a partition with fewer replicas than `min.insync.replicas` refuses acks=all with
  NOT_ENOUGH_REPLICAS and takes acks=1.
"""

import signal
import time

from test_broker_registration import (  # noqa: F401 (group is a fixture)
    CLIENT_TIMEOUT_SECONDS,
    admin,
    group,
    wait_view,
)
from test_consensus_sessions import serving_group
from test_partition_leaders import list_offsets_raw, wait_agreement
from test_replication_followers import replica_broker

TOPIC = "hw"
# Long enough that a frozen follower keeps its registration through the test (the controller
# would otherwise take it out of the in-sync set when its session expires).
LONG_SESSION = ["--override", "corebus.consensus.session.timeout.ms=20000"]
NARROW = "narrow"
CATCH_UP_SECONDS = 60


def producer(bootstrap, acks, timeout_ms=CLIENT_TIMEOUT_SECONDS * 1000):
    from confluent_kafka import Producer

    return Producer({
        "bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5,
        "enable.idempotence": False, "retries": 0,
        "message.timeout.ms": timeout_ms, "request.timeout.ms": timeout_ms,
    })


def send(p, topic, values):
    """Produces `values` to partition 0; the delivery errors (None for each delivered one)."""
    results = []
    for v in values:
        p.produce(topic, v.encode(), partition=0, on_delivery=lambda err, _m: results.append(err))
    p.flush(CLIENT_TIMEOUT_SECONDS + 10)
    assert len(results) == len(values), f"{len(results)} delivery reports of {len(values)}"
    return results


def read_from(bootstrap, topic, offset, expected, seconds):
    """Values of partition 0 from `offset`, until `expected` arrived or `seconds` passed."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{time.monotonic_ns()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, offset)])
    got = []
    deadline = time.monotonic() + seconds
    while len(got) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    c.close()
    return got


def high_watermark(broker):
    code, offset = list_offsets_raw(broker.port, TOPIC, 0)
    assert code == 0, code
    return offset


def wait_high_watermark(broker, at_least):
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while (hw := high_watermark(broker)) < at_least:
        assert time.monotonic() < deadline, f"high watermark stuck at {hw}, wanted {at_least}"
        time.sleep(0.2)
    return hw


def test_the_high_watermark_is_what_every_in_sync_replica_holds(group, broker_factory):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    brokers = {n: replica_broker(broker_factory, group, n, extra=LONG_SESSION) for n in (1, 2, 3)}
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    a = admin(bootstrap)
    created = a.create_topics([
        NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"}),
        NewTopic(NARROW, 1, 2, config={"min.insync.replicas": "3"}),
    ])
    for f in created.values():
        f.result(timeout=CLIENT_TIMEOUT_SECONDS)
    view = wait_agreement(list(brokers.values()), TOPIC, 1)
    leader_id = view[0][0]
    assert sorted(view[0][1]) == [1, 2, 3], view
    leader = brokers[leader_id]
    followers = [n for n in brokers if n != leader_id]

    # All replicas up: acks=all is acknowledged, and what it acknowledged is readable.
    first = [f"a-{i}" for i in range(500)]
    assert send(producer(bootstrap, "all"), TOPIC, first) == [None] * len(first)
    assert high_watermark(leader) == 500
    assert read_from(bootstrap, TOPIC, 0, 500, CLIENT_TIMEOUT_SECONDS) == first

    # Both followers frozen: the leader still appends with acks=1, but nothing past what the
    # in-sync replicas hold becomes visible, and acks=all is not acknowledged.
    for n in followers:
        brokers[n].process.send_signal(signal.SIGSTOP)
    second = [f"b-{i}" for i in range(200)]
    assert send(producer(leader.bootstrap, "1"), TOPIC, second) == [None] * len(second)
    refused = send(producer(leader.bootstrap, "all", timeout_ms=3000), TOPIC, ["c-0"])
    assert refused[0] is not None, "acks=all acknowledged with the in-sync followers down"
    time.sleep(1.0)
    assert high_watermark(leader) == 500
    assert read_from(leader.bootstrap, TOPIC, 500, 1, 3) == []

    # The followers run again, catch up, and the high watermark reaches the log end.
    for n in followers:
        brokers[n].process.send_signal(signal.SIGCONT)
    # 200 acks=1 records, and the acks=all one that was appended but never acknowledged.
    assert wait_high_watermark(leader, 701) == 701
    later = read_from(leader.bootstrap, TOPIC, 500, 201, CLIENT_TIMEOUT_SECONDS)
    assert later == second + ["c-0"]

    # Fewer replicas than min.insync.replicas: acks=all refused before appending, acks=1 taken.
    wait_agreement(list(brokers.values()), NARROW, 1)
    narrow = send(producer(bootstrap, "all"), NARROW, ["n-0"])
    assert narrow[0] is not None and narrow[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, narrow
    assert send(producer(bootstrap, "1"), NARROW, ["n-1"]) == [None]

    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()


LAG = ["--override", "replica.lag.time.max.ms=2000"]


def isr_of(bootstrap, topic):
    a = admin(bootstrap)
    md = a.list_topics(topic, timeout=CLIENT_TIMEOUT_SECONDS)
    return sorted(md.topics[topic].partitions[0].isrs)


def wait_isr(broker, want):
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while (isr := isr_of(broker.bootstrap, TOPIC)) != want:
        assert time.monotonic() < deadline, f"in-sync replicas {isr}, wanted {want}"
        time.sleep(0.2)


def test_a_lagging_follower_leaves_the_in_sync_set_and_rejoins_once_caught_up(group, broker_factory):
    """`replica.lag.time.max.ms` 2 s, RF 3, min.insync.replicas 2: one follower killed leaves
    the set and acks=all goes on with two; the second killed leaves the leader alone and acks=all
    is refused with NOT_ENOUGH_REPLICAS (acks=1 still appends); both back, they catch up and
    rejoin, and every acknowledged record is read once, in order."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    brokers = {n: replica_broker(broker_factory, group, n, extra=LAG) for n in (1, 2, 3)}
    for b in brokers.values():
        wait_view(b.bootstrap, [1, 2, 3])
    bootstrap = ",".join(b.bootstrap for b in brokers.values())
    a = admin(bootstrap)
    a.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(
        timeout=CLIENT_TIMEOUT_SECONDS
    )
    view = wait_agreement(list(brokers.values()), TOPIC, 1)
    leader = brokers[view[0][0]]
    first_follower, second_follower = [n for n in brokers if n != view[0][0]]
    acked = []

    def produce_all(values, expect_ok=True):
        results = send(producer(leader.bootstrap, "all", timeout_ms=10_000), TOPIC, values)
        if expect_ok:
            assert results == [None] * len(values), results[:3]
            acked.extend(values)
        return results

    produce_all([f"a-{i}" for i in range(300)])
    wait_isr(leader, [1, 2, 3])

    brokers[first_follower].process.kill()
    brokers[first_follower].process.wait(timeout=10)
    wait_isr(leader, sorted(set(brokers) - {first_follower}))
    produce_all([f"b-{i}" for i in range(300)])

    brokers[second_follower].process.kill()
    brokers[second_follower].process.wait(timeout=10)
    wait_isr(leader, [leader_id := view[0][0]])
    refused = produce_all(["c-0"], expect_ok=False)
    assert refused[0] is not None and refused[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, refused
    ones = [f"d-{i}" for i in range(100)]
    assert send(producer(leader.bootstrap, "1"), TOPIC, ones) == [None] * len(ones)
    acked.extend(ones)

    for n in (first_follower, second_follower):
        brokers[n] = replica_broker(broker_factory, group, n, data_dir=brokers[n].data_dir, extra=LAG)
    wait_isr(leader, [1, 2, 3])
    produce_all([f"e-{i}" for i in range(300)])
    assert high_watermark(leader) == len(acked)
    assert read_from(bootstrap, TOPIC, 0, len(acked), CLIENT_TIMEOUT_SECONDS) == acked
    assert leader_id in brokers

    for b in brokers.values():
        assert b.stop() == 0, b.log_tail()
