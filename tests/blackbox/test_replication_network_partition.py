"""A network partition of one broker (issue 11):
three nodes, each a broker and a member of the consensus group (the default roles), each in a
network namespace of its own, joined by veth pairs to a bridge that the test creates (the
test process, in the root namespace, reaches all three over the bridge). A topic of 3
partitions, replication factor 3, min.insync.replicas 2, consensus session timeout 1 s.

Two idempotent acks=all producers (confluent-kafka) write all the time: one in the root
namespace with every broker in its bootstrap list, one inside the namespace of the broker
that gets cut off, bootstrapped to that broker alone (so the isolated broker keeps a client
the whole time and could acknowledge writes it cannot replicate). The broker leading the
most partitions (the controller among equals) is cut off by taking its bridge port down.

Proves:
- the cut broker loses its leaderships once its session expires: Metadata from the two
  others shows every partition led by one of them, with the cut broker out of every in-sync
  set, and the cluster keeps acknowledging writes to every partition meanwhile;
- healed, the cut broker (which never exited) comes back by itself, with no operator
  action: it is in every in-sync set again and its own Metadata agrees with the others' on
  leaders, replicas and in-sync sets (its log says how: the expired session replaced, what
  the new leaders do not have truncated);
- nothing acknowledged is lost, whoever acknowledged it (the isolated broker included):
  every record either producer saw acknowledged is read exactly once, in that producer's
  order per partition.

Needs root (network namespaces); skipped otherwise.
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

import harness
from test_broker_registration import CLIENT_TIMEOUT_SECONDS, SESSION_OVERRIDE, admin, wait_view
from test_partition_leaders import wait_agreement
from test_replication_failover import PARTITIONS, TOPIC, Writer, create_in_sync, read_partition

KAFKA_PORT = 9092
CONSENSUS_PORT = 9093
# Generous: a debug build on a busy 2-core machine, three brokers and two producers.
START_TIMEOUT_SECONDS = 60
SETTLE_SECONDS = 60
# Acknowledgements to see after the leaderships moved, before healing.
ACKS_WHILE_CUT = 300
# And the cut lasts at least this long after the leaderships moved (many session timeouts).
MIN_CUT_SECONDS = 5
IP_TIMEOUT_SECONDS = 20
# A cut link sends no RST: a request in flight to the cut broker is only given up after
# librdkafka's socket.timeout.ms (60 s by default), and an idempotent producer holds the
# partition's later records back until then. Both producers give up after 10 s instead.
PRODUCER_CONFIG = {"acks": "all", "enable.idempotence": True, "linger.ms": 5,
                   "message.timeout.ms": 120_000, "request.timeout.ms": 10_000,
                   "socket.timeout.ms": 10_000}


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=IP_TIMEOUT_SECONDS)


def free_subnet():
    """X of a 10.199.X.0/24 that no interface here has an address in."""
    used = ip("-4", "-o", "addr").stdout
    start = os.getpid() % 200
    for k in range(250):
        x = (start + k) % 250 + 1
        if f" 10.199.{x}." not in used:
            return x
    raise harness.HarnessError("no free 10.199.X.0/24 subnet")


class Net:
    """A bridge in the root namespace with 10.199.X.1/24, and network namespaces 1..3 each
    joined to it by a veth pair, 10.199.X.(10+i)/24 inside (with lo up). Interface names
    carry the pid so that parallel runs never collide (and stay under 15 characters)."""

    def __init__(self, nodes=(1, 2, 3)):
        tag = os.getpid() % 100000
        x = free_subnet()
        self.bridge = f"npbr{tag}"
        self.gateway = f"10.199.{x}.1"
        self.ns = {i: f"np{tag}n{i}" for i in nodes}
        self.host_side = {i: f"np{tag}h{i}" for i in nodes}
        self.ns_side = {i: f"np{tag}v{i}" for i in nodes}
        self.addr = {i: f"10.199.{x}.{10 + i}" for i in nodes}
        self.made_bridge = False
        self.made_ns = []

    def create(self):
        ip("link", "add", self.bridge, "type", "bridge")
        self.made_bridge = True
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, ns in self.ns.items():
            ip("netns", "add", ns)
            self.made_ns.append(ns)
            ip("link", "add", self.host_side[i], "type", "veth", "peer", "name",
               self.ns_side[i], "netns", ns)
            ip("link", "set", self.host_side[i], "master", self.bridge)
            ip("link", "set", self.host_side[i], "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{self.addr[i]}/24", "dev", self.ns_side[i])
            ip("-n", ns, "link", "set", self.ns_side[i], "up")

    def cut(self, i):
        ip("link", "set", self.host_side[i], "down")

    def heal(self, i):
        ip("link", "set", self.host_side[i], "up")

    def destroy(self):
        # Deleting a namespace deletes its veth end, and with it the peer on the bridge.
        for ns in self.made_ns:
            ip("netns", "del", ns, check=False)
        for dev in self.host_side.values():
            if ip("link", "show", dev, check=False).returncode == 0:
                ip("link", "del", dev, check=False)
        if self.made_bridge:
            ip("link", "del", self.bridge, check=False)


@dataclass
class NsBroker(harness.Broker):
    """A node (broker and consensus member) running in a network namespace."""

    host: str = ""
    node_id: int = 0

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"


def api_versions_answered(host, port):
    """One ApiVersions v0 round trip to host:port (the harness's probe, on an address of our
    choosing)."""
    client = harness.PROBE_CLIENT_ID
    request = struct.pack(">hhih", harness.API_KEY_API_VERSIONS, 0, 1, len(client)) + client
    with socket.create_connection((host, port), timeout=harness.PROBE_TIMEOUT_SECONDS) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", harness._read_exact(s, 4))
        body = harness._read_exact(s, size)
    correlation, error = struct.unpack(">ih", body[:6])
    return correlation == 1 and error == 0


def start_nodes(net, tmp_path):
    """Starts the three nodes at once (each waits for a consensus quorum) and waits until
    each answers ApiVersions on its namespace address."""
    peers = ",".join(f"{i}@{a}:{CONSENSUS_PORT}" for i, a in net.addr.items())
    nodes = {}
    for i, ns in net.ns.items():
        data_dir = tmp_path / f"data-{i}"
        data_dir.mkdir()
        log_path = tmp_path / f"broker-{i}.log"
        argv = [
            "ip", "netns", "exec", ns, str(harness.corebus_binary()),
            "--node-id", str(i),
            "--listen", f"{net.addr[i]}:{KAFKA_PORT}",
            "--consensus-listen", f"{net.addr[i]}:{CONSENSUS_PORT}",
            "--consensus-peers", peers,
            # Each namespace has a loopback of its own.
            "--metrics-listen", "127.0.0.1:0",
            "--data-dir", str(data_dir),
            "--shards", "1",
            *SESSION_OVERRIDE,
        ]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, COREBUS_LOG=os.environ.get("COREBUS_LOG", "info")),
            )
        nodes[i] = NsBroker(process, KAFKA_PORT, data_dir, log_path, {}, host=net.addr[i],
                            node_id=i)
    for n in nodes.values():
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert n.process.poll() is None, (
                f"node {n.node_id} exited with {n.process.returncode} before answering "
                f"ApiVersions:\n{n.log_tail(4000)}")
            try:
                if api_versions_answered(n.host, n.port):
                    break
            except (OSError, ConnectionError, struct.error):
                pass
            assert time.monotonic() < deadline, (
                f"node {n.node_id} never answered ApiVersions on {n.bootstrap}:\n"
                f"{n.log_tail(4000)}")
            time.sleep(harness.PROBE_INTERVAL_SECONDS * 4)
    return nodes


@pytest.fixture
def partitioned_cluster(request, tmp_path):
    """(Net, nodes by id); everything torn down afterwards, the logs shown on failure."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2)")
    net = Net()
    nodes = {}
    try:
        try:
            net.create()
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot create the namespaces and bridge: {e.stderr.strip()}")
        nodes.update(start_nodes(net, tmp_path))
        yield net, nodes
    finally:
        report = getattr(request.node, "report_call", None)
        failed = report is None or report.failed
        for n in nodes.values():
            code = n.stop()
            if failed:
                sys.stderr.write(f"--- node {n.node_id} on {n.bootstrap} (exit code {code}), "
                                 f"{n.log_path}:\n{n.log_tail()}\n")
        inner = tmp_path / "inner-producer.out"
        if failed and inner.exists():
            sys.stderr.write(f"--- producer in the cut namespace, {inner}:\n"
                             f"{inner.read_text(errors='replace')[-4000:]}\n")
        net.destroy()


# A producer run inside the cut broker's namespace (so that it reaches that broker alone while
# the link is down): writes i-<n> to partition n % partitions, idempotent and acks=all, until
# the stop file exists; one line per delivery report.
INNER_PRODUCER = r"""
import json, os, sys, time
from confluent_kafka import Producer

bootstrap, topic, partitions, out_path, stop_path = sys.argv[1:6]
partitions = int(partitions)
out = open(out_path, "a", buffering=1)
p = Producer({"bootstrap.servers": bootstrap, **json.loads(sys.argv[6])})

def delivered(err, msg):
    if err is None:
        out.write(f"ack {msg.partition()} {msg.value().decode()} {time.monotonic():.3f}\n")
    else:
        out.write(f"err {msg.partition()} {msg.value().decode()} {err.str()}\n")

n = 0
while not os.path.exists(stop_path):
    try:
        p.produce(topic, f"i-{n}".encode(), partition=n % partitions, on_delivery=delivered)
        n += 1
    except BufferError:
        pass
    p.poll(0.01)
left = p.flush(150)
out.write(f"done {n} {left}\n")
"""


class InnerProducer:
    def __init__(self, tmp_path, ns, bootstrap):
        self.out = tmp_path / "inner-producer.out"
        self.stop_path = tmp_path / "inner-producer.stop"
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", INNER_PRODUCER, bootstrap,
             TOPIC, str(PARTITIONS), str(self.out), str(self.stop_path),
             json.dumps(PRODUCER_CONFIG)],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "inner-producer.err", "ab"),
            stdin=subprocess.DEVNULL,
        )

    def lines(self):
        try:
            return self.out.read_text().splitlines()
        except OSError:
            return []

    def acked(self):
        """{partition: [value]} in acknowledgement order, and {partition: [when]}."""
        values = {p: [] for p in range(PARTITIONS)}
        times = {p: [] for p in range(PARTITIONS)}
        for line in self.lines():
            if line.startswith("ack "):
                _, p, v, t = line.split()
                values[int(p)].append(v)
                times[int(p)].append(float(t))
        return values, times

    def count(self):
        return sum(1 for l in self.lines() if l.startswith("ack "))

    def stop(self):
        """Asks it to stop (it flushes first); `finish` waits."""
        self.stop_path.touch()

    def finish(self):
        """Waits until it flushed and exited; its last line ("done <sent> <left>")."""
        self.stop()
        try:
            self.process.wait(timeout=200)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the producer in the cut namespace never finished flushing")
        done = [l for l in self.lines() if l.startswith("done ")]
        assert self.process.returncode == 0 and done, (
            f"the producer in the cut namespace exited with {self.process.returncode}: "
            f"{(self.out.parent / 'inner-producer.err').read_text(errors='replace')[-2000:]}")
        return done[-1]


class PartitionWriter(Writer):
    """The failover tests' producer (idempotent, acks=all, `w-<n>` to partition n % 3, what
    was acknowledged remembered), with PRODUCER_CONFIG."""

    def __init__(self, bootstrap):
        from confluent_kafka import Producer

        super().__init__(bootstrap)
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})


def view(bootstrap):
    """{partition: (leader, sorted isr)} from Metadata, and the controller id."""
    md = admin(bootstrap).list_topics(TOPIC, timeout=CLIENT_TIMEOUT_SECONDS)
    t = md.topics[TOPIC]
    return {p: (m.leader, sorted(m.isrs)) for p, m in t.partitions.items()}, md.controller_id


def wait_for(what, bootstrap, check):
    return harness.poll_until(what, lambda: view(bootstrap)[0],
                              lambda v: len(v) == PARTITIONS and check(v), SETTLE_SECONDS)


def all_in_sync(v):
    return all(leader in (1, 2, 3) and isr == [1, 2, 3] for leader, isr in v.values())


def check_read_once_in_order(bootstrap, acked_by):
    """Every value in `acked_by` ({producer: {partition: [value in ack order]}}) is read
    exactly once, and each producer's in its order, per partition."""
    for p in range(PARTITIONS):
        expected = sum(len(acked[p]) for acked in acked_by.values())
        got = read_partition(bootstrap, p, expected)
        twice = sorted({v for v in got if got.count(v) > 1})
        assert not twice, (
            f"partition {p}: read more than once: "
            f"{[(v, [i for i, g in enumerate(got) if g == v]) for v in twice[:5]]}")
        where = {v: i for i, v in enumerate(got)}
        for who, acked in acked_by.items():
            missing = [v for v in acked[p] if v not in where]
            assert not missing, (
                f"partition {p}: {len(missing)} records acknowledged to {who} lost, e.g. "
                f"{missing[:5]} ({len(acked[p])} acknowledged, {len(got)} read)")
            positions = [where[v] for v in acked[p]]
            assert positions == sorted(positions), (
                f"partition {p}: records acknowledged to {who} read out of order")


def test_a_cut_off_broker_loses_its_leaderships_and_no_acknowledged_record_is_lost(
    partitioned_cluster, tmp_path
):
    net, nodes = partitioned_cluster
    everyone = ",".join(n.bootstrap for n in nodes.values())
    for n in nodes.values():
        wait_view(n.bootstrap, [1, 2, 3], timeout=START_TIMEOUT_SECONDS)
    create_in_sync(nodes.values(), everyone)

    writer = PartitionWriter(everyone)
    writer.start()
    inner = victim = None
    try:
        # Both producers under way before the cut.
        deadline = time.monotonic() + SETTLE_SECONDS
        while writer.count() < 300:
            assert time.monotonic() < deadline, "the producer got no acknowledgements"
            time.sleep(0.2)
        led, controller = view(everyone)
        assert all_in_sync(led), led
        counts = {i: sum(1 for l, _ in led.values() if l == i) for i in nodes}
        victim = max(nodes, key=lambda i: (counts[i], i == controller, -i))
        victim_led = [p for p, (l, _) in led.items() if l == victim]
        inner = InnerProducer(tmp_path, net.ns[victim], nodes[victim].bootstrap)
        deadline = time.monotonic() + SETTLE_SECONDS
        while inner.count() < 30:
            assert inner.process.poll() is None and time.monotonic() < deadline, (
                f"the producer in node {victim}'s namespace got no acknowledgements: "
                f"{inner.lines()[-5:]}")
            time.sleep(0.2)

        print(f"\ncutting off node {victim} (leader of {victim_led}, controller {controller})")
        cut_at = time.monotonic()
        net.cut(victim)
        others = ",".join(n.bootstrap for i, n in nodes.items() if i != victim)
        moved = wait_for(
            f"the partitions of cut-off node {victim} led by another, without it in sync",
            others,
            lambda v: all(l not in (victim, -1) and victim not in isr for l, isr in v.values()),
        )
        moved_at = time.monotonic()
        print(f"leaderships moved {moved_at - cut_at:.2f} s after the cut: {moved}")

        # The cluster keeps taking acks=all writes on every partition.
        before = writer.count()
        deadline = time.monotonic() + SETTLE_SECONDS
        while (writer.count() < before + ACKS_WHILE_CUT
               or time.monotonic() < moved_at + MIN_CUT_SECONDS
               or not all(any(t > moved_at for t in writer.acked_at[p])
                          for p in range(PARTITIONS))):
            assert time.monotonic() < deadline, (
                f"no progress while node {victim} is cut off: {writer.count() - before} "
                f"acknowledged, per partition since the move "
                f"{ {p: sum(t > moved_at for t in writer.acked_at[p]) for p in range(PARTITIONS)} }, "
                f"errors {writer.failed[:5]}")
            time.sleep(0.2)
        assert nodes[victim].process.poll() is None, (
            f"node {victim} exited while cut off:\n{nodes[victim].log_tail(4000)}")

        heal_at = time.monotonic()
        net.heal(victim)
        back = wait_for(f"node {victim} back in every in-sync set", everyone, all_in_sync)
        print(f"node {victim} in every in-sync set {time.monotonic() - heal_at:.2f} s after "
              f"the heal: {back}")
        # The healed node itself agrees (it knows it lost what it led).
        wait_agreement(list(nodes.values()), TOPIC, PARTITIONS)
        for i, n in nodes.items():
            assert n.process.poll() is None, f"node {i} exited:\n{n.log_tail(4000)}"
    finally:
        # Both producers flush at once, with the link up (also when the test failed).
        writer.stop.set()
        if inner is not None:
            inner.stop()
        if victim is not None:
            net.heal(victim)
        writer.join(timeout=180)
        if inner is not None and inner.process.poll() is None:
            try:
                inner.process.wait(timeout=200)
            except subprocess.TimeoutExpired:
                inner.process.kill()
                inner.process.wait()
    inner_done = inner.finish()

    assert not writer.is_alive(), "the producer never finished flushing"
    acked_inner, inner_times = inner.acked()
    in_cut = {p: sum(cut_at < t < heal_at for t in writer.acked_at[p]) for p in range(PARTITIONS)}
    inner_in_cut = {p: sum(cut_at < t < heal_at for t in inner_times[p]) for p in range(PARTITIONS)}
    # (Times are those of the delivery reports: a few reported just after the cut were
    # acknowledged just before it.)
    print(f"acknowledged: {writer.count()} to the producer outside ({in_cut} per partition "
          f"reported while cut), {sum(len(v) for v in acked_inner.values())} to the one beside "
          f"node {victim} ({inner_in_cut} reported while cut); inner producer {inner_done}; "
          f"{len(writer.failed)} failed outside, e.g. {writer.failed[:3]}")
    # Writes went on during the partition, on every partition.
    assert all(in_cut.values()), f"a partition took no writes while node {victim} was cut: {in_cut}"
    check_read_once_in_order(everyone, {"the producer outside": writer.acked,
                                        f"the producer beside node {victim}": acked_inner})

    for i, n in nodes.items():
        assert n.stop() == 0, f"node {i} did not stop cleanly:\n{n.log_tail(4000)}"
