"""A recording TCP proxy for the Kafka protocol, put between a real client and librdkafka's
mock cluster so that corebus's wire tests can replay what real clients send and receive.

Owns: framing (4-byte size prefix), pairing responses with requests by correlation id,
recording every frame body as the client saw it, and pointing clients back at the proxy
when a response advertises the mock broker's address.

Never: touches any frame but the broker-address carrying responses (Metadata,
FindCoordinator, DescribeCluster), whose length it keeps, and the mock's malformed
ApiVersions fallback reply, which it replaces with Apache Kafka's (KIP-511); never decodes
record data.
"""

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# Kafka's socket.request.max.bytes default: a frame larger than this is a broken stream.
MAX_FRAME_BYTES = 100 * 1024 * 1024

API_KEY_METADATA = 3
API_KEY_FIND_COORDINATOR = 10
API_KEY_DESCRIBE_CLUSTER = 60
# Responses that carry broker host/port pairs clients will connect to.
ADDRESS_CARRYING_API_KEYS = (API_KEY_METADATA, API_KEY_FIND_COORDINATOR, API_KEY_DESCRIBE_CLUSTER)
API_KEY_API_VERSIONS = 18
ERROR_UNSUPPORTED_VERSION = 35
# The first ApiVersions version whose body is flexible (compact arrays, tagged fields).
API_VERSIONS_FIRST_FLEXIBLE_VERSION = 3

# Versions librdkafka's mock (2.16) advertises but cannot parse: its handlers read these
# flexible request versions as if they were not flexible and drop the connection. The proxy
# lowers the advertised maximum so that clients pick a version the mock really speaks.
MOCK_MAX_WORKING_VERSIONS = {
    11: 5,  # JoinGroup: "ProtocolCnt 50754145 > max allowed 1000" on v6
    13: 2,  # LeaveGroup: its v4 response is not flexible; on v3 it misreads the member batch
    14: 3,  # SyncGroup v4
}


@dataclass
class Frame:
    """One frame body (without the size prefix), as the client sent or received it."""

    connection: int
    direction: str  # "request" or "response"
    api_key: int
    api_version: int
    correlation_id: int
    body: bytes
    client_id: str | None = None
    # Why the proxy changed this frame, if it did.
    note: str | None = None


@dataclass
class Recording:
    frames: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, frame):
        with self.lock:
            self.frames.append(frame)


def _read_exact(sock, n):
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock):
    """Returns the frame body, or None at end of stream."""
    prefix = _read_exact(sock, 4)
    if prefix is None:
        return None
    (size,) = struct.unpack(">i", prefix)
    if size < 0 or size > MAX_FRAME_BYTES:
        raise ValueError(f"frame size {size} out of range")
    return _read_exact(sock, size)


def _request_client_id(body):
    """Request header v1+ carries a nullable int16-length client id right after the
    correlation id (v2 keeps it in that non-compact form too, KIP-482)."""
    if len(body) < 10:
        return None
    (length,) = struct.unpack(">h", body[8:10])
    if length < 0:
        return None
    return body[10 : 10 + length].decode("utf-8", "replace")


class RecordingProxy:
    """Listens on 127.0.0.1 and forwards every connection to one upstream broker.

    The mock cluster advertises 127.0.0.1:<its port>; the proxy also listens on 127.0.0.1, so
    rewriting the advertised port in place keeps every frame's length unchanged and the
    recorded bytes stay valid Kafka frames.
    """

    def __init__(self, upstream_host, upstream_port, recording):
        if upstream_host != "127.0.0.1":
            raise ValueError(f"the mock broker is expected on 127.0.0.1, got {upstream_host}")
        self.upstream = (upstream_host, upstream_port)
        self.recording = recording
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._api_versions_range = probe_api_versions_range(self.upstream)
        self._advertised = b"127.0.0.1" + struct.pack(">i", upstream_port)
        self._replacement = b"127.0.0.1" + struct.pack(">i", self.port)
        self._next_connection = 0
        self._sockets = []
        self._closing = False
        self.errors = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self._closing = True
        for s in [self.listener, *self._sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept_loop(self):
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            connection = self._next_connection
            self._next_connection += 1
            # correlation id -> (api key, api version); acks=0 Produce never gets a response.
            pending = {}
            pending_lock = threading.Lock()
            threading.Thread(
                target=self._pump_requests,
                args=(connection, client, upstream, pending, pending_lock),
                daemon=True,
            ).start()
            threading.Thread(
                target=self._pump_responses,
                args=(connection, upstream, client, pending, pending_lock),
                daemon=True,
            ).start()

    def _pump_requests(self, connection, client, upstream, pending, pending_lock):
        try:
            while True:
                body = _read_frame(client)
                if body is None:
                    break
                if len(body) < 8:
                    raise ValueError(f"request of {len(body)} bytes has no header")
                api_key, api_version, correlation_id = struct.unpack(">hhi", body[:8])
                with pending_lock:
                    pending[correlation_id] = (api_key, api_version)
                self.recording.add(
                    Frame(
                        connection,
                        "request",
                        api_key,
                        api_version,
                        correlation_id,
                        body,
                        client_id=_request_client_id(body),
                    )
                )
                upstream.sendall(struct.pack(">i", len(body)) + body)
        except (OSError, ValueError) as e:
            if not self._closing:
                self.errors.append(f"connection {connection} requests: {e}")
        finally:
            _half_close(upstream)

    def _pump_responses(self, connection, upstream, client, pending, pending_lock):
        try:
            while True:
                body = _read_frame(upstream)
                if body is None:
                    break
                (correlation_id,) = struct.unpack(">i", body[:4])
                with pending_lock:
                    api = pending.pop(correlation_id, None)
                if api is None:
                    raise ValueError(f"response to unknown correlation id {correlation_id}")
                api_key, api_version = api
                note = None
                if api_key in ADDRESS_CARRYING_API_KEYS and self._advertised in body:
                    body = body.replace(self._advertised, self._replacement)
                    note = "mock broker port rewritten to the proxy's (same length)"
                elif api_key == API_KEY_API_VERSIONS and _error_code(body) == 0:
                    capped = cap_advertised_versions(body, api_version, MOCK_MAX_WORKING_VERSIONS)
                    if capped != body:
                        body = capped
                        note = (
                            "advertised maxima lowered by the proxy to versions the mock can "
                            f"parse: {MOCK_MAX_WORKING_VERSIONS} (same length)"
                        )
                elif api_key == API_KEY_API_VERSIONS and _error_code(body) == ERROR_UNSUPPORTED_VERSION:
                    body = self._unsupported_api_versions_reply(correlation_id)
                    note = (
                        "written by the proxy: Apache Kafka's KIP-511 fallback reply (the mock's "
                        "own is malformed)"
                    )
                self.recording.add(
                    Frame(
                        connection,
                        "response",
                        api_key,
                        api_version,
                        correlation_id,
                        body,
                        note=note,
                    )
                )
                client.sendall(struct.pack(">i", len(body)) + body)
        except (OSError, ValueError) as e:
            if not self._closing:
                self.errors.append(f"connection {connection} responses: {e}")
        finally:
            _half_close(client)


    def _unsupported_api_versions_reply(self, correlation_id):
        """What Apache Kafka answers to an ApiVersions version it does not support: the v0
        body (whatever version was asked) with UNSUPPORTED_VERSION and only the ApiVersions
        range, so the client retries with a version inside it.

        librdkafka's mock (2.16) answers with an array count that fits no version's format;
        librdkafka shrugs and retries with v0, kafka-python 3.x rejects it and never
        connects, so the recording would miss kafka-python entirely.
        """
        low, high = self._api_versions_range
        return struct.pack(
            ">ihihhh", correlation_id, ERROR_UNSUPPORTED_VERSION, 1, API_KEY_API_VERSIONS, low, high
        )


def _read_uvarint(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def cap_advertised_versions(body, api_version, caps):
    """Returns the ApiVersions response body with each capped key's max version lowered to its
    cap, in place (same length). Unknown layouts are returned unchanged."""
    out = bytearray(body)
    pos = 6  # correlation id, error code
    if api_version >= API_VERSIONS_FIRST_FLEXIBLE_VERSION:
        count_plus_one, pos = _read_uvarint(out, pos)
        count = count_plus_one - 1
    else:
        (count,) = struct.unpack_from(">i", out, pos)
        pos += 4
    for _ in range(max(count, 0)):
        key, _low, high = struct.unpack_from(">hhh", out, pos)
        if key in caps and high > caps[key]:
            struct.pack_into(">h", out, pos + 4, caps[key])
        pos += 6
        if api_version >= API_VERSIONS_FIRST_FLEXIBLE_VERSION:
            tag_count, pos = _read_uvarint(out, pos)
            if tag_count != 0:
                return body
    return bytes(out)


def _error_code(api_versions_response_body):
    if len(api_versions_response_body) < 6:
        return None
    return struct.unpack(">h", api_versions_response_body[4:6])[0]


def probe_api_versions_range(address):
    """Asks the broker for its ApiVersions range with an ApiVersions v0 request (the version
    every broker answers) on a connection of the proxy's own."""
    client_id = b"corebus-recording-proxy"
    request = struct.pack(">hhih", API_KEY_API_VERSIONS, 0, 0, len(client_id)) + client_id
    with socket.create_connection(address) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        body = _read_frame(sock)
    if body is None:
        raise ValueError("broker closed the connection before answering ApiVersions")
    _, error, count = struct.unpack(">ihi", body[:10])
    if error != 0:
        raise ValueError(f"ApiVersions v0 failed with error {error}")
    for i in range(count):
        key, low, high = struct.unpack(">hhh", body[10 + 6 * i : 16 + 6 * i])
        if key == API_KEY_API_VERSIONS:
            return low, high
    raise ValueError("broker does not list ApiVersions in its ApiVersions response")


def _half_close(sock):
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def wait_quiet(recording, quiet_seconds, max_seconds):
    """Waits until no frame has been recorded for `quiet_seconds` (bounded by `max_seconds`)."""
    deadline = time.monotonic() + max_seconds
    last = -1
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        with recording.lock:
            n = len(recording.frames)
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change >= quiet_seconds:
            return
        time.sleep(0.05)
