"""Consumer groups and committed offsets with real clients: confluent-kafka (librdkafka),
kafka-python, kafkajs and kcat group consumers against the real broker.

Group consumers run as child processes (so one can be killed with SIGKILL, as a crashed
consumer is); each prints one JSON line per event (assignment, record) on stdout.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 60
SESSION_TIMEOUT_MS = 6000
# Kafka's default is 3000 ms (and a new group's first rebalance waits it twice while members
# keep arriving); the tests shorten it so they stay quick. The join test also measures it
# at the default.
FAST_REBALANCE_DELAY_MS = 100
FAST = ("--override", f"group.initial.rebalance.delay.ms={FAST_REBALANCE_DELAY_MS}")

CONSUMER_SCRIPT = r"""
import json, signal, sys
from confluent_kafka import Consumer

bootstrap, group, topic, instance, strategy = sys.argv[1:6]
conf = {
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": int(sys.argv[6]),
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": strategy,
}
if instance != "-":
    conf["group.instance.id"] = instance
def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
c = Consumer(conf)
def on_assign(consumer, parts):
    out(ev="assign", parts=[p.partition for p in parts])
def on_revoke(consumer, parts):
    out(ev="revoke", parts=[p.partition for p in parts])
c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
while not stop:
    msgs = c.consume(100, timeout=0.2)
    for m in msgs:
        if m.error():
            out(ev="error", error=str(m.error()))
            continue
        out(ev="msg", p=m.partition(), o=m.offset(), v=m.value().decode())
    if msgs:
        c.commit(asynchronous=False)
    out(ev="tick", assigned=sorted(p.partition for p in c.assignment()))
c.close()
out(ev="closed")
"""


class ChildConsumer:
    """A confluent-kafka group consumer in a child process, its events collected."""

    def __init__(self, broker, group, topic, instance="-", strategy="range",
                 session_ms=SESSION_TIMEOUT_MS):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONSUMER_SCRIPT, broker.bootstrap, group, topic, instance,
             strategy, str(session_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lock = threading.Lock()
        self.values = []
        self.assigned = []
        self.assign_events = 0
        self.revoke_events = 0
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.lock:
                if ev["ev"] == "msg":
                    self.values.append(ev["v"])
                elif ev["ev"] == "tick":
                    self.assigned = ev["assigned"]
                elif ev["ev"] == "assign":
                    self.assign_events += 1
                elif ev["ev"] == "revoke":
                    self.revoke_events += 1
                elif ev["ev"] == "closed":
                    self.closed = True

    def assignment(self):
        with self.lock:
            return list(self.assigned)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        with self.lock:
            self.assigned = []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(CLIENT_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)


def wait_for(what, predicate, timeout=CLIENT_TIMEOUT_SECONDS, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def covers(consumers, partitions):
    """Every partition assigned to exactly one of `consumers`."""
    got = sorted(p for c in consumers for p in c.assignment())
    return got == list(range(partitions))


def create_topic(bootstrap, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(CLIENT_TIMEOUT_SECONDS)


def produce(bootstrap, topic, values):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for v in values:
        p.produce(topic, key=v.encode(), value=v.encode())
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0


def all_values(consumers):
    out = []
    for c in consumers:
        with c.lock:
            out.extend(c.values)
    return out


def test_three_consumers_share_fail_over_and_resume(broker_factory):
    b = broker_factory(extra_args=FAST)
    create_topic(b.bootstrap, "orders", 12)
    start = time.monotonic()
    group = [ChildConsumer(b, "g-orders", "orders") for _ in range(3)]
    try:
        wait_for("3 members sharing 12 partitions", lambda: covers(group, 12) and all(c.assignment() for c in group))
        print(f"\n3-member join (initial delay {FAST_REBALANCE_DELAY_MS} ms, child start "
              f"included): {time.monotonic() - start:.2f} s")
        # A producer writes while the group consumes: every record once across the group.
        first = [f"a{i}" for i in range(3000)]
        writer = threading.Thread(target=produce, args=(b.bootstrap, "orders", first))
        writer.start()
        writer.join()
        wait_for("all records consumed", lambda: len(all_values(group)) >= len(first))
        time.sleep(0.5)
        got = all_values(group)
        assert sorted(got) == sorted(first), "every record exactly once across the group"

        # A consumer dies without leaving: its partitions move once its session expires.
        victim, survivors = group[0], group[1:]
        victim.kill()
        killed = time.monotonic()
        wait_for("survivors to take over", lambda: covers(survivors, 12))
        moved = time.monotonic() - killed
        print(f"partitions of a SIGKILLed member moved after {moved:.2f} s "
              f"(session.timeout.ms={SESSION_TIMEOUT_MS})")
        assert moved < SESSION_TIMEOUT_MS / 1000 + 5
        second = [f"b{i}" for i in range(1000)]
        produce(b.bootstrap, "orders", second)
        wait_for("records after the failover", lambda: set(second) <= set(all_values(survivors)))
        for c in survivors:
            c.stop()
            assert c.closed

        # Everyone restarts: they resume from the committed offsets (commits were synchronous
        # after every batch, so nothing consumed before comes again).
        third = [f"c{i}" for i in range(600)]
        group = [ChildConsumer(b, "g-orders", "orders") for _ in range(3)]
        wait_for("the restarted group", lambda: covers(group, 12))
        produce(b.bootstrap, "orders", third)
        wait_for("records after the restart", lambda: len(all_values(group)) >= len(third))
        time.sleep(0.5)
        assert sorted(all_values(group)) == sorted(third), "resumed from committed offsets"
    finally:
        for c in group:
            c.stop()


def test_join_time_with_kafkas_default_delay(broker_factory):
    b = broker_factory()
    create_topic(b.bootstrap, "timing", 6)
    start = time.monotonic()
    group = [ChildConsumer(b, "g-timing", "timing") for _ in range(3)]
    try:
        wait_for("3 members", lambda: covers(group, 6) and all(c.assignment() for c in group))
        took = time.monotonic() - start
        print(f"\n3-member join with group.initial.rebalance.delay.ms=3000 (Kafka's default): "
              f"{took:.2f} s")
        # Kafka waits the delay, and again while members keep arriving: 6 s plus the clients.
        assert took < 15
    finally:
        for c in group:
            c.stop()


def test_static_member_rejoins_without_rebalance(broker_factory):
    b = broker_factory(extra_args=FAST)
    create_topic(b.bootstrap, "static", 4)
    a = ChildConsumer(b, "g-static", "static", instance="inst-a", session_ms=20000)
    other = ChildConsumer(b, "g-static", "static", instance="inst-b", session_ms=20000)
    try:
        wait_for("two static members", lambda: covers([a, other], 4) and a.assignment() and other.assignment())
        before_a, before_other = a.assignment(), other.assignment()
        time.sleep(1.0)
        with other.lock:
            revokes, assigns = other.revoke_events, other.assign_events
        a.kill()
        a = ChildConsumer(b, "g-static", "static", instance="inst-a", session_ms=20000)
        wait_for("the static member back", lambda: a.assignment() == before_a, timeout=15)
        time.sleep(2.0)
        with other.lock:
            assert (other.revoke_events, other.assign_events) == (revokes, assigns), \
                "the other member saw no rebalance"
        assert other.assignment() == before_other
        produce(b.bootstrap, "static", [f"s{i}" for i in range(200)])
        wait_for("both consume", lambda: len(all_values([a, other])) >= 200)
    finally:
        a.stop()
        other.stop()


def test_broker_restart_keeps_groups_and_offsets(tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    data = tmp_path / "data"
    port = harness.free_port()

    def start():
        log = tmp_path / "broker.log"
        argv = [str(harness.corebus_binary()), "--listen", f"127.0.0.1:{port}",
                "--data-dir", str(data), "--shards", "1", *FAST]
        with open(log, "ab") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        versions = harness.wait_until_ready(proc, port, harness.BROKER_START_TIMEOUT_SECONDS, log)
        return harness.Broker(proc, port, data, log, versions)

    b = start()
    consumer = None
    try:
        create_topic(b.bootstrap, "restart", 3)
        produce(b.bootstrap, "restart", [f"r{i}" for i in range(500)])
        consumer = ChildConsumer(b, "g-restart", "restart")
        wait_for("first half", lambda: len(consumer.values) >= 500)
        assert b.stop() == 0
        b = start()
        produce(b.bootstrap, "restart", [f"q{i}" for i in range(500)])
        # The consumer never restarted: it carries on with the same group after the broker
        # came back, and nothing is read twice.
        wait_for("second half", lambda: len(consumer.values) >= 1000)
        time.sleep(0.5)
        assert sorted(consumer.values) == sorted([f"r{i}" for i in range(500)] + [f"q{i}" for i in range(500)])
        consumer.stop()
        consumer = None
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-restart"})
        committed = c.committed([TopicPartition("restart", p) for p in range(3)], timeout=30)
        c.close()
        assert sum(tp.offset for tp in committed) == 1000
    finally:
        if consumer:
            consumer.stop()
        b.stop()


def test_kcat_balanced_consumer(broker, kcat):
    create_topic(broker.bootstrap, "kc", 4)
    produce(broker.bootstrap, "kc", [f"k{i}" for i in range(400)])
    out = subprocess.run(
        [kcat, "-b", broker.bootstrap, "-G", "g-kcat", "kc", "-o", "beginning", "-e", "-q",
         "-f", "%s\n", "-X", "session.timeout.ms=6000"],
        capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(f"k{i}" for i in range(400))


def test_kafka_python_group_consumers(broker_factory):
    from kafka import KafkaConsumer, TopicPartition as KTP

    b = broker_factory(extra_args=FAST)
    create_topic(b.bootstrap, "kp", 4)
    produce(b.bootstrap, "kp", [f"p{i}" for i in range(400)])

    def consume(n, got):
        c = KafkaConsumer("kp", bootstrap_servers=b.bootstrap, group_id="g-kp",
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          consumer_timeout_ms=8000, session_timeout_ms=SESSION_TIMEOUT_MS)
        for m in c:
            got.append(m.value.decode())
            c.commit()
            if len(got) >= n:
                break
        c.close()

    got = []
    consume(400, got)
    assert sorted(got) == sorted(f"p{i}" for i in range(400))
    # A second consumer of the same group resumes after the committed offsets.
    produce(b.bootstrap, "kp", [f"n{i}" for i in range(100)])
    more = []
    consume(100, more)
    assert sorted(more) == sorted(f"n{i}" for i in range(100))
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id="g-kp")
    assert sum(c.committed(KTP("kp", p)) or 0 for p in range(4)) == 500
    c.close()


KAFKAJS_SCRIPT = r"""
const { Kafka, logLevel } = require('kafkajs');
const [bootstrap, topic, group, want] = process.argv.slice(1);
const kafka = new Kafka({ clientId: 'kjs', brokers: [bootstrap], logLevel: logLevel.NOTHING });
(async () => {
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve) => {
    consumer.run({ eachMessage: async ({ message }) => {
      seen.push(message.value.toString());
      if (seen.length >= Number(want)) resolve();
    }});
  });
  await consumer.disconnect();
  console.log(JSON.stringify(seen));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_kafkajs_group_consumer(broker_factory, node_env):
    from confluent_kafka import Consumer, TopicPartition

    b = broker_factory(extra_args=FAST)
    create_topic(b.bootstrap, "kj", 3)
    produce(b.bootstrap, "kj", [f"j{i}" for i in range(300)])
    out = subprocess.run(["node", "-e", KAFKAJS_SCRIPT, b.bootstrap, "kj", "g-kjs", "300"],
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS,
                         env=node_env)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)) == sorted(f"j{i}" for i in range(300))
    # kafkajs commits what it processed when it disconnects.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-kjs"})
    committed = c.committed([TopicPartition("kj", p) for p in range(3)], timeout=30)
    c.close()
    assert sum(tp.offset for tp in committed) == 300
    # A new kafkajs consumer of the group resumes there.
    produce(b.bootstrap, "kj", [f"m{i}" for i in range(90)])
    out = subprocess.run(["node", "-e", KAFKAJS_SCRIPT, b.bootstrap, "kj", "g-kjs", "90"],
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT_SECONDS,
                         env=node_env)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)) == sorted(f"m{i}" for i in range(90))


def test_cooperative_sticky_rebalances(broker_factory):
    b = broker_factory(extra_args=FAST)
    create_topic(b.bootstrap, "coop", 12)
    group = [ChildConsumer(b, "g-coop", "coop", strategy="cooperative-sticky") for _ in range(2)]
    try:
        wait_for("two cooperative members", lambda: covers(group, 12) and all(c.assignment() for c in group))
        # A third member joins: the incremental protocol takes extra rounds (revoke, then
        # assign); the group ends up with every partition owned exactly once.
        group.append(ChildConsumer(b, "g-coop", "coop", strategy="cooperative-sticky"))
        wait_for("three cooperative members", lambda: covers(group, 12) and all(c.assignment() for c in group))
        values = [f"co{i}" for i in range(600)]
        produce(b.bootstrap, "coop", values)
        wait_for("records", lambda: len(all_values(group)) >= len(values))
        time.sleep(0.5)
        assert sorted(all_values(group)) == sorted(values)
        # A member leaves (LeaveGroup on close): the others take its partitions over.
        group[0].stop()
        wait_for("the rest to take over", lambda: covers(group[1:], 12))
    finally:
        for c in group:
            c.stop()


def test_group_admin_apis_across_shards(broker_factory):
    from confluent_kafka import ConsumerGroupState, TopicPartition
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    data = None
    b = broker_factory(extra_args=FAST, shards=2)
    data = b.data_dir
    create_topic(b.bootstrap, "adm", 2)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    # Offsets stored by a client outside any generation (generation -1), with metadata, for
    # groups hashed onto both shards.
    idle = [f"g-idle-{i}" for i in range(6)]
    for g in idle:
        tps = [TopicPartition("adm", 0, 5, metadata=f"meta-{g}"), TopicPartition("adm", 1, 7)]
        fut = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(g, tps)])
        done = fut[g].result(CLIENT_TIMEOUT_SECONDS)
        assert all(tp.error is None for tp in done.topic_partitions), done.topic_partitions
    got = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(idle[0])])[idle[0]].result(30)
    by_p = {tp.partition: tp for tp in got.topic_partitions}
    assert set(by_p) == {0, 1}, got.topic_partitions
    assert (by_p[0].offset, by_p[0].metadata, by_p[1].offset) == (5, f"meta-{idle[0]}", 7)

    live = ChildConsumer(b, "g-live", "adm")
    try:
        wait_for("a live member", lambda: covers([live], 2))
        listed = admin.list_consumer_groups().result(30)
        ids = {g.group_id: g.state for g in listed.valid}
        assert set(idle) | {"g-live"} <= set(ids)
        assert ids["g-live"] == ConsumerGroupState.STABLE
        assert ids[idle[0]] == ConsumerGroupState.EMPTY
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(30)
        assert [g.group_id for g in stable.valid] == ["g-live"]
        desc = admin.describe_consumer_groups(["g-live"])["g-live"].result(30)
        assert desc.state == ConsumerGroupState.STABLE
        assert desc.partition_assignor == "range"
        assert len(desc.members) == 1
        assert sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions) == [0, 1]

        kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        # A consuming group keeps the offsets of its topics; an idle one gives them up.
        live_del = kadmin.delete_group_offsets("g-live", [KTP("adm", 0)])
        assert any("GroupSubscribedToTopic" in repr(v) or v is not None for v in live_del.values())
        kadmin.delete_group_offsets(idle[1], [KTP("adm", 0)])
        left = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(idle[1])])[idle[1]].result(30)
        assert {tp.partition: tp.offset for tp in left.topic_partitions} == {1: 7}

        # Deleting: a group with members is refused; empty ones go, offsets and all.
        futs = admin.delete_consumer_groups(["g-live", idle[2]])
        try:
            futs["g-live"].result(30)
            raise AssertionError("a live group was deleted")
        except Exception as e:  # noqa: BLE001 - the KafkaException carries the code
            assert "NON_EMPTY_GROUP" in str(e)
        futs[idle[2]].result(30)
        kadmin.close()
    finally:
        live.stop()
    assert b.stop() == 0
    b = broker_factory(data_dir=data, extra_args=FAST, shards=2)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    ids = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    assert idle[2] not in ids, "a deleted group stays deleted after a restart"
    assert set(idle) - {idle[2]} <= ids
    got = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(idle[0])])[idle[0]].result(30)
    assert {tp.partition: (tp.offset, tp.metadata) for tp in got.topic_partitions} == {
        0: (5, f"meta-{idle[0]}"), 1: (7, None)}


def test_clients_cannot_write_the_offsets_topic(broker):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-internal"})
    create_topic(broker.bootstrap, "plain", 1)
    c.commit(offsets=[TopicPartition("plain", 0, 3)], asynchronous=False)
    errors = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 10000})
    p.produce("__consumer_offsets", key=b"k", value=b"garbage", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(CLIENT_TIMEOUT_SECONDS)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors[0]
    assert c.committed([TopicPartition("plain", 0)], timeout=30)[0].offset == 3
    c.close()


def _uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _read_uvarint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def test_find_coordinator_v4_batches_keys(broker):
    """FindCoordinator v4 (KIP-699) by hand: several group keys in one request, each
    answered with this node; a transaction key gets an error of its own."""
    import socket
    import struct

    def request(key_type, keys):
        client = b"raw"
        header = struct.pack(">hhih", 10, 4, 7, len(client)) + client + b"\x00"
        body = struct.pack(">b", key_type) + _uvarint(len(keys) + 1)
        for k in keys:
            body += _uvarint(len(k) + 1) + k.encode()
        body += b"\x00"
        frame = header + body
        with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as s:
            s.sendall(struct.pack(">i", len(frame)) + frame)
            (size,) = struct.unpack(">i", harness._read_exact(s, 4))
            resp = harness._read_exact(s, size)
        (corr,) = struct.unpack(">i", resp[:4])
        assert corr == 7
        _, pos = _read_uvarint(resp, 4)  # header tagged fields
        pos += 4  # throttle time
        n, pos = _read_uvarint(resp, pos)
        out = []
        for _ in range(n - 1):
            klen, pos = _read_uvarint(resp, pos)
            key = resp[pos:pos + klen - 1].decode()
            pos += klen - 1
            (node,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4
            hlen, pos = _read_uvarint(resp, pos)
            host = resp[pos:pos + hlen - 1].decode()
            pos += hlen - 1
            port, error = struct.unpack(">ih", resp[pos:pos + 6])
            pos += 6
            mlen, pos = _read_uvarint(resp, pos)
            pos += max(mlen - 1, 0)
            _, pos = _read_uvarint(resp, pos)  # tagged fields
            out.append((key, node, host, port, error))
        return out

    got = request(0, ["g-a", "g-b", "g-c"])
    assert [g[0] for g in got] == ["g-a", "g-b", "g-c"]
    assert all(g[2:] == ("127.0.0.1", broker.port, 0) for g in got), got
    txn = request(1, ["txn-1"])
    assert txn[0][4] == 15, "COORDINATOR_NOT_AVAILABLE until transactions exist"


