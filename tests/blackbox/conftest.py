"""pytest fixtures for the black-box tests: a real corebus on a free loopback port with a
temporary data directory, and the pinned clients (kcat, confluent-kafka, kafka-python,
kafkajs) to drive it with. Tests reach the broker only over TCP.

    broker           one fresh broker per test (its log is printed when the test fails)
    broker_factory   start(data_dir=None, **kwargs) -> Broker, for several brokers or a
                     restart on the same data dir; stops everything it started
    kcat             path of Debian's kcat (librdkafka 2.0.2)
    node_env         environment under which `node` finds the pinned kafkajs
"""

import sys

import pytest

import harness


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keeps each phase's report on the test item so fixtures can tell, at teardown, whether
    # the test failed (and then show the broker's log).
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _failed(request):
    report = getattr(request.node, "report_call", None)
    return report is not None and report.failed


@pytest.fixture
def broker_factory(request, tmp_path):
    started = []

    def start(data_dir=None, **kwargs):
        n = len(started)
        data_dir = data_dir or tmp_path / f"data-{n}"
        log_path = tmp_path / f"broker-{n}.log"
        b = harness.start_broker(data_dir, log_path, **kwargs)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        if _failed(request):
            sys.stderr.write(
                f"--- broker on {b.bootstrap} (exit code {code}), {b.log_path}:\n{b.log_tail()}\n"
            )


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.fixture(scope="session")
def kcat():
    return harness.kcat_binary()


@pytest.fixture(scope="session")
def node_env():
    return harness.node_env()
