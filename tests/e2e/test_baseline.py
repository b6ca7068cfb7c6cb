"""Today's local upgrade (QEMU 10.2.2, no migrate-fds): the target QEMU gets a
new tap and a second vhost-user-blk export, management switches the host side
after the migration.  It must work: the guest stays reachable, every record
the guest wrote reads back intact, QEMU reports a downtime, the target runs
and the source is gone.  The figures themselves are for `make bench`."""
import pytest

from mfds.scenario import WRITER_DEPTH, run, scenario
from mfds.verify import assert_guest_answers_after, xfail_on_known_second_export_defect


# Guest RAM stays in a shared /dev/shm file: x-ignore-shared, or the
# cpr-transfer mode (RAM and fds preserved through a cpr channel).
@pytest.mark.parametrize("multi_queue,cpr", [(False, False), (True, False), (False, True)],
                         ids=["tap", "tap-mq", "tap-cpr-transfer"])
def test_baseline_local_upgrade(h, multi_queue, cpr):
    r = run(h, scenario("baseline-cpr" if cpr else "baseline", queues=2 if multi_queue else 1))

    # Migration: completed, QEMU's own downtime figure, target running, the
    # source quit cleanly.
    assert r.migration["status"] == "completed"
    assert isinstance(r.downtime_ms, int) and r.downtime_ms >= 0
    assert r.target_status == "running"
    assert r.source_exit == 0

    # Network: the replies resumed after the switch (some arrived after the
    # host side moved to the new tap), and the guest answers on the target.
    assert r.sent > 0 and r.received > 0
    assert_guest_answers_after(r, "switched")

    # Disk: intact; the known defect of today's path (completions of writes
    # the backend held at the switchover lost) is reported, not hidden, and
    # any other loss fails.
    xfail_on_known_second_export_defect(r, WRITER_DEPTH)
