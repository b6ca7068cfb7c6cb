"""Fixtures of the end-to-end tests: one Harness (namespace, run dir, shared
RAM file, image) per test, torn down even when the test fails, a per-test
timeout, and a session-wide check that nothing of ours is left behind."""
import os
import signal
from pathlib import Path

import pytest

from mfds import harness, paths  # the repository's root is on sys.path: pytest.ini
from mfds.verify import KnownDefect


# A test that runs longer than this (seconds, times MFDS_TIMEOUT_SCALE) fails,
# instead of hanging until CI gives up: the slowest test takes 3-4 minutes
# on a 2-core machine under TCG.  @pytest.mark.timeout_s(N) sets a test's
# own; MFDS_TEST_TIMEOUT=0 turns it off (e.g. to debug with --pdb).
TEST_TIMEOUT_DEFAULT = 900


def _test_timeout_env():
    raw = os.environ.get("MFDS_TEST_TIMEOUT", "").strip()
    if not raw:
        return float(TEST_TIMEOUT_DEFAULT)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise pytest.UsageError(f"MFDS_TEST_TIMEOUT={raw!r}: must be a number of seconds "
                                "(0: no per-test timeout)")
    return value


class TestTimeoutExceeded(BaseException):
    """A test ran past its timeout.  A BaseException (as KeyboardInterrupt):
    no `except Exception` or contextlib.suppress(Exception) in the harness
    swallows it, and the Harness's teardown still runs."""
    __test__ = False  # not a test class


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout_s(seconds): this test's own per-test timeout, instead of "
        "MFDS_TEST_TIMEOUT (default 900); both are scaled by MFDS_TIMEOUT_SCALE")
    _test_timeout_env()  # a bad value is an error before anything runs
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


@pytest.fixture(autouse=True)
def per_test_timeout(request):
    """Arm SIGALRM for the test's timeout: its handler raises
    TestTimeoutExceeded in the main thread, i.e. in the test body (h
    requests this fixture, so it is set up before the Harness and torn down
    after it: the Harness's teardown runs as for any failure).  The timer
    is disarmed as soon as the test body returns (pytest_runtest_call), so
    no teardown is ever interrupted; the previous handler comes back here."""
    marker = request.node.get_closest_marker("timeout_s")
    if marker:
        seconds, var = float(marker.args[0]), "@pytest.mark.timeout_s"
    else:
        seconds, var = _test_timeout_env(), "MFDS_TEST_TIMEOUT"
    seconds = paths.scaled(seconds)
    if not seconds:
        yield
        return

    def expired(signum, frame):
        raise TestTimeoutExceeded(f"test exceeded its {seconds:g} s timeout ({var}"
                                  + (f", MFDS_TIMEOUT_SCALE={paths.TIMEOUT_SCALE:g}"
                                     if paths.TIMEOUT_SCALE != 1 else "") + ")")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Disarm the per-test timer once the test body is done: the Harness's
    teardown (stopping processes, deleting the namespace) must never be cut
    short by it."""
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """A KnownDefect (a known bug of QEMU 10.2.2 itself, raised by mfds)
    out of a test body is an expected failure, pytest.xfail with its text
    (make check lists and counts those apart)."""
    outcome = yield
    if outcome.excinfo and isinstance(outcome.excinfo[1], KnownDefect):
        pytest.xfail(str(outcome.excinfo[1]))


@pytest.fixture
def h(request, per_test_timeout):
    # MFDS_LOGS: another place for them (scripts/check-asan.sh)
    logs = Path(os.environ.get("MFDS_LOGS", paths.ROOT / "work/e2e"))
    logs = logs / request.node.name.replace("/", "_")
    with harness.Harness(request.node.name, logs=logs) as h:
        yield h
