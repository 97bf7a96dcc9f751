"""A single node on a machine whose every core is busy with other work (busy loops at the same
priority, two per CPU): start-up succeeds (the embedded consensus node's election and first
write are retried with a warning rather than exiting), the node serves, and in the seconds
after no consensus session expires and the process never exits.
"""

import os
import subprocess
import sys
import time

from test_broker_registration import consume_all, produce

HOGS_PER_CPU = 2
SERVE_SECONDS = 10


def test_single_node_starts_and_serves_beside_a_cpu_hog_on_every_core(broker_factory):
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(HOGS_PER_CPU * (os.cpu_count() or 1))
    ]
    try:
        started = time.monotonic()
        b = broker_factory(shards=2)
        print(f"\nready after {time.monotonic() - started:.1f} s beside {len(hogs)} busy loops")
        produce(b.bootstrap, "busy", [f"v{i}" for i in range(200)])
        assert len(consume_all(b.bootstrap, "busy", 200)) == 200
        deadline = time.monotonic() + SERVE_SECONDS
        while time.monotonic() < deadline:
            assert b.process.poll() is None, f"the broker exited ({b.process.returncode})"
            time.sleep(0.5)
        log = b.log_tail(1_000_000)
        assert "consensus session expired" not in log, "a session expired on a busy machine"
        assert b.process.poll() is None
    finally:
        for h in hogs:
            h.kill()
        for h in hogs:
            h.wait()
