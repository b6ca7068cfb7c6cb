"""The fault matrix (issue 15): a handover struck at each point by each
fault, for the tap and the vhost-user-blk session, the 1 kHz UDP stream and
the guest's writer running throughout (mfds.scenario.run_fault() says what
each point and fault is, and how each is reached).

For each cell, what must hold: exactly one QEMU runs the guest afterwards
(the source, or the target if it loaded the state), or none where the
guest already ran on a target that is gone (both gone: run, and shown as
such in the table); on the survivor the
guest's network answers and loses nothing once it does, every write the
guest saw complete reads back intact and the writer goes on; the backend is
the original one (the same tap interface and ifindex, held by the survivor,
every queue; the daemon saw one vhost-user connection); the survivor holds
as many fds as the source before the attempt and quits cleanly.  A target
whose load failed holds none of the fds it was sent, and quits cleanly.

The table of the run goes to work/e2e/fault-matrix.md (and is printed by
`python3 tests/e2e/fault_matrix.py`); README.md has a copy.
"""
import json
import time

import pytest

from fault_matrix import CELLS, DEFAULT_DIR, cell_id, render
from mfds.scenario import run_fault, scenario
from mfds.verify import assert_every_write_completed, assert_records_intact, io_summary, tap_info

MATRIX_DIR = DEFAULT_DIR

SCENARIOS = {
    # The tap handover of a 2-queue tap (2 fds: out-of-fds can take one),
    # the disk on a second export (today's path), the writer paused across
    # the attempt as in tap-migrate-fds.
    "tap": lambda: scenario("tap-migrate-fds", queues=2),
    # The tap (1 queue) and the vhost-user-blk session, writes inside the
    # throttled daemon at the switchover.
    "vub": lambda: scenario("vhost-user-blk-migrate-fds"),
}


class KeptFds(AssertionError):
    """A target whose load failed still holds fds it was handed."""


def check_cell(sc, cell, expected, r):
    """Assert what must hold in cell; returns nothing, raises on the first
    thing that does not."""
    kind, point, fault = cell
    queues = sc.queues
    assert r.outcome == expected, (r.outcome, r.target_fate, r.target_error)
    assert "never claimed" not in r.target_log
    if fault == "source-kill":
        assert r.source_exit == -9
    if fault == "target-kill":
        assert r.target_exit == -9
    if r.target_fate == "failed":
        assert r.target_exit == 0, "the failed target did not quit cleanly"
    if fault == "out-of-fds":
        assert "Unable to receive all the file descriptors" in (r.target_error or ""), \
            r.target_error
    if fault == "load-fails":
        assert "Unknown section or instance" in (r.target_error or ""), r.target_error
    # Where the stream was held, the point was reached: the fds had left
    # the source, and had reached the target at load only.
    if point in ("sent", "load") and fault not in ("load-fails", "out-of-fds"):
        assert r.fds_in_stream > 0
        at_point = ["tap0"] * queues if point == "load" else []
        assert r.target_tap_fds_at_point == at_point, r.target_tap_fds_at_point
    if point in ("loaded", "running"):
        assert r.target_tap_fds_at_point == ["tap0"] * queues

    check_survivor(kind, queues, cell, expected, r)
    # A target whose load failed, and stays up, keeps no fd it was handed:
    # none of the tap's, none of the vhost-user-blk session's (connection,
    # backend channel, eventfds).  Last: the survivor's checks above say
    # whether what it kept did harm.
    if r.failed_target_kept is not None:
        if r.failed_target_tap_fds or r.failed_target_kept:
            raise KeptFds(f"the failed target still holds {r.failed_target_fds} fds "
                          f"({r.target_fds_at_start} when it started): "
                          f"{', '.join(r.failed_target_kept)}")


def check_survivor(kind, queues, cell, expected, r):
    fault = cell[2]
    if expected == "none":
        # Nobody runs the guest: the source did not resume by itself.
        assert r.running == [], r.statuses
        assert r.statuses["src"] == "postmigrate", r.statuses
        assert r.source_exit == 0, "the source did not quit cleanly"
        return
    role = "src" if expected == "source" else "dst"
    assert r.running == [role], r.statuses

    # The backend is the original one, held by the survivor, every queue.
    assert r.links_after == r.links_before == {"tap0": r.links_before["tap0"]}
    assert r.survivor_tap_fds == ["tap0"] * queues, r.survivor_tap_fds
    taps = tap_info(r.survivor_network)
    assert len(taps) == queues and all(("handed over" in i) == (role == "dst") for i in taps), taps

    # Network: answers, and loses nothing once it does (nor before the
    # attempt); what the outage lost is counted in the table.
    assert r.replies_after_recovery > 0
    assert r.late_losses == [], r.late_losses
    assert r.early_losses == [], r.early_losses
    assert r.outage_losses_before_full == [], \
        f"lost while the tap's queue ({r.tap_txqlen}) had room: {r.outage_losses_before_full}"
    assert r.guest_alive_after

    # Disk: every write the guest saw complete is intact, it goes on.
    io = io_summary(r)
    if kind == "vub":
        assert_every_write_completed(r)
        assert r.vhost_user_connections == 1, io
    else:
        # Today's path for the disk: the target connected to its own export.
        assert_records_intact(r, io)
        assert r.vhost_user_connections == 2, io
    assert r.writes_after > r.writes_at_recovery, io

    # The survivor holds what the source held before the attempt, and
    # quits cleanly; a source that lived on beside it too.
    assert r.survivor_fds == r.source_fds_before, (r.survivor_fds, r.source_fds_before)
    assert r.survivor_exit == 0, "the survivor did not quit cleanly"
    if expected == "target" and fault != "source-kill":
        assert r.source_exit == 0, "the source did not quit cleanly"


def row(cell, expected, r, result):
    """The cell's line of the table, as a dict (written next to the logs)."""
    out = {"cell": list(cell), "expected": expected, "result": result}
    if r:
        out.update({k: getattr(r, k) for k in (
            "outcome", "running", "migration_status", "target_fate", "target_error", "sent",
            "lost", "records", "records_verified", "io_lost",
            "vhost_user_connections", "source_fds_before", "survivor_fds", "target_fds_at_start",
            "failed_target_fds", "failed_target_tap_fds", "failed_target_kept", "survivor_exit", "source_exit",
            "target_exit", "fds_in_stream", "cancel_reply", "target_fd_kinds_at_start")})
    return out


@pytest.fixture(scope="module", autouse=True)
def matrix_table():
    """Once the cells have run: the table, from the cells' files."""
    yield
    if MATRIX_DIR.exists():
        (MATRIX_DIR.parent / "fault-matrix.md").write_text(render(MATRIX_DIR))


# Product bugs these cells show, cell -> reason (none open): strict, so a
# fix makes the cell fail until its mark goes; only KeptFds counts as the
# expected failure, any other assertion of the cell still fails it.
KNOWN_BUGS = {}


def params():
    for cell in CELLS:
        marks = [pytest.mark.xfail(strict=True, raises=KeptFds, reason=KNOWN_BUGS[cell])] \
            if cell in KNOWN_BUGS else []
        yield pytest.param(cell, marks=marks, id=cell_id(cell))


@pytest.mark.parametrize("cell", params())
def test_fault_matrix(h, cell):
    kind, point, fault = cell
    expected = CELLS[cell]
    sc = SCENARIOS[kind]()
    r, result = None, "failed"
    t0 = time.monotonic()
    try:
        r = run_fault(h, sc, point, fault, after=1.0, io=True)
        check_cell(sc, cell, expected, r)
        result = "XPASS (strict: fails)" if cell in KNOWN_BUGS else "passed"
    except KeptFds as e:
        result = f"{'xfail' if cell in KNOWN_BUGS else 'failed'}: {e}"
        raise
    except AssertionError as e:
        result = f"failed: {str(e).splitlines()[0][:200] if str(e) else 'assertion'}"
        raise
    except Exception as e:
        result = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        raise
    finally:
        MATRIX_DIR.mkdir(parents=True, exist_ok=True)
        line = row(cell, expected, r, result)
        line["seconds"] = round(time.monotonic() - t0, 1)
        (MATRIX_DIR / f"{cell_id(cell)}.json").write_text(json.dumps(line))
        (h.dir / "cell.json").write_text(json.dumps(line))
