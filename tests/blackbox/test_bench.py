"""corebus-bench, black box: the real load generator against the real corebus binary and
against its own acknowledge-only sink, each for a few seconds, checked through result.json
and report.html.

The bench binary sits next to corebus in the same target directory (derived from
COREBUS_BIN), as `cargo build --workspace` leaves them.
"""

import json
import subprocess

import harness

# Each run: 1 s warm-up + 3 s measured + drain; generous for a debug build on a busy machine.
BENCH_TIMEOUT_SECONDS = 60

# Keyed, compressed, two producers and two consumers over four partitions: the paths a
# real workload takes, small enough for a debug broker.
WORKLOAD = """
name = "blackbox"
topics = 1
partitions_per_topic = 4
message_size = 200
payload = "compressible"
keys = "zipf"
key_space = 100
producers_per_topic = 2
consumers_per_topic = {consumers}
rate = 1000
acks = "{acks}"
compression = "lz4"
batch_bytes = 16384
linger = "2ms"
duration = "3s"
warmup = "1s"
drain_timeout = "20s"
"""


def bench_binary():
    path = harness.corebus_binary().parent / "corebus-bench"
    if not path.is_file():
        raise harness.HarnessError(f"corebus-bench not found at {path}: run `cargo build`")
    return path


def run_bench(bootstrap, tmp_path, consumers, acks="all"):
    workload = tmp_path / "workload.toml"
    workload.write_text(WORKLOAD.format(consumers=consumers, acks=acks))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            str(bench_binary()),
            "run",
            "--brokers",
            bootstrap,
            "--workload",
            str(workload),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "sent/s" in proc.stdout, proc.stdout  # the live lines were printed
    result = json.loads((out / "result.json").read_text())
    report = (out / "report.html").read_text()
    return result, report


def check_latencies(latency):
    assert latency["count"] > 0, latency
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"], latency
    ordered = [latency[k] for k in ("p50", "p75", "p90", "p95", "p99", "p99.9", "p99.99", "max")]
    assert ordered == sorted(ordered), latency


def check_report(report):
    assert report.startswith("<!DOCTYPE html>")
    # Throughput, two latency-over-time plots and the distribution, all inline SVG.
    assert report.count("<svg") == 4, report[:2000]
    assert report.count('class="series"') >= 6
    assert "<script" not in report and "http://" not in report.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_run_against_corebus(broker, tmp_path):
    result, report = run_bench(broker.bootstrap, tmp_path, consumers=2)
    assert result["produced"] > 0
    assert result["consumed"] == result["produced"], result
    assert result["missing"] == 0 and not result["mismatch"]
    assert result["errors"] == 0, result["error_samples"]
    assert result["foreign_records"] == 0
    # Every record handed to a producer was acknowledged (a debug broker may stall for a
    # second under acks=all, so the measured rate is not pinned to the offer here).
    assert result["produced"] == result["sent"], result
    assert result["throughput"]["produce_msgs_per_s"] > 0
    assert result["throughput"]["produce_mb_per_s"] > 0
    check_latencies(result["publish_latency_ms"])
    check_latencies(result["end_to_end_latency_ms"])
    assert result["coordinated_omission_corrected"] is True
    phases = {p["phase"] for p in result["series"]}
    assert {"warmup", "measure"} <= phases, phases
    check_report(report)


def test_run_against_sink(tmp_path):
    sink = harness.start_broker(
        tmp_path / "sink-data",
        tmp_path / "sink.log",
        command=[str(bench_binary()), "sink", "--listen", "127.0.0.1:{port}"],
    )
    try:
        result, report = run_bench(sink.bootstrap, tmp_path, consumers=0, acks="1")
    finally:
        sink.stop()
    assert result["produced"] == result["sent"] > 0, result
    assert result["errors"] == 0, result["error_samples"]
    # The sink stores nothing and no consumer ran: nothing to compare, nothing missing.
    assert result["consumed"] == 0 and result["missing"] == 0 and not result["mismatch"]
    check_latencies(result["publish_latency_ms"])
    assert result["end_to_end_latency_ms"]["count"] == 0
    assert report.count("<svg") == 4
