"""Fixtures of the end-to-end tests: one Harness (namespace, run dir, shared
RAM file, image) per test, torn down even when the test fails, and a
session-wide check that nothing of ours is left behind."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mfds import harness, paths  # noqa: E402


def pytest_configure(config):
    # Nothing here may skip: a missing host capability fails loudly instead.
    missing = paths.missing()
    if missing:
        raise pytest.UsageError("e2e: missing " + ", ".join(missing) +
                                " (run make build and bash scripts/guest.sh)")
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        raise pytest.UsageError("e2e: needs root and /dev/net/tun (taps in network namespaces)")


@pytest.fixture(scope="session", autouse=True)
def no_leftovers():
    """After all tests: none of the namespaces, processes, /dev/shm files
    and run dirs of this session's harnesses remains (others' are not ours
    to judge: a bench may be running beside the tests)."""
    yield
    after = harness.leftovers()
    assert not after, f"tests left behind: {after}"


@pytest.fixture
def h(request):
    # MFDS_LOGS: another place for them (scripts/check-asan.sh)
    logs = Path(os.environ.get("MFDS_LOGS", paths.ROOT / "work/e2e"))
    logs = logs / request.node.name.replace("/", "_")
    with harness.Harness(request.node.name, logs=logs) as h:
        yield h
