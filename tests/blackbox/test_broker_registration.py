"""Broker registration, the controller and the cluster view, as real processes: brokers
(`corebus`, with their embedded consensus node or `--roles broker` on a group of three
`--roles consensus` nodes), the consensus tree read with the `consensus-session` example (a
real client of the real group), Kafka clients (confluent-kafka) against the brokers.

- A single node registers itself (`/corebus/brokers/ids/1`, ephemeral, versioned JSON with
  its advertised listener) and is the controller (`/corebus/controller` under the same
  session, its epoch in `/corebus/controller_epoch`); Metadata and DescribeCluster say so.
- A broker on a group of three: the consensus node its session is connected to (a follower, and
  the leader) is killed with
  SIGKILL; the session moves, the registration never disappears (a watcher on another node is
  told nothing) and the broker keeps serving produce and consume.
- A broker killed with SIGKILL loses its registration within the documented bound (session
  timeout + a ping interval + a tick + a commit; consensus/src/session.rs) and a watcher is
  told once; a clean stop removes it at once.
- A second broker with a live broker's id is refused at start-up with NODE_EXISTS.
- A broker stopped (SIGSTOP) for longer than its session timeout, on a group of three (the
  group expires its session meanwhile), and a single node with its embedded group: neither
  exits; the expired session is replaced by a new one with a new registration and the
  controller role, and the broker serves its topic and new topics again.
- Two brokers on one group: Metadata from either lists both and the same controller; a topic
  created through the controller is served by the other; the controller is killed and the
  other takes over within the bound.
"""

import json
import os
import re
import signal
import struct
import subprocess
import time

import pytest

import harness
from test_consensus import group, leader_of  # noqa: F401 (group is a fixture)
from test_consensus_sessions import PING_INTERVAL_MS, SCHEDULING_SLACK_MS, TICK_MS, drivers  # noqa: F401
from test_consensus_sessions import serving_group, session_binary

CLIENT_TIMEOUT_SECONDS = 30
# The broker's session timeout in these tests (`corebus.consensus.session.timeout.ms`).
SESSION_TIMEOUT_MS = 1_000
SESSION_OVERRIDE = ["--override", f"corebus.consensus.session.timeout.ms={SESSION_TIMEOUT_MS}"]
# A view change reaches Metadata through a watch: milliseconds; a debug build on a busy
# machine gets this long.
VIEW_TIMEOUT_SECONDS = 15.0
# Beyond the session timeout, a leader change of the group may add its election and sync
# (the broker's registration wait allows 3 s for it, see cluster/registration.rs).
LEADER_CHANGE_ALLOWANCE_MS = 3_000


# The documented bound on how long a SIGKILLed broker's ephemeral nodes outlive it, while
# the group's leader stays (consensus/src/session.rs), without the commit.
SESSION_BOUND_MS = SESSION_TIMEOUT_MS + PING_INTERVAL_MS + TICK_MS


def within_the_session_bound(ms, what):
    """Prints the time something took after a broker's SIGKILL and checks it against the bound:
    not before the session could have expired, not after the bound (plus scheduling slack)."""
    print(f"\n{what} {ms:.0f} ms after the SIGKILL (session timeout {SESSION_TIMEOUT_MS} ms, "
          f"documented bound {SESSION_BOUND_MS} ms + a commit)")
    # The broker's last heartbeat was at most a third of the timeout (and a ping interval)
    # before the kill, so expiry cannot come much sooner.
    assert ms >= SESSION_TIMEOUT_MS * 2 / 3 - PING_INTERVAL_MS, ms
    assert ms <= SESSION_BOUND_MS + SCHEDULING_SLACK_MS, ms


def get_node(addr, path):
    out = subprocess.run(
        [str(session_binary()), "get", "--server", addr, "--path", path],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def embedded_addr(broker):
    log = broker.log_path.read_text(errors="replace")
    marker = "consensus node listening listen="
    line = next(l for l in log.splitlines() if marker in l)
    return line.split(marker, 1)[1].split()[0]


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def view(bootstrap, timeout=CLIENT_TIMEOUT_SECONDS):
    """(broker ids, controller id) from Metadata, and the same from DescribeCluster."""
    a = admin(bootstrap)
    md = a.list_topics(timeout=timeout)
    dc = a.describe_cluster(request_timeout=timeout).result(timeout=timeout)
    return (sorted(md.brokers), md.controller_id), (sorted(n.id for n in dc.nodes), dc.controller.id if dc.controller else -1)


def wait_view(bootstrap, want_brokers, want_controller=None, timeout=VIEW_TIMEOUT_SECONDS):
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            # Each look with a fresh client: librdkafka waits for a controller it last saw
            # (a killed one) rather than reading Metadata again.
            md, dc = last = view(bootstrap, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
        except (KafkaException, TimeoutError) as e:
            last = e
            continue
        ok = md == dc and md[0] == sorted(want_brokers)
        if ok and (want_controller is None or md[1] == want_controller):
            return md
        time.sleep(0.2)
    raise AssertionError(f"view of {bootstrap} not {want_brokers}/{want_controller}: {last}")


def registration(node_id, port):
    return {
        "version": 1,
        "node_id": node_id,
        "listeners": [{"name": "PLAINTEXT", "host": "127.0.0.1", "port": port}],
        "rack": None,
    }


def group_broker(broker_factory, group, node_id, *extra):
    return broker_factory(
        extra_args=["--roles", "broker", "--node-id", str(node_id), "--consensus-peers", group.peers,
                    *SESSION_OVERRIDE, *extra]
    )


def session_server(broker):
    """The consensus node the broker's session was opened on (from its log)."""
    log = broker.log_path.read_text(errors="replace")
    m = re.search(r"broker registered .*server=Some\(([0-9.:]+)\)", log)
    assert m, log[-3000:]
    return m.group(1)


NOT_CONTROLLER = 41


def create_topic_raw(port, name):
    """CreateTopics v2 (the KIP-896 floor) sent to this broker itself (Kafka clients send it
    to the controller from Metadata); returns the topic's error code."""
    body = struct.pack(">i", 1) + struct.pack(">h", len(name)) + name.encode()
    body += struct.pack(">ihii", 1, 1, 0, 0) + struct.pack(">i?", 10_000, False)
    reply = harness.kafka_request(port, 19, 2, body, client=b"registration-test")
    _throttle, count, name_len = struct.unpack(">iih", reply[:10])
    assert count == 1, reply
    assert reply[10 : 10 + name_len].decode() == name
    return struct.unpack(">h", reply[10 + name_len : 12 + name_len])[0]


def produce(bootstrap, topic, values):
    from confluent_kafka import Producer

    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 30000})
    for v in values:
        p.produce(topic, v.encode(), on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
    assert not errors, errors


def consume_all(bootstrap, topic, expected, group=None, commit=False):
    """Up to `expected` values of `topic`, read as a fresh group (from the earliest offset) or
    as `group` (from its committed offsets), committing what was read when `commit`."""
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group or f"reg-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
    while len(got) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    if commit and got:
        c.commit(asynchronous=False)
    c.close()
    return got


def test_single_node_registers_itself_and_is_the_controller(broker):
    addr = embedded_addr(broker)
    reg = get_node(addr, "/corebus/brokers/ids/1")
    assert reg["exists"] and reg["ephemeral_owner"] is not None, reg
    assert json.loads(reg["data"]) == registration(1, broker.port)
    assert get_node(addr, "/corebus/brokers/ids")["children"] == ["1"]
    ctl = get_node(addr, "/corebus/controller")
    assert ctl["exists"] and ctl["ephemeral_owner"] == reg["ephemeral_owner"], ctl
    ctl_data = json.loads(ctl["data"])
    assert ctl_data["version"] == 1 and ctl_data["node_id"] == 1 and ctl_data["epoch"] >= 1
    epoch = json.loads(get_node(addr, "/corebus/controller_epoch")["data"])
    assert epoch == {"version": 1, "epoch": ctl_data["epoch"]}
    assert view(broker.bootstrap) == (([1], 1), ([1], 1))
    # The controller takes topic changes as a single node always did.
    from confluent_kafka.admin import NewTopic

    a = admin(broker.bootstrap)
    a.create_topics([NewTopic("single", 2, 1)])["single"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert "single" in get_node(addr, "/corebus/topics")["children"]


@pytest.mark.parametrize("victim_role", ["follower", "leader"])
def test_session_moves_off_a_killed_consensus_node_and_the_registration_stays(
    group, drivers, broker_factory, victim_role
):
    statuses = serving_group(group)
    leader = leader_of(statuses)
    wanted = leader if victim_role == "leader" else next(i for i in group.ports if i != leader)
    # A broker-only node tries the members in id order, and their ids are only names to it:
    # the wanted node is listed first, so the session opens there.
    order = [wanted] + [i for i in group.ports if i != wanted]
    peers = ",".join(f"{n}@{group.addr(i)}" for n, i in enumerate(order, start=1))
    b = broker_factory(
        extra_args=["--roles", "broker", "--node-id", "7", "--consensus-peers", peers, *SESSION_OVERRIDE]
    )
    assert wait_view(b.bootstrap, [7], 7) == ([7], 7)
    produce(b.bootstrap, "moving", [f"before-{i}" for i in range(20)])
    victim_addr = session_server(b)
    victim = next(i for i in group.ports if group.addr(i) == victim_addr)
    witness = next(i for i in group.ports if i != victim)
    before = get_node(group.addr(witness), "/corebus/brokers/ids/7")
    assert before["exists"], before
    watcher = drivers(
        "watch", "--server", group.addr(witness), "--path", "/corebus/brokers/ids/7",
        "--max-ms", str(3 * SESSION_TIMEOUT_MS + LEADER_CHANGE_ALLOWANCE_MS + 3_000),
    )
    watcher.expect("watching")
    assert victim == wanted, (victim, wanted)
    role = victim_role
    print(f"\nthe broker's session is on consensus node {victim} (the {role}); killing it")
    group.kill9(victim)
    _, done = watcher.expect("done", timeout=3 * SESSION_TIMEOUT_MS / 1000 + 60)
    assert done["count"] == 0, f"the registration changed after killing the {role}: {watcher.seen}"
    after = get_node(group.addr(witness), "/corebus/brokers/ids/7")
    assert after["exists"] and after["ephemeral_owner"] == before["ephemeral_owner"], after
    assert "consensus session moved" in b.log_tail(200_000), "the broker never said it moved"
    # Still the one broker and the controller, and still serving.
    assert wait_view(b.bootstrap, [7], 7) == ([7], 7)
    produce(b.bootstrap, "moving", [f"after-{i}" for i in range(20)])
    got = consume_all(b.bootstrap, "moving", 40)
    assert sorted(got) == sorted([f"before-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)])
    assert b.process.poll() is None


def test_killed_broker_loses_its_registration_within_the_bound_and_a_watcher_is_told_once(
    group, drivers, broker_factory
):
    serving_group(group)
    b = group_broker(broker_factory, group, 7)
    wait_view(b.bootstrap, [7], 7)
    watcher = drivers(
        "watch", "--server", group.addr(2), "--path", "/corebus/brokers/ids/7", "--linger-ms", "3000",
    )
    watcher.expect("watching")
    ctl_watcher = drivers(
        "watch", "--server", group.addr(3), "--path", "/corebus/controller", "--linger-ms", "3000",
    )
    ctl_watcher.expect("watching")
    killed_at = time.monotonic()
    b.process.kill()
    b.process.wait(timeout=10)
    told_at, event = watcher.expect("watch")
    assert event["kind"] == "NodeDeleted" and event["path"] == "/corebus/brokers/ids/7", event
    within_the_session_bound((told_at - killed_at) * 1000, "the registration of a SIGKILLed broker went")
    _, done = watcher.expect("done")
    assert done["count"] == 1, watcher.seen
    _, ctl_event = ctl_watcher.expect("watch")
    assert ctl_event["kind"] == "NodeDeleted", ctl_event
    assert ctl_watcher.expect("done")[1]["count"] == 1, ctl_watcher.seen
    assert not get_node(group.addr(1), "/corebus/controller")["exists"]


def test_clean_stop_removes_the_registration_at_once(group, broker_factory):
    serving_group(group)
    b = group_broker(broker_factory, group, 7)
    wait_view(b.bootstrap, [7], 7)
    assert get_node(group.addr(1), "/corebus/brokers/ids/7")["exists"]
    assert b.stop() == 0, b.log_tail()
    # Read at once: well before the session could have expired.
    stopped_at = time.monotonic()
    assert not get_node(group.addr(1), "/corebus/brokers/ids/7")["exists"]
    assert not get_node(group.addr(2), "/corebus/controller")["exists"]
    assert (time.monotonic() - stopped_at) * 1000 < SESSION_TIMEOUT_MS * 2 / 3


def test_a_second_broker_with_a_live_brokers_id_is_refused(group, broker_factory, tmp_path):
    serving_group(group)
    b = group_broker(broker_factory, group, 7)
    wait_view(b.bootstrap, [7], 7)
    started = time.monotonic()
    with pytest.raises(harness.HarnessError) as refused:
        group_broker(broker_factory, group, 7)
    assert "NODE_EXISTS" in str(refused.value), refused.value
    waited = time.monotonic() - started
    print(f"\nduplicate broker id refused after {waited:.1f} s")
    # The first broker is untouched.
    after = get_node(group.addr(1), "/corebus/brokers/ids/7")
    assert json.loads(after["data"]) == registration(7, b.port)
    assert wait_view(b.bootstrap, [7], 7) == ([7], 7)


def test_two_brokers_agree_on_the_cluster_and_the_controller_moves(group, broker_factory):
    from confluent_kafka.admin import NewTopic

    serving_group(group)
    first = group_broker(broker_factory, group, 7)
    wait_view(first.bootstrap, [7], 7)
    second = group_broker(broker_factory, group, 8)
    for b in (first, second):
        assert wait_view(b.bootstrap, [7, 8], 7) == ([7, 8], 7)
    # Created through the controller (the admin client sends CreateTopics there), served by
    # the other broker once its watch fired.
    a = admin(second.bootstrap)
    a.create_topics([NewTopic("shared", 3, 1)])["shared"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    deadline = time.monotonic() + VIEW_TIMEOUT_SECONDS
    while "shared" not in admin(second.bootstrap).list_topics(timeout=CLIENT_TIMEOUT_SECONDS).topics:
        assert time.monotonic() < deadline, "the topic never reached the other broker"
        time.sleep(0.1)
    produce(second.bootstrap, "shared", ["on-the-other-broker"])
    # Sent to the broker that is not the controller, a topic change is refused, never made.
    assert create_topic_raw(second.port, "not-here") == NOT_CONTROLLER
    assert create_topic_raw(first.port, "here") == 0
    assert "not-here" not in get_node(group.addr(1), "/corebus/topics")["children"]

    killed_at = time.monotonic()
    first.process.kill()
    first.process.wait(timeout=10)
    # The takeover as the tree shows it (a client's view lags behind its own retries).
    while True:
        ctl = get_node(group.addr(1), "/corebus/controller")
        took_ms = (time.monotonic() - killed_at) * 1000
        if ctl["exists"] and json.loads(ctl["data"])["node_id"] == 8:
            break
        assert took_ms <= SESSION_BOUND_MS + SCHEDULING_SLACK_MS, f"no new controller after {took_ms:.0f} ms"
        time.sleep(0.05)
    within_the_session_bound(took_ms, "the other broker became controller")
    assert json.loads(ctl["data"])["epoch"] == 2, ctl
    assert wait_view(second.bootstrap, [8], 8, timeout=60) == ([8], 8)
    # The new controller takes topic changes.
    # (The client is kept in a variable: a collected AdminClient cancels its futures.)
    a = admin(second.bootstrap)
    a.create_topics([NewTopic("after-failover", 1, 1)])["after-failover"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    assert "after-failover" in get_node(group.addr(2), "/corebus/topics")["children"]


# How long the stall tests keep a broker stopped: four session timeouts.
STALL_SECONDS = 4 * SESSION_TIMEOUT_MS / 1000
RENEWED = "registered again with a new consensus session"


def stall(b):
    """Stops the broker's whole process (its shards and, when embedded, its consensus node)
    for STALL_SECONDS, as a loaded host or a VM pause does, then lets it go on."""
    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        time.sleep(STALL_SECONDS)
    finally:
        os.kill(b.process.pid, signal.SIGCONT)


def wait_log(b, text, timeout=VIEW_TIMEOUT_SECONDS + STALL_SECONDS):
    deadline = time.monotonic() + timeout
    while text not in b.log_tail(500_000):
        assert b.process.poll() is None, f"the broker exited ({b.process.returncode})"
        assert time.monotonic() < deadline, f"never logged {text!r}"
        time.sleep(0.1)


def serves_after_the_stall(b, topic, before):
    """The broker is up, the only broker and the controller, keeps what it had, takes more
    and can still change topics (the controller's writes carry the new session's fence)."""
    from confluent_kafka.admin import NewTopic

    assert wait_view(b.bootstrap, [b.node_id], b.node_id) == ([b.node_id], b.node_id)
    produce(b.bootstrap, topic, [f"after-{i}" for i in range(before)])
    got = consume_all(b.bootstrap, topic, 2 * before)
    assert sorted(got) == sorted([f"before-{i}" for i in range(before)] + [f"after-{i}" for i in range(before)])
    a = admin(b.bootstrap)
    a.create_topics([NewTopic(f"{topic}-new", 1, 1)])[f"{topic}-new"].result(timeout=CLIENT_TIMEOUT_SECONDS)
    produce(b.bootstrap, f"{topic}-new", ["fresh"])
    assert b.process.poll() is None, "the broker exited"


def test_broker_stalled_past_its_session_registers_again_and_keeps_serving(group, broker_factory):
    from test_metrics import get as http_get, scrape, total

    serving_group(group)
    metrics_port = harness.free_port()
    b = broker_factory(
        extra_args=["--roles", "broker", "--node-id", "7", "--consensus-peers", group.peers, *SESSION_OVERRIDE],
        metrics_listen=f"127.0.0.1:{metrics_port}",
    )
    b.node_id = 7
    wait_view(b.bootstrap, [7], 7)
    produce(b.bootstrap, "stalled", [f"before-{i}" for i in range(20)])
    old = get_node(group.addr(1), "/corebus/brokers/ids/7")["ephemeral_owner"]
    stall(b)
    # The group went on ticking while the broker was stopped: its session expired.
    wait_log(b, RENEWED)
    reg = get_node(group.addr(2), "/corebus/brokers/ids/7")
    assert reg["exists"] and reg["ephemeral_owner"] not in (None, old), (old, reg)
    assert json.loads(reg["data"]) == registration(7, b.port)
    ctl = get_node(group.addr(3), "/corebus/controller")
    assert ctl["exists"] and ctl["ephemeral_owner"] == reg["ephemeral_owner"], ctl
    serves_after_the_stall(b, "stalled", 20)
    assert total(scrape(metrics_port)[0], "corebus_consensus_session_expiries_total") == 1
    assert http_get(metrics_port, "/ready")[0] == 200


def test_single_node_stalled_past_its_session_never_exits(broker_factory):
    """The embedded group stalls with the broker: when both run again the group may expire
    the session before the broker's next ping reaches it, or not; either way the node keeps
    (or renews) its registration and serves."""
    b = broker_factory(extra_args=SESSION_OVERRIDE, shards=2)
    b.node_id = 1
    produce(b.bootstrap, "single-stalled", [f"before-{i}" for i in range(20)])
    addr = embedded_addr(b)
    old = get_node(addr, "/corebus/brokers/ids/1")["ephemeral_owner"]
    stall(b)
    serves_after_the_stall(b, "single-stalled", 20)
    reg = get_node(addr, "/corebus/brokers/ids/1")
    assert reg["exists"], reg
    renewed = RENEWED in b.log_tail(500_000)
    print(f"\nsingle node stopped {STALL_SECONDS:.0f} s with a {SESSION_TIMEOUT_MS} ms session: "
          f"{'session expired and renewed' if renewed else 'session kept'}")
    assert (reg["ephemeral_owner"] != old) == renewed, (old, reg, renewed)
