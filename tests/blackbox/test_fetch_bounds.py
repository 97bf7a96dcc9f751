"""Fetch is bounded on the broker side, whatever a client asks (issue 23, "Fetch has no
broker-side bound"), driven by a hostile raw client with hand-encoded Fetch v4 requests:

- Several connections at once ask, over and over, for max_bytes and partition_max_bytes of
  2^31-1 over all 50 partitions of a topic holding about 1 MB each: every response is correct
  (no errors, whole batches) and carries at most the broker's `fetch.max.bytes` plus one
  batch, the broker's RSS stays within a bound far below what the requests ask for, and a
  normal confluent-kafka consumer then reads everything.
- Many connections each park a fetch (large max_wait_ms and min_bytes on an empty topic):
  past `corebus.shard.max.parked.fetches` per shard they are answered at once, and once their
  sockets close the parked fetches and their waits on every shard end (metrics gauges back to
  0) long before max_wait_ms.
"""

import selectors
import socket
import struct
import threading
import time
import urllib.request

import harness

CLIENT_TIMEOUT_SECONDS = 60
FETCH = 1
I32_MAX = 2**31 - 1

HOARD_TOPIC = "hoard"
HOARD_PARTITIONS = 50
RECORDS_PER_PARTITION = 1_000
VALUE_BYTES = 1_000
# The broker's fetch.max.bytes for the hostile test: far below the 50 MB a request asks for.
FETCH_MAX_BYTES = 1_048_576
# The producer's batch.size: no batch is larger than this plus its header.
BATCH_BYTES = 64 * 1024
HOSTILE_CONNECTIONS = 6
HOSTILE_ROUNDS = 15
HOSTILE_PIPELINED = 3
# What the hostile fetches may add to the broker's RSS. Unbounded, each of the 18 fetches in
# flight reads and copies the 50 MB a request asks for (well over 1 GiB); bounded, each holds
# about two reads of fetch.max.bytes per shard.
RSS_GROWTH_BOUND_BYTES = 192 * 1024 * 1024

QUIET_TOPIC = "quiet"
QUIET_PARTITIONS = 8
MAX_PARKED_PER_SHARD = 8
SHARDS = 2
PARKING_CONNECTIONS = 40
PARK_WAIT_MS = 60_000
# Answers past the cap must come "at once": far sooner than PARK_WAIT_MS.
AT_ONCE_SECONDS = 15
GAUGES_SETTLE_SECONDS = 20


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation, body):
    header = struct.pack(">hhi", api_key, version, correlation) + string("hostile")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def fetch_v4(correlation, topic, partitions, max_wait_ms, min_bytes, max_bytes, partition_max_bytes,
             offsets=None):
    """A Fetch v4 request (replica -1, read uncommitted) for `partitions` of `topic`, in the
    order given, each from offset 0 unless `offsets` says otherwise."""
    offsets = offsets or {}
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iqi", p, offsets.get(p, 0), partition_max_bytes)
    return frame(FETCH, 4, correlation, body)


def read_response(sock):
    size = struct.unpack(">i", harness._read_exact(sock, 4))[0]
    return harness._read_exact(sock, size)


def batches(records):
    """(base offset, size) of each whole batch of a record set; asserts nothing is cut."""
    out, at = [], 0
    while at < len(records):
        assert len(records) - at >= 12, f"a partial batch header at {at} of {len(records)}"
        base, length = struct.unpack(">qi", records[at : at + 12])
        assert length > 0 and at + 12 + length <= len(records), (at, length, len(records))
        out.append((base, 12 + length))
        at += 12 + length
    return out


def parse_fetch_v4(reply):
    """(correlation id, {partition: (error, high watermark, record bytes)})."""
    correlation, _throttle, topics = struct.unpack(">iii", reply[:12])
    at, parts = 12, {}
    for _ in range(topics):
        name_len = struct.unpack(">h", reply[at : at + 2])[0]
        at += 2 + name_len
        (count,) = struct.unpack(">i", reply[at : at + 4])
        at += 4
        for _ in range(count):
            index, error, hw, _lso, aborted = struct.unpack(">ihqqi", reply[at : at + 26])
            at += 26
            if aborted > 0:
                at += 16 * aborted
            (size,) = struct.unpack(">i", reply[at : at + 4])
            at += 4
            records = b"" if size < 0 else reply[at : at + size]
            at += max(size, 0)
            parts[index] = (error, hw, records)
    assert at == len(reply), f"{len(reply) - at} bytes after the response"
    return correlation, parts


def gauge(port, name):
    """Sum over shards of a metric of the broker's /metrics (plain text, no labels kept)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"no {name} in /metrics"
    return total


def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=CLIENT_TIMEOUT_SECONDS)


def fill(bootstrap):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": BATCH_BYTES,
                  "compression.type": "none"})
    errors = []
    value = b"v" * VALUE_BYTES
    for i in range(RECORDS_PER_PARTITION):
        for part in range(HOARD_PARTITIONS):
            while True:
                try:
                    p.produce(HOARD_TOPIC, value, key=b"%d" % i, partition=part,
                              on_delivery=lambda err, msg: err and errors.append(err))
                    break
                except BufferError:
                    p.poll(0.1)
        p.poll(0)
    assert p.flush(CLIENT_TIMEOUT_SECONDS * 2) == 0 and not errors, errors[:5]


def hostile_connection(port, worker, failures, sizes):
    """Pipelines HOSTILE_PIPELINED greedy fetches at a time, HOSTILE_ROUNDS times, each
    listing the partitions from a different starting point so all of them get read."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_SECONDS) as s:
            corr = 0
            for round_ in range(HOSTILE_ROUNDS):
                sent = []
                for k in range(HOSTILE_PIPELINED):
                    start = (worker * 7 + round_ * 3 + k * 11) % HOARD_PARTITIONS
                    order = [(start + i) % HOARD_PARTITIONS for i in range(HOARD_PARTITIONS)]
                    corr += 1
                    s.sendall(fetch_v4(corr, HOARD_TOPIC, order, 0, 1, I32_MAX, I32_MAX))
                    sent.append((corr, order))
                for corr_sent, order in sent:
                    correlation, parts = parse_fetch_v4(read_response(s))
                    assert correlation == corr_sent, (correlation, corr_sent)
                    assert sorted(parts) == sorted(order), sorted(parts)
                    total = 0
                    for p in order:
                        error, hw, records = parts[p]
                        assert error == 0, (p, error)
                        assert hw == RECORDS_PER_PARTITION, (p, hw)
                        if records:
                            assert batches(records)[0][0] == 0, (p, batches(records)[0])
                        total += len(records)
                    # The first listed partition always has data from offset 0, so every
                    # response carries some.
                    assert total > 0
                    sizes.append(total)
    except Exception as e:  # reported by the test, with the worker
        failures.append((worker, repr(e)))


def test_greedy_fetches_get_at_most_fetch_max_bytes_and_memory_stays_bounded(broker_factory):
    from confluent_kafka import Consumer

    b = broker_factory(shards=SHARDS, extra_args=["--override", f"fetch.max.bytes={FETCH_MAX_BYTES}"])
    pid = b.process.pid
    create_topic(b.bootstrap, HOARD_TOPIC, HOARD_PARTITIONS)
    started = harness.rss_bytes(pid)
    fill(b.bootstrap)
    baseline = harness.rss_bytes(pid)

    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], harness.rss_bytes(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    failures, sizes = [], []
    workers = [
        threading.Thread(target=hostile_connection, args=(b.port, w, failures, sizes))
        for w in range(HOSTILE_CONNECTIONS)
    ]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(CLIENT_TIMEOUT_SECONDS * 4)
    elapsed = time.monotonic() - t0
    stop.set()
    sampler.join()
    assert not any(w.is_alive() for w in workers), "a hostile connection never finished"
    assert not failures, failures[:3]
    data_bytes = HOARD_PARTITIONS * RECORDS_PER_PARTITION * VALUE_BYTES
    print(
        f"\nhostile fetch: {len(sizes)} responses in {elapsed:.1f}s, record bytes per response "
        f"min {min(sizes)} max {max(sizes)} (fetch.max.bytes {FETCH_MAX_BYTES}); data "
        f"{data_bytes / 2**20:.0f} MiB; RSS at start {started / 2**20:.0f} MiB, after "
        f"producing {baseline / 2**20:.0f} MiB, peak while fetching {peak[0] / 2**20:.0f} MiB "
        f"(+{(peak[0] - baseline) / 2**20:.0f} MiB), after {harness.rss_bytes(pid) / 2**20:.0f} MiB"
    )
    assert len(sizes) == HOSTILE_CONNECTIONS * HOSTILE_ROUNDS * HOSTILE_PIPELINED
    # KIP-74: only the first batch may take a response past the limit.
    assert max(sizes) <= FETCH_MAX_BYTES + BATCH_BYTES + 1024, max(sizes)
    assert peak[0] - baseline < RSS_GROWTH_BOUND_BYTES, (
        f"RSS grew by {(peak[0] - baseline) / 2**20:.0f} MiB while fetching"
    )
    assert b.process.poll() is None, "the broker exited"

    # A well-behaved consumer still reads everything.
    c = Consumer({
        "bootstrap.servers": b.bootstrap, "group.id": "after-hostile",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    c.subscribe([HOARD_TOPIC])
    want = HOARD_PARTITIONS * RECORDS_PER_PARTITION
    seen, errors = 0, []
    deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS * 3
    while seen < want and time.monotonic() < deadline:
        for m in c.consume(1000, 1.0):
            if m.error():
                errors.append(str(m.error()))
            else:
                seen += 1
    c.close()
    assert seen == want, f"consumed {seen} of {want}; errors {errors[:5]}"


def park(port, correlation):
    """A connection with one fetch parked on the empty topic; returns (socket, time sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_SECONDS)
    partitions = list(range(QUIET_PARTITIONS))
    s.sendall(fetch_v4(correlation, QUIET_TOPIC, partitions, PARK_WAIT_MS, 1_000_000, I32_MAX, I32_MAX))
    return s, time.monotonic()


def answers_within(conns, seconds):
    """Waits up to `seconds` for answers on all `conns` at once: {index: (seconds after its
    request, parsed response)} of those answered."""
    sel = selectors.DefaultSelector()
    for i, (s, _sent) in enumerate(conns):
        sel.register(s, selectors.EVENT_READ, i)
    got = {}
    deadline = time.monotonic() + seconds
    while len(got) < len(conns) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            i = key.data
            s, sent = conns[i]
            s.settimeout(CLIENT_TIMEOUT_SECONDS)
            got[i] = (time.monotonic() - sent, parse_fetch_v4(read_response(s)))
            sel.unregister(s)
    sel.close()
    return got


def test_parked_fetches_are_capped_per_shard_and_end_with_their_connection(broker_factory):
    metrics_port = harness.free_port()
    b = broker_factory(
        shards=SHARDS,
        metrics_listen=f"127.0.0.1:{metrics_port}",
        extra_args=["--override", f"corebus.shard.max.parked.fetches={MAX_PARKED_PER_SHARD}"],
    )
    create_topic(b.bootstrap, QUIET_TOPIC, QUIET_PARTITIONS)
    conns = [park(b.port, i + 1) for i in range(PARKING_CONNECTIONS)]
    # Those past the cap of their shard are answered at once, empty, without error.
    got = answers_within(conns, AT_ONCE_SECONDS)
    answered, waiting = [], []
    for i, (s, _sent) in enumerate(conns):
        if i not in got:
            waiting.append(s)
            continue
        took, (correlation, parts) = got[i]
        assert correlation == i + 1
        assert sorted(parts) == list(range(QUIET_PARTITIONS))
        assert all(e == 0 and hw == 0 and not r for e, hw, r in parts.values()), parts
        answered.append(took)
        s.close()
    parked = gauge(metrics_port, "corebus_parked_fetches")
    waits = gauge(metrics_port, "corebus_fetch_waits")
    not_parked = gauge(metrics_port, "corebus_fetches_not_parked_total")
    print(
        f"\nparking: {len(answered)} of {PARKING_CONNECTIONS} answered at once (slowest "
        f"{max(answered, default=0):.2f}s), {len(waiting)} parked; gauges: parked {parked:.0f}, "
        f"waits on owners {waits:.0f}, not parked {not_parked:.0f}"
    )
    assert len(waiting) <= MAX_PARKED_PER_SHARD * SHARDS
    assert len(answered) >= PARKING_CONNECTIONS - MAX_PARKED_PER_SHARD * SHARDS
    assert not_parked >= len(answered)
    assert parked == len(waiting) and parked > 0
    assert waits >= parked

    # Closing the parked connections ends their fetches and every wait they started, long
    # before max_wait_ms.
    closed_at = time.monotonic()
    for s in waiting:
        s.close()
    settle_deadline = closed_at + GAUGES_SETTLE_SECONDS
    while True:
        parked = gauge(metrics_port, "corebus_parked_fetches")
        waits = gauge(metrics_port, "corebus_fetch_waits")
        if (parked == 0 and waits == 0) or time.monotonic() > settle_deadline:
            break
        time.sleep(0.1)
    print(f"after closing: parked {parked:.0f}, waits {waits:.0f}, "
          f"{time.monotonic() - closed_at:.2f}s after the sockets closed")
    assert parked == 0 and waits == 0
    assert time.monotonic() - closed_at < PARK_WAIT_MS / 1000 / 2
    assert b.process.poll() is None, "the broker exited"
