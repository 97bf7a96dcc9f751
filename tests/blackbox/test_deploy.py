"""Runs scripts/validate-deploy: hadolint on deploy/Dockerfile, kubernetes-validate on the
manifests, systemd-analyze verify on the unit, and the seccomp profile's JSON and io_uring
rules. No container engine or cluster runs here: this checks the files, not that they run.

Also checks that each validator really rejects a broken file, so a green run means something.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SCRIPT = harness.REPO / "scripts" / "validate-deploy"
VALIDATE_TIMEOUT_SECONDS = 120
# validate-deploy's exit code when a validator is not installed.
MISSING_VALIDATOR = 3


def validate(repo, env_extra=None):
    env = {**__import__("os").environ, "COREBUS_BIN": str(harness.corebus_binary())}
    env["VALIDATE_VENV"] = str(harness.TEST_DEPS / "venv")
    env.update(env_extra or {})
    return subprocess.run(
        [str(repo / "scripts" / "validate-deploy")],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_SECONDS,
        env=env,
    )


def test_deploy_files_validate():
    p = validate(harness.REPO)
    if p.returncode == MISSING_VALIDATOR:
        pytest.skip(f"a validator is not installed: {p.stdout.strip()}")
    assert p.returncode == 0, p.stdout + p.stderr
    for check in ("hadolint", "kubernetes-validate", "systemd-analyze verify", "seccomp allows io_uring"):
        assert f"ok {check}" in p.stdout, p.stdout


@pytest.fixture
def copy_of_repo(tmp_path):
    """A copy of scripts/ and deploy/ to break on purpose."""
    for d in ("scripts", "deploy"):
        shutil.copytree(harness.REPO / d, tmp_path / d)
    return tmp_path


def test_broken_files_are_caught(copy_of_repo):
    repo = copy_of_repo
    (repo / "deploy" / "Dockerfile").write_text("FROM debian\nRUN apt-get install curl\n")
    sts = repo / "deploy" / "kubernetes" / "statefulset.yaml"
    sts.write_text(sts.read_text().replace("replicas: 3", 'replicas: "three"'))
    unit = repo / "deploy" / "systemd" / "corebus.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    seccomp = repo / "deploy" / "seccomp" / "corebus.json"
    seccomp.write_text(seccomp.read_text().replace('"io_uring_enter",', ""))
    p = validate(repo)
    if p.returncode == MISSING_VALIDATOR:
        pytest.skip(f"a validator is not installed: {p.stdout.strip()}")
    assert p.returncode == 1, p.stdout + p.stderr
    for check in ("hadolint", "kubernetes-validate", "systemd-analyze verify", "seccomp allows io_uring"):
        assert f"FAILED {check}" in p.stdout, p.stdout
