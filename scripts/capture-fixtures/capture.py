"""Captures golden wire fixtures: drives real Kafka clients through the recording proxy in
front of librdkafka's mock cluster and writes what they sent and received under
wire/tests/fixtures/<client>/.

Owns: the mock cluster's lifetime (one fresh cluster per client), which frames are kept
(a few distinct exchanges per api key and version, so the fixtures stay small) and the
fixture layout (one .bin per frame body plus index.json).

Never: edits a frame; a kept request is always stored with the response it got.

Usage: capture.py OUT_DIR CLIENT [CLIENT...]   (clients: kcat confluent-kafka kafka-python kafkajs)
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import confluent_kafka

from api_names import API_NAMES
from recording_proxy import RecordingProxy, Recording

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_PYTHON = REPO / ".test-deps" / "venv" / "bin" / "python"
NODE_DIR = REPO / ".test-deps" / "node"

# Distinct request bodies kept per (api key, api version): enough to show the variants a client
# sends (first join vs rejoin, empty vs full fetch) without storing every heartbeat.
MAX_EXCHANGES_PER_API_VERSION = 3
# Produce gets more: the drivers send one batch per compression codec, and each codec's record
# set is worth keeping.
MAX_PRODUCE_EXCHANGES_PER_API_VERSION = 8
API_KEY_PRODUCE = 0
# A driver that runs longer than this is stuck (a group that never stabilises, say).
DRIVER_TIMEOUT_SECONDS = 120

TOPIC = "fixtures"
GROUP = "fixtures-group"

DRIVERS = {
    "kcat": ["bash", str(HERE / "drivers" / "kcat.sh")],
    "confluent-kafka": [str(VENV_PYTHON), str(HERE / "drivers" / "confluent_kafka_driver.py")],
    "kafka-python": [str(VENV_PYTHON), str(HERE / "drivers" / "kafka_python_driver.py")],
    "kafkajs": ["node", str(HERE / "drivers" / "kafkajs_driver.js")],
}


def start_mock_cluster():
    """Returns a handle that keeps a one-broker mock cluster alive, and the broker's address."""
    handle = confluent_kafka.Producer(
        {"test.mock.num.brokers": 1, "bootstrap.servers": "ignored:1", "log_level": 3}
    )
    brokers = list(handle.list_topics(timeout=10).brokers.values())
    if len(brokers) != 1:
        raise RuntimeError(f"expected one mock broker, got {brokers}")
    return handle, brokers[0].host, brokers[0].port


def masked(frame):
    """The request body without its correlation id, to recognise repeats."""
    return frame.body[:4] + frame.body[8:]


def select(frames):
    """Keeps the first few distinct requests per (api key, version) and their responses."""
    kept_requests = {}
    seen = set()
    keep = set()
    for f in frames:
        if f.direction != "request":
            continue
        api = (f.api_key, f.api_version)
        key = (api, masked(f))
        cap = (
            MAX_PRODUCE_EXCHANGES_PER_API_VERSION
            if f.api_key == API_KEY_PRODUCE
            else MAX_EXCHANGES_PER_API_VERSION
        )
        if key in seen or kept_requests.get(api, 0) >= cap:
            continue
        seen.add(key)
        kept_requests[api] = kept_requests.get(api, 0) + 1
        keep.add((f.connection, f.correlation_id))
    return [f for f in frames if (f.connection, f.correlation_id) in keep]


def write_fixtures(out, client, versions, frames):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index = []
    for seq, f in enumerate(frames):
        name = f"{seq:03d}-{f.direction}-{API_NAMES.get(f.api_key, f'Api{f.api_key}')}-v{f.api_version}.bin"
        (out / name).write_bytes(f.body)
        entry = {
            "file": name,
            "direction": f.direction,
            "api_key": f.api_key,
            "api_name": API_NAMES.get(f.api_key),
            "api_version": f.api_version,
            "correlation_id": f.correlation_id,
            "connection": f.connection,
        }
        if f.client_id is not None:
            entry["client_id"] = f.client_id
        if f.note:
            entry["note"] = f.note
        index.append(entry)
    meta = {"client": client, "versions": versions, "frames": index}
    (out / "index.json").write_text(json.dumps(meta, indent=1) + "\n")


def capture(client, out_root):
    handle, host, port = start_mock_cluster()
    recording = Recording()
    proxy = RecordingProxy(host, port, recording)
    env = dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))
    started = time.monotonic()
    result = subprocess.run(
        [*DRIVERS[client], proxy.bootstrap, TOPIC, GROUP],
        env=env,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_SECONDS,
    )
    # Let in-flight responses (a LeaveGroup answer, say) reach the recording.
    time.sleep(0.5)
    proxy.close()
    del handle
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"{client} driver failed with exit code {result.returncode}")
    if proxy.errors:
        raise RuntimeError(f"{client}: proxy errors: {proxy.errors}")
    versions = json.loads(result.stdout.strip().splitlines()[-1])
    versions["mock cluster (librdkafka in confluent-kafka)"] = confluent_kafka.libversion()[0]
    with recording.lock:
        frames = list(recording.frames)
    kept = select(frames)
    write_fixtures(out_root / client, client, versions, kept)
    apis = sorted({API_NAMES.get(f.api_key, str(f.api_key)) for f in kept})
    size = sum(len(f.body) for f in kept)
    print(
        f"{client}: {len(frames)} frames seen, {len(kept)} kept ({size} bytes) in "
        f"{time.monotonic() - started:.1f}s; apis: {', '.join(apis)}"
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_root = Path(sys.argv[1])
    for client in sys.argv[2:]:
        if client not in DRIVERS:
            sys.exit(f"unknown client {client}; known: {', '.join(DRIVERS)}")
        capture(client, out_root)


if __name__ == "__main__":
    main()
