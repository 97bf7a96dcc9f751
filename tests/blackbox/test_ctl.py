"""corebus-ctl against the real broker: cluster, topic, produce and consume commands with
their exit codes and JSON output, records checked against what real clients see; offline
`log dump|verify` on a real data directory, clean, after SIGKILL, and corrupted; and a clean
SIGTERM stop leaving every log marked clean, with a relative data directory restarted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CTL_TIMEOUT_SECONDS = 60


def ctl_binary():
    return Path(harness.corebus_binary()).with_name("corebus-ctl")


def ctl(*args, brokers=None, stdin=None, check=True, env_brokers=None):
    """Runs corebus-ctl; returns (exit code, stdout, stderr)."""
    argv = [str(ctl_binary())]
    if brokers is not None:
        argv += ["--brokers", brokers]
    argv += list(args)
    env = dict(os.environ)
    env.pop("COREBUS_BROKERS", None)
    if env_brokers is not None:
        env["COREBUS_BROKERS"] = env_brokers
    p = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=CTL_TIMEOUT_SECONDS, env=env
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}: {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def ctl_json(*args, **kwargs):
    _, out, _ = ctl("--format", "json", *args, **kwargs)
    return json.loads(out)


@pytest.fixture
def broker(tmp_path):
    b = harness.start_broker(tmp_path / "data", tmp_path / "broker.log")
    yield b
    assert b.stop() == 0, b.log_tail()


def test_cluster_info_and_health(broker):
    info = ctl_json("cluster", "info", brokers=broker.bootstrap)
    assert [x["id"] for x in info["brokers"]] == [1]
    assert info["brokers"][0]["port"] == broker.port
    assert info["controller"] == 1
    # COREBUS_BROKERS is the default for --brokers.
    _, out, _ = ctl("cluster", "health", env_brokers=broker.bootstrap)
    assert "healthy: true" in out


def test_unreachable_cluster_exits_3():
    code, _, err = ctl("--brokers", f"127.0.0.1:{harness.free_port()}", "topic", "list", check=False)
    assert code == 3, err
    assert "cannot connect" in err


def test_topic_lifecycle(broker):
    b = broker.bootstrap
    created = ctl_json("topic", "create", "orders", "-p", "3", "-c", "retention.ms=3600000", brokers=b)
    assert created[0]["partitions"] == 3 and created[0]["error"] is None
    # Creating it again fails with Kafka's error, exit 1.
    code, out, _ = ctl("topic", "create", "orders", "-p", "3", brokers=b, check=False)
    assert code == 1 and "TOPIC_ALREADY_EXISTS" in out
    assert [t["name"] for t in ctl_json("topic", "list", brokers=b)] == ["orders"]

    described = ctl_json("topic", "describe", "orders", brokers=b)[0]
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 1 and p["isr"] == [1] for p in described["partitions"])
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "dynamic-topic"

    ctl("topic", "alter-config", "orders", "--set", "retention.ms=1000", "--delete", "cleanup.policy", brokers=b)
    configs = {c["name"]: c for c in ctl_json("topic", "describe", "orders", brokers=b)[0]["configs"]}
    assert configs["retention.ms"]["value"] == "1000"
    code, out, _ = ctl("topic", "alter-config", "orders", "--set", "no.such.config=1", brokers=b, check=False)
    assert code == 1 and "INVALID_CONFIG" in out

    ctl("topic", "add-partitions", "orders", "--total", "5", brokers=b)
    assert len(ctl_json("topic", "describe", "orders", brokers=b)[0]["partitions"]) == 5

    code, out, _ = ctl("topic", "delete", "orders", "ghost", brokers=b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in out
    assert ctl_json("topic", "list", brokers=b) == []
    code, _, err = ctl("topic", "describe", "orders", brokers=b, check=False)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err


def test_produce_and_consume_round_trip_with_real_clients(broker):
    from confluent_kafka import Consumer, TopicPartition
    from kafka.partitioner.default import murmur2

    b = broker.bootstrap
    ctl("topic", "create", "events", "-p", "4", brokers=b)
    lines = [f"h1=a{i},h2=b{i}|key-{i}:value-{i}" for i in range(500)]
    produced = ctl_json(
        "produce", "events", "-k", ":", "--header-sep", "|", "-H", "src=ctl", "-z", "zstd",
        brokers=b, stdin="\n".join(lines) + "\n",
    )
    assert sum(p["records"] for p in produced) == 500

    # A real client sees every record, in the partition Kafka's default partitioner picks.
    c = Consumer({"bootstrap.servers": b, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition("events", p, 0) for p in range(4)])
    seen = {}
    deadline = time.monotonic() + CTL_TIMEOUT_SECONDS
    while len(seen) < 500 and time.monotonic() < deadline:
        for m in c.consume(500, timeout=1):
            assert m.error() is None, m.error()
            seen[m.key().decode()] = (m.partition(), m.value().decode(), m.headers())
    c.close()
    assert len(seen) == 500
    for i in range(500):
        partition, value, headers = seen[f"key-{i}"]
        assert value == f"value-{i}"
        assert headers == [("src", b"ctl"), ("h1", f"a{i}".encode()), ("h2", f"b{i}".encode())]
        assert partition == (murmur2(f"key-{i}".encode()) & 0x7FFFFFFF) % 4

    # corebus-ctl consume reads them back: all, a count, from an offset, as a template.
    records = [json.loads(x) for x in ctl("--format", "json", "consume", "events", "-e", brokers=b)[1].splitlines()]
    assert sorted(r["key"] for r in records) == sorted(seen)
    assert all(r["headers"][0] == {"key": "src", "value": "ctl"} for r in records)
    _, out, _ = ctl("consume", "events", "-p", "0", "-o", "1", "-n", "2", "-f", "%p:%o:%k=%v\\n", brokers=b)
    assert out.splitlines()[0].startswith("0:1:key-") and len(out.splitlines()) == 2
    _, out, _ = ctl("consume", "events", "-o", "latest", "-e", brokers=b)
    assert out == ""
    # acks=0 and a keyless produce to one partition.
    ctl("produce", "events", "-p", "2", "--acks", "0", brokers=b, stdin="x\ny\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tail = ctl("consume", "events", "-p", "2", "-e", "-f", "%v\\n", brokers=b)[1].splitlines()
        if tail[-2:] == ["x", "y"]:
            break
        time.sleep(0.2)
    assert tail[-2:] == ["x", "y"]


def test_log_verify_and_dump_on_a_real_data_dir(tmp_path):
    data = tmp_path / "data"
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        ctl("produce", "logs", "-k", ":", brokers=b.bootstrap, stdin="".join(f"k{i}:v{i}\n" for i in range(300)))
        ctl("produce", "logs", "-z", "gzip", brokers=b.bootstrap, stdin="".join(f"w{i}\n" for i in range(200)))
    finally:
        assert b.stop() == 0, b.log_tail()
    # A clean stop leaves every log synced, trimmed, indexed and marked clean.
    verified = ctl_json("log", "verify", str(data))
    assert [(p["next_offset"], p["clean_shutdown"], p["problems"]) for p in verified] == [(500, True, [])]

    dumped = ctl_json("log", "dump", str(data / "logs-0"), "--records")
    batches = [x for seg in dumped for x in seg["batches"]]
    assert [x["base_offset"] for x in batches] == [0, 300]
    assert all(x["crc_ok"] for x in batches)
    records = [r for x in batches for r in x["record_list"]]
    assert [r["offset"] for r in records] == list(range(500))
    assert records[0]["key"] == "k0" and records[0]["value"] == "v0"
    assert records[300]["key"] is None and records[300]["value"] == "w0"

    # Killed mid-life: the tail may be torn or padded, which recovery handles: not an error.
    b = harness.start_broker(data, tmp_path / "broker.log")
    ctl("produce", "logs", brokers=b.bootstrap, stdin="after\n")
    b.process.send_signal(signal.SIGKILL)
    b.process.wait()
    verified = ctl_json("log", "verify", str(data))
    assert verified[0]["clean_shutdown"] is False and verified[0]["problems"] == []
    assert verified[0]["next_offset"] == 501

    # One flipped byte inside the first batch: verify names it and exits 1.
    segment = data / "logs-0" / "00000000000000000000.log"
    raw = bytearray(segment.read_bytes())
    raw[100] ^= 0xFF
    segment.write_bytes(bytes(raw))
    code, out, err = ctl("log", "verify", str(data / "logs-0"), check=False)
    assert code == 1, (out, err)
    assert "fails its CRC32C" in out
    code, _, err = ctl("log", "verify", str(tmp_path / "nothing-here"), check=False)
    assert code == 1 and "cannot read" in err


def test_relative_data_dir_restarts_clean(tmp_path):
    """The default data dir is relative (./data): a clean stop and a restart must work
    there too (glommio opens directories without a base descriptor)."""
    b = harness.start_broker(Path("data"), tmp_path / "broker.log", cwd=tmp_path)
    try:
        ctl("produce", "rel", brokers=b.bootstrap, stdin="one\ntwo\n")
    finally:
        assert b.stop() == 0, b.log_tail()
    assert "WARN" not in b.log_tail(), b.log_tail()
    assert ctl_json("log", "verify", str(tmp_path / "data"))[0]["clean_shutdown"] is True
    b = harness.start_broker(Path("data"), tmp_path / "broker.log", cwd=tmp_path)
    try:
        _, out, _ = ctl("consume", "rel", "-e", brokers=b.bootstrap)
        assert out.splitlines() == ["one", "two"]
        ctl("produce", "rel", brokers=b.bootstrap, stdin="three\n")
    finally:
        assert b.stop() == 0, b.log_tail()
    assert "cannot open partition log" not in b.log_tail(), b.log_tail()


# --- group commands -------------------------------------------------------------------------

# Joins in seconds rather than Kafka's default 3 s initial rebalance delay.
FAST_GROUPS = ("--override", "group.initial.rebalance.delay.ms=100")
GROUP_TIMEOUT_SECONDS = 30
RECORDS_PER_PARTITION = 10
# Record i of each partition is stamped BASE + i * STEP (CreateTime), so a timestamp seek has
# an exact answer.
TIMESTAMP_STEP_MS = 1_000


def wait_for(what, predicate, timeout=GROUP_TIMEOUT_SECONDS, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout}s")


def group_state(b, group):
    code, out, _ = ctl("--format", "json", "group", "describe", group, brokers=b, check=False)
    return json.loads(out)[0]["state"] if code == 0 else None


def first_reads(b, group, topic, want):
    """What a new member of `group` reads first: {partition: first offset}, after `want`
    records (it commits nothing and leaves)."""
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": b, "group.id": group, "client.id": "ctl-reader",
        "enable.auto.commit": False, "auto.offset.reset": "latest",
    })
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + GROUP_TIMEOUT_SECONDS
    while len(got) < want and time.monotonic() < deadline:
        for m in c.consume(100, timeout=0.5):
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset()))
    c.close()
    assert len(got) == want, got
    first = {}
    for p, o in got:
        first[p] = min(first.get(p, o), o)
    wait_for(f"{group} empty again", lambda: group_state(b, group) == "Empty")
    return first


def test_group_list_describe_seek_delete_with_a_real_consumer_group(tmp_path):
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = harness.start_broker(tmp_path / "data", tmp_path / "broker.log", extra_args=FAST_GROUPS)
    try:
        b = broker.bootstrap
        ctl("topic", "create", "orders", "-p", "2", brokers=b)
        base_ms = int(time.time() * 1000) - 3_600_000
        p = Producer({"bootstrap.servers": b, "linger.ms": 0})
        for partition in (0, 1):
            for i in range(RECORDS_PER_PARTITION):
                p.produce("orders", f"v{partition}-{i}".encode(), partition=partition,
                          timestamp=base_ms + i * TIMESTAMP_STEP_MS)
        assert p.flush(30) == 0

        # A real consumer group reads everything and commits 7 on partition 0, 3 on 1.
        c = Consumer({
            "bootstrap.servers": b, "group.id": "g1", "client.id": "ctl-test",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
        })
        c.subscribe(["orders"])
        seen = 0
        deadline = time.monotonic() + GROUP_TIMEOUT_SECONDS
        while seen < 2 * RECORDS_PER_PARTITION and time.monotonic() < deadline:
            for m in c.consume(100, timeout=0.5):
                assert m.error() is None, m.error()
                seen += 1
        assert seen == 2 * RECORDS_PER_PARTITION
        c.commit(offsets=[TopicPartition("orders", 0, 7), TopicPartition("orders", 1, 3)],
                 asynchronous=False)

        listed = ctl_json("group", "list", brokers=b)
        assert [(g["group"], g["protocol_type"], g["state"]) for g in listed] == [("g1", "consumer", "Stable")]

        d = ctl_json("group", "describe", "g1", brokers=b)[0]
        assert d["state"] == "Stable" and d["protocol_type"] == "consumer"
        [member] = d["members"]
        assert member["client_id"] == "ctl-test" and member["assignment"] == ["orders:0,1"]
        rows = {r["partition"]: r for r in d["offsets"]}
        assert [(rows[i]["committed"], rows[i]["log_end"], rows[i]["lag"]) for i in (0, 1)] == [(7, 10, 3), (3, 10, 7)]
        assert all(r["member_id"] == member["member_id"] and r["client_id"] == "ctl-test" for r in rows.values())
        assert d["total_lag"] == 10
        _, text, _ = ctl("group", "describe", "g1", brokers=b)
        assert "LOG_END" in text and "LAG" in text and "ctl-test" in text

        # While the group has a member: seek and delete are refused, nothing changes.
        code, _, err = ctl("group", "seek", "g1", "--to", "earliest", brokers=b, check=False)
        assert code == 1 and "active members" in err, err
        code, out, _ = ctl("group", "delete", "g1", brokers=b, check=False)
        assert code == 1 and "NON_EMPTY_GROUP" in out
        assert ctl_json("group", "describe", "g1", brokers=b)[0]["total_lag"] == 10

        c.close()
        wait_for("g1 empty", lambda: group_state(b, "g1") == "Empty")
        d = ctl_json("group", "describe", "g1", brokers=b)[0]
        assert d["members"] == [] and d["total_lag"] == 10

        # Earliest: a new member reads from 0.
        reset = ctl_json("group", "seek", "g1", "--to", "earliest", brokers=b)
        assert [(r["partition"], r["old"], r["new"], r["error"]) for r in reset] == [(0, 7, 0, None), (1, 3, 0, None)]
        assert first_reads(b, "g1", "orders", 2 * RECORDS_PER_PARTITION) == {0: 0, 1: 0}

        # An offset: exactly there; beyond the end, clamped to it (as Kafka's tool does).
        ctl("group", "seek", "g1", "--to", "8", brokers=b)
        assert first_reads(b, "g1", "orders", 4) == {0: 8, 1: 8}
        clamped = ctl_json("group", "seek", "g1", "--to", "1000", "--dry-run", brokers=b)
        assert [r["new"] for r in clamped] == [10, 10]
        assert {r["partition"]: r["committed"] for r in ctl_json("group", "describe", "g1", brokers=b)[0]["offsets"]} == {0: 8, 1: 8}

        # A timestamp: the first record at or after it.
        ctl("group", "seek", "g1", "--to-timestamp", str(base_ms + 5 * TIMESTAMP_STEP_MS), brokers=b)
        assert first_reads(b, "g1", "orders", 10) == {0: 5, 1: 5}

        # Latest, for one named topic: no lag left.
        ctl("group", "seek", "g1", "--to", "latest", "--topic", "orders", brokers=b)
        assert ctl_json("group", "describe", "g1", brokers=b)[0]["total_lag"] == 0
        code, _, err = ctl("group", "seek", "g1", "--to", "soon", brokers=b, check=False)
        assert code == 1 and "earliest, latest or an offset" in err

        ctl("group", "delete", "g1", brokers=b)
        assert ctl_json("group", "list", brokers=b) == []
        code, _, err = ctl("group", "describe", "g1", brokers=b, check=False)
        assert code == 1 and "does not exist" in err
        code, _, err = ctl("group", "seek", "g1", "--to", "earliest", brokers=b, check=False)
        assert code == 1 and "--topic" in err
    finally:
        assert broker.stop() == 0, broker.log_tail()


# --- consensus commands ---------------------------------------------------------------------


def consensus_addr(broker):
    """The embedded consensus node's address (the harness lets it pick a port)."""
    marker = "consensus node listening listen="
    line = next(l for l in broker.log_tail(200_000).splitlines() if marker in l)
    return line.split(marker, 1)[1].split()[0]


def test_consensus_ls_get_and_watch_the_brokers_tree(broker):
    addr = consensus_addr(broker)
    b = broker.bootstrap
    listed = ctl_json("consensus", "--consensus", addr, "ls", "/corebus")
    paths = [x["path"] for x in listed]
    assert {"/corebus/cluster", "/corebus/topics", "/corebus/config", "/corebus/brokers"} <= set(paths)
    assert paths == sorted(paths)
    # COREBUS_CONSENSUS is the default for --consensus; text is a table.
    env = dict(os.environ, COREBUS_CONSENSUS=addr)
    out = subprocess.run([str(ctl_binary()), "consensus", "ls", "/corebus"], capture_output=True,
                         text=True, timeout=CTL_TIMEOUT_SECONDS, env=env, check=True).stdout
    assert out.splitlines()[0].split()[:2] == ["PATH", "VERSION"] and "/corebus/topics" in out

    # watch sees the topic being created, then exits after --count 1.
    watcher = subprocess.Popen(
        [str(ctl_binary()), "--format", "json", "consensus", "--consensus", addr,
         "watch", "/corebus/topics", "-r", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watcher.stderr.readline().strip() == "watching /corebus/topics"
        created = ctl_json("topic", "create", "demo", "-p", "3", brokers=b)[0]
        out, err = watcher.communicate(timeout=CTL_TIMEOUT_SECONDS)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    [event] = [json.loads(x) for x in out.splitlines()]
    assert event["type"] == "NodeCreated" and event["path"] == "/corebus/topics/demo"
    assert event["zxid"].startswith("0x")

    node = ctl_json("consensus", "--consensus", addr, "get", "/corebus/topics/demo")
    assert node["encoding"] == "utf-8"
    value = json.loads(node["data"])
    assert value["id"].replace("-", "") == created["id"].replace("-", "")
    assert len(value["partitions"]) == 3
    assert node["version"] == 0 and node["ephemeral_owner"] is None
    assert node["czxid"] == event["zxid"] and node["data_bytes"] == len(node["data"].encode())

    subtree = [x["path"] for x in ctl_json("consensus", "--consensus", addr, "ls", "/corebus", "-r")]
    assert "/corebus/topics/demo" in subtree and "/corebus/config/topics/demo" in subtree
    assert subtree == sorted(subtree) and set(paths) < set(subtree)

    code, _, err = ctl("consensus", "--consensus", addr, "get", "/corebus/nothing", check=False)
    assert code == 1 and "no such node" in err
    code, _, err = ctl("consensus", "--consensus", f"127.0.0.1:{harness.free_port()}",
                       "--timeout-ms", "500", "stat", check=False)
    assert code == 3, err
    code, _, err = ctl("consensus", "--consensus", "nowhere", "stat", check=False)
    assert code == 2 and "--consensus" in err


def test_consensus_stat_on_a_three_node_group(tmp_path, request):
    from test_consensus import Group

    group = Group(tmp_path)
    try:
        for i in group.ports:
            group.start(i)

        def settled():
            code, out, _ = ctl("--format", "json", "consensus", "--consensus", group.servers(),
                               "stat", check=False)
            if code != 0:
                return None
            nodes = json.loads(out)
            leaders = [n for n in nodes if n["role"] == "leading"]
            if len(leaders) != 1 or not all(n["serving"] for n in nodes):
                return None
            followers = leaders[0]["followers"]
            if len(followers) != 2 or not all(f["state"] == "synced" for f in followers):
                return None
            return nodes

        nodes = wait_for("one leader with two synced followers", settled)
        [leader] = [n for n in nodes if n["role"] == "leading"]
        others = [n for n in nodes if n is not leader]
        assert all(n["role"] == "following" and n["followers"] == [] for n in others)
        assert {f["id"] for f in leader["followers"]} == {n["id"] for n in others}
        assert len({n["epoch"] for n in nodes}) == 1
        for f in leader["followers"]:
            assert isinstance(f["lag"], int) and f["lag"] >= 0
            assert f["acked_zxid"].startswith("0x") and f["last_heard_ms"] >= 0
        _, text, _ = ctl("consensus", "--consensus", group.servers(), "stat")
        assert "role: leading" in text and "LAG" in text

        # A follower killed: the leader drops it, and stat names the node that did not answer.
        victim = others[0]["id"]
        group.kill9(victim)
        leader_addr = group.addr(leader["id"])

        def dropped():
            st = ctl_json("consensus", "--consensus", leader_addr, "stat")[0]
            return st if [f["id"] for f in st["followers"]] == [others[1]["id"]] else None

        wait_for("the leader to drop the killed follower", dropped)
        code, out, err = ctl("--format", "json", "consensus", "--consensus", group.servers(),
                             "--timeout-ms", "1000", "stat", check=False)
        assert code == 3 and group.addr(victim) in err
        answers = json.loads(out)
        assert sum("error" in n for n in answers) == 1
    finally:
        report = getattr(request.node, "report_call", None)
        group.stop_all(report is not None and report.failed)
