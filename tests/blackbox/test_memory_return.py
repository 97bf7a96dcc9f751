"""The broker gives freed memory back to the system (the hardening issue: a broker's resident
memory stayed at its peak after a 10,000-partition topic was deleted).

The real broker on loopback; thousands of client connections (each answered one ApiVersions)
raise its resident memory, then close. With `corebus.memory.trim.interval.ms` the memory the
allocator then holds free goes back to the system within seconds; with it off, it stays (the
contrast shows the trim does it, not the closing itself).
"""

import resource
import socket
import struct
import time

import harness

CONNECTIONS = 3000
CLIENT_TIMEOUT_SECONDS = 30
RETURN_DEADLINE_SECONDS = 30
MIB = 1 << 20


def api_versions(sock):
    client = b"memory-test"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    sock.sendall(struct.pack(">i", len(body)) + body)
    (size,) = struct.unpack(">i", harness._read_exact(sock, 4))
    harness._read_exact(sock, size)


def grow_and_close(b):
    """Opens CONNECTIONS connections (each answered), closes them; (fresh, peak) RSS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CONNECTIONS + 256), hard))
    fresh = harness.rss_bytes(b.process.pid)
    held = []
    try:
        for _ in range(CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=CLIENT_TIMEOUT_SECONDS)
            held.append(s)
            api_versions(s)
        peak = harness.rss_bytes(b.process.pid)
    finally:
        for s in held:
            s.close()
    # The broker sees every close (no connection left open) before anything is judged.
    harness.poll_until(
        "the broker to see every connection close",
        lambda: connections_open(b),
        lambda n: n == 0,
        CLIENT_TIMEOUT_SECONDS,
    )
    return fresh, peak


def connections_open(b):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("corebus_connections_open"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no corebus_connections_open")


def start(broker_factory, interval_ms):
    port = harness.free_port()
    b = broker_factory(
        shards=1,
        metrics_listen=f"127.0.0.1:{port}",
        extra_args=["--override", f"corebus.memory.trim.interval.ms={interval_ms}",
                    "--override", f"corebus.memory.trim.threshold.bytes={4 * MIB}"],
    )
    b.metrics_port = port
    return b


def test_memory_freed_by_closed_connections_goes_back_to_the_system(broker_factory):
    b = start(broker_factory, 300)
    fresh, peak = grow_and_close(b)
    grown = peak - fresh
    print(f"\nRSS fresh {fresh / MIB:.0f} MiB, with {CONNECTIONS} connections {peak / MIB:.0f} MiB")
    assert grown > 10 * MIB, f"{CONNECTIONS} connections grew RSS by only {grown / MIB:.1f} MiB"
    # At least half of what the connections took is returned.
    rss = harness.poll_until(
        "the freed memory to be returned",
        lambda: harness.rss_bytes(b.process.pid),
        lambda r: r <= fresh + grown // 2,
        RETURN_DEADLINE_SECONDS,
    )
    print(f"RSS after they closed: {rss / MIB:.0f} MiB")
    assert "returned freed memory" in b.log_tail(500_000) or grown < 64 * MIB


def test_without_the_trim_the_freed_memory_stays(broker_factory):
    b = start(broker_factory, 0)
    fresh, peak = grow_and_close(b)
    grown = peak - fresh
    assert grown > 10 * MIB, f"{CONNECTIONS} connections grew RSS by only {grown / MIB:.1f} MiB"
    time.sleep(3)
    rss = harness.rss_bytes(b.process.pid)
    print(f"\nRSS fresh {fresh / MIB:.0f}, peak {peak / MIB:.0f}, 3 s after closing "
          f"{rss / MIB:.0f} MiB (no trim)")
    assert rss > fresh + grown // 2, "memory came back without the trim: the other test proves nothing"
