"""SIGKILL safety: an idempotent acks=all producer writes while the broker is killed with
SIGKILL and restarted; every record the broker acknowledged is there afterwards exactly once
and offsets stay dense. (The producer of a round does not outlive its broker here, so the
retry-after-restart deduplication is covered by the producer-state unit tests and the
rebuild from the log, not by this test.)
"""

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CLIENT_TIMEOUT_SECONDS = 60
ROUNDS = 3
RECORDS_PER_ROUND = 3000


def test_acknowledged_records_survive_sigkill(tmp_path):
    from confluent_kafka import Consumer, Producer, TopicPartition

    data = tmp_path / "data"
    acked = []
    for round_no in range(ROUNDS):
        b = harness.start_broker(data, tmp_path / "broker.log")
        p = Producer(
            {
                "bootstrap.servers": b.bootstrap,
                "acks": "all",
                "linger.ms": 2,
                "enable.idempotence": True,
                "message.timeout.ms": 5000,
            }
        )

        def cb(err, msg):
            if err is None:
                acked.append(msg.value())

        for i in range(RECORDS_PER_ROUND):
            p.produce("crash", value=f"r{round_no}-{i}".encode(), partition=0, on_delivery=cb)
            p.poll(0)
            if i == RECORDS_PER_ROUND // 2:
                # The first half is acknowledged; the second half is in flight when the
                # broker dies.
                assert p.flush(CLIENT_TIMEOUT_SECONDS) == 0
            if i == RECORDS_PER_ROUND * 3 // 4:
                p.poll(0.01)
                b.process.send_signal(signal.SIGKILL)
                b.process.wait()
        p.flush(10)
    b = harness.start_broker(data, tmp_path / "broker.log")
    try:
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "unused", "enable.auto.commit": False})
        c.assign([TopicPartition("crash", 0, 0)])
        got, offsets = [], []
        deadline = time.monotonic() + CLIENT_TIMEOUT_SECONDS
        low, high = c.get_watermark_offsets(TopicPartition("crash", 0), timeout=CLIENT_TIMEOUT_SECONDS)
        while len(got) < high and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=1):
                assert m.error() is None
                got.append(m.value())
                offsets.append(m.offset())
        c.close()
        assert offsets == list(range(high)), "offsets are dense after recovery"
        missing = set(acked) - set(got)
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
        duplicated = [v for v in set(acked) if got.count(v) > 1]
        assert not duplicated, f"{len(duplicated)} acknowledged records written twice"
        assert len(acked) >= ROUNDS * RECORDS_PER_ROUND // 2
    finally:
        assert b.stop() == 0, b.log_tail()
