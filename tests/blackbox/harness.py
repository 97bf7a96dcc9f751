"""The black-box harness: runs the real `corebus` binary on a free loopback port with a
fresh data directory, and finds the pinned Kafka clients the tests drive it with.

Owns: locating the binary and the clients, picking ports, starting, probing (a real Kafka
ApiVersions round trip, not just an open port) and stopping the broker, and keeping its log
for the test report.

Never: talks to anything but 127.0.0.1; reaches into the broker's internals (tests see it
only over TCP, as a client would); leaves a broker running after its test.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DEPS = REPO / ".test-deps"
NODE_MODULES = TEST_DEPS / "node" / "node_modules"

# How long a broker may take from exec to answering ApiVersions (a debug build on a busy
# 2-core machine included).
BROKER_START_TIMEOUT_SECONDS = 30.0
# How long a broker may take to exit after SIGTERM before it is killed.
BROKER_STOP_TIMEOUT_SECONDS = 10.0
# Bounds on one readiness probe round trip.
PROBE_TIMEOUT_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 0.05
# Largest probe response accepted: an ApiVersions answer is a few hundred bytes.
MAX_PROBE_RESPONSE_BYTES = 1 << 20
# Attempts to start the broker when the free port was taken between choosing and binding.
BROKER_START_ATTEMPTS = 3

API_KEY_API_VERSIONS = 18
PROBE_CLIENT_ID = b"corebus-blackbox-harness"


class HarnessError(Exception):
    """The harness could not provide what a test asked for (no binary, broker did not come up)."""


def corebus_binary():
    """The broker binary: $COREBUS_BIN, else the debug build in the cargo target dir."""
    explicit = os.environ.get("COREBUS_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "debug" / "corebus"
    if not path.is_file():
        raise HarnessError(f"corebus binary not found at {path}: run `cargo build` first")
    return path


def kcat_binary():
    path = shutil.which("kcat")
    if path is None:
        raise HarnessError("kcat not found: run scripts/install-test-deps")
    return path


def node_env():
    """Environment under which `node` finds the pinned kafkajs."""
    return dict(os.environ, NODE_PATH=str(NODE_MODULES))


def free_port():
    """A loopback port free right now. The broker binds it a moment later; the small race is
    handled by retrying the start (BROKER_START_ATTEMPTS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def rss_bytes(pid):
    """The resident set of process `pid`, in bytes (its VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def poll_until(what, look, check, timeout):
    """Calls `look()` until `check` holds for what it returns, and returns that; an exception
    from `look()` (a broker between lives, metadata between states) counts as not yet. Fails
    with the last answer after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = look()
            if check(last):
                return last
        except Exception as e:  # noqa: BLE001 (see above)
            last = e
        assert time.monotonic() < deadline, f"never {what}: {last}"
        time.sleep(0.3)


def read_values(bootstrap, assignment, count, timeout):
    """The values a confluent-kafka consumer assigned `assignment` (TopicPartitions) reads, up
    to `count` of them or until `timeout` seconds; starts at the log start when an assigned
    offset is gone."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign(assignment)
    seen = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            seen.append(m.value())
    c.close()
    return seen


def kafka_request(port, api_key, api_version, body, client=b"blackbox", timeout=30):
    """Sends one request with a v1 (non-flexible) header and correlation id 1 to the broker on
    `port` and returns the response body after its correlation id (v0 response header)."""
    header = struct.pack(">hhih", api_key, api_version, 1, len(client)) + client
    frame = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _read_exact(s, 4))[0]
        reply = _read_exact(s, size)
    (correlation,) = struct.unpack(">i", reply[:4])
    assert correlation == 1, reply
    return reply[4:]


def api_versions_probe(port):
    """Sends ApiVersions v0 (every broker answers it) and returns the advertised
    {api_key: (min, max)}. Raises OSError/ConnectionError/ValueError when the peer is not
    (yet) a working Kafka broker."""
    correlation_id = 1
    request = (
        struct.pack(">hhih", API_KEY_API_VERSIONS, 0, correlation_id, len(PROBE_CLIENT_ID))
        + PROBE_CLIENT_ID
    )
    with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_SECONDS) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _read_exact(s, 4))
        if not 10 <= size <= MAX_PROBE_RESPONSE_BYTES:
            raise ValueError(f"ApiVersions response of {size} bytes")
        body = _read_exact(s, size)
    got_correlation_id, error, count = struct.unpack(">ihi", body[:10])
    if got_correlation_id != correlation_id:
        raise ValueError(f"correlation id {got_correlation_id}, sent {correlation_id}")
    if error != 0:
        raise ValueError(f"ApiVersions v0 answered with error {error}")
    if count < 0 or 10 + 6 * count > len(body):
        raise ValueError(f"ApiVersions v0 array of {count} entries in {len(body)} bytes")
    ranges = {}
    for i in range(count):
        key, low, high = struct.unpack(">hhh", body[10 + 6 * i : 16 + 6 * i])
        ranges[key] = (low, high)
    return ranges


@dataclass
class Broker:
    """One running corebus process."""

    process: subprocess.Popen
    port: int
    data_dir: Path
    log_path: Path
    api_versions: dict

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log_tail(self, max_bytes=20_000):
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM, then SIGKILL after BROKER_STOP_TIMEOUT_SECONDS; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(BROKER_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until_ready(process, port, timeout_seconds, log_path):
    """Probes until the process answers ApiVersions; fails early if it exits."""
    deadline = time.monotonic() + timeout_seconds
    last_error = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(
                f"broker exited with code {process.returncode} before answering "
                f"ApiVersions; log {log_path}:\n{_tail(log_path)}"
            )
        try:
            return api_versions_probe(port)
        except (OSError, ValueError, struct.error) as e:
            last_error = e
            time.sleep(PROBE_INTERVAL_SECONDS)
    raise HarnessError(
        f"broker did not answer ApiVersions on port {port} within {timeout_seconds}s "
        f"(last: {last_error}); log {log_path}:\n{_tail(log_path)}"
    )


def _tail(path, max_bytes=4000):
    try:
        return Path(path).read_bytes()[-max_bytes:].decode("utf-8", "replace")
    except OSError:
        return ""


def start_broker(
    data_dir,
    log_path,
    extra_args=(),
    shards=1,
    command=None,
    cwd=None,
    metrics_listen="127.0.0.1:0",
    port=None,
):
    """Starts a broker on a free loopback port with `data_dir` and waits until it answers
    ApiVersions. `command` replaces the corebus command line (the harness self-test uses it
    to stand in a fake broker); it gets `{port}` and `{data_dir}` substituted. A relative
    `data_dir` is relative to `cwd` (the broker's working directory). `metrics_listen` is
    passed as `--metrics-listen` (a port of the broker's choosing by default, so brokers of
    parallel tests never contend for the default 9644; None passes nothing). `port` restarts a
    broker on the port it had (clients that lost every broker go back to their bootstrap
    list, as after a real restart)."""
    (Path(cwd) / data_dir if cwd else data_dir).mkdir(parents=True, exist_ok=True)
    last_error = None
    fixed_port = port
    for _ in range(BROKER_START_ATTEMPTS):
        port = fixed_port or free_port()
        if command is None:
            argv = [
                str(corebus_binary()),
                "--listen",
                f"127.0.0.1:{port}",
                # The embedded consensus node on a port of its own choosing, so that brokers
                # of parallel tests never contend for the default 9093.
                "--consensus-listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                "--shards",
                str(shards),
                *(["--metrics-listen", metrics_listen] if metrics_listen else []),
                *extra_args,
            ]
        else:
            argv = [a.format(port=port, data_dir=data_dir) for a in command]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, COREBUS_LOG=os.environ.get("COREBUS_LOG", "info")),
                cwd=cwd,
            )
        try:
            versions = wait_until_ready(process, port, BROKER_START_TIMEOUT_SECONDS, log_path)
            return Broker(process, port, data_dir, log_path, versions)
        except HarnessError as e:
            last_error = e
            if process.poll() is None:
                process.kill()
                process.wait()
            # Retry only when the port was taken in the meantime.
            if "in use" not in _tail(log_path).lower():
                break
            if fixed_port:
                time.sleep(1)  # the same port, once whatever held it lets go
    raise last_error
