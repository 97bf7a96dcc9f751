"""Black-box tests of the broker's operator-facing output: structured logs (`--log-format
json`, `--log-level` per module) and the generated configuration reference
(`--print-config-reference` equals the committed docs/configuration.md).
"""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

REFERENCE = harness.REPO / "docs" / "configuration.md"
RUN_TIMEOUT_SECONDS = 20


def json_lines(path):
    lines = [l for l in Path(path).read_text().splitlines() if l.strip()]
    assert lines, "the broker logged nothing"
    events = []
    for line in lines:
        event = json.loads(line)  # every line is one JSON object
        assert isinstance(event, dict), line
        for key in ("timestamp", "level", "target", "message"):
            assert key in event, (key, line)
        events.append(event)
    return events


def test_json_logs_one_object_per_line(tmp_path):
    b = harness.start_broker(
        tmp_path / "data", tmp_path / "broker.log", extra_args=["--log-format", "json"]
    )
    assert b.stop() == 0
    events = json_lines(b.log_path)
    messages = [e["message"] for e in events]
    assert "corebus is ready" in messages, messages
    assert "corebus stopped cleanly" in messages, messages
    assert {e["level"] for e in events} <= {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
    assert all(e["target"].startswith("corebus") for e in events), events


def test_levels_per_module(tmp_path):
    # Warnings everywhere, info from the runtime module only.
    b = harness.start_broker(
        tmp_path / "data",
        tmp_path / "broker.log",
        extra_args=[
            "--log-format", "json",
            "--log-level", "warn,corebus_broker::shard::runtime=info",
        ],
    )
    assert b.stop() == 0
    events = json_lines(b.log_path)
    infos = [e for e in events if e["level"] == "INFO"]
    assert infos, events
    assert all(e["target"] == "corebus_broker::shard::runtime" for e in infos), infos


def test_bad_log_levels_are_refused(tmp_path):
    p = subprocess.run(
        [str(harness.corebus_binary()), "--data-dir", str(tmp_path / "d"), "--log-level", "info,corebus=notalevel"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert p.returncode == 2, p.stderr
    assert "log levels" in p.stderr, p.stderr


def test_committed_configuration_reference_is_current():
    p = subprocess.run(
        [str(harness.corebus_binary()), "--print-config-reference"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == REFERENCE.read_text(), (
        "docs/configuration.md is stale: regenerate it with "
        "`cargo run -q --bin corebus -- --print-config-reference > docs/configuration.md`"
    )
    for name in ("--metrics-listen", "--log-format", "log.retention.ms", "retention.ms"):
        assert f"| `{name}` |" in p.stdout, name
