"""Between QEMU 10.2.2 and the series, with a real guest, its tap and its
vhost-user-blk disk: the first upgrade of a VM that runs on 10.2.2 onto
the series (configured for migrate-fds from the start, as management
would start every new QEMU), and the way back to 10.2.2.  10.2.2 has no
migrate-fds parameter, so neither migration can hand anything over: each
must be 10.2.2's own migration, the series' side opening its backends as
today.  The qtests check the stream of a plain guest both ways
(tests/qtests.list); these add the devices the series changes.

The hop that involves 10.2.2 takes today's path for the disk (a second
export) with the guest's writer paused across it (SecondExport's
quiesced: the known defect of 10.2.2's path is not what these are about);
any lost or failed write fails."""
import time

from mfds import harness as hn
from mfds.result import RunResult
from mfds.scenario import boot_source, guest_writes, run, scenario, start_writer, stop_writer, \
    stream_figures, upgrade
from mfds.verify import (assert_every_write_completed, assert_guest_answers_after,
                         check_second_export_disk, io_summary, tap_info)
from test_vub_handover import wait_writes


def test_upgrade_from_10_2_2_then_hand_over(h):
    """The VM boots on QEMU 10.2.2 (tap0, the daemon's export exp0).  Its
    first upgrade is onto the series, whose tap and disk have
    migrate-fds=on: they wait for fds that a 10.2.2 source cannot send,
    then open tap1 and connect to a second export (FallbackOpen's and the
    daemon's checks).  The next upgrade, series to series, hands both
    over: the same tap1 with the same ifindex, no third connection at the
    daemon, and not one datagram sent after the first upgrade is lost.
    Every write completes intact, the writer running through the second
    upgrade."""
    sc = scenario("upgrade-from-10.2.2")
    r = RunResult(scenario=sc.name)
    sc.setup(h)
    src = boot_source(h, sc, r)
    start_writer(src)
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(1)

    r.links_before = h.ns.links()
    dst = upgrade(h, sc, src, r)
    assert r.migration["status"] == "completed"
    assert r.target_status == "running"
    assert r.source_exit == 0, "QEMU 10.2.2 did not quit cleanly"
    r.links_after = h.ns.links()
    r.target_tap_fds = hn.tap_fds(dst.pid())
    r.target_network = dst.hmp("info network")
    sc.check(r)
    assert h.qsd.connections() == 2, "the series' disk did not connect to its export"
    assert wait_writes(dst, guest_writes(dst)) is not None, "no write completed after the upgrade"

    nxt = scenario("vhost-user-blk-migrate-fds")
    r2 = RunResult(scenario=nxt.name)
    dst2 = upgrade(h, nxt, dst, r2, role="dst2")
    assert r2.migration["status"] == "completed"
    assert r2.target_status == "running"
    assert r2.source_exit == 0, "the series' first QEMU did not quit cleanly"
    assert hn.tap_fds(dst2.pid()) == ["tap1"]
    assert tap_info(dst2.hmp("info network")) == \
        ["ifname=tap1,downscript=no,migrate-fds=on (handed over)"]
    assert h.ns.links() == r.links_after, "the tap was not kept"
    assert h.qsd.connections() == 2, "the session was not handed over"

    s = stream_figures(stream.stop())
    stop_writer(h, dst2, r)
    r.vhost_user_connections = h.qsd.connections()
    msg = io_summary(r)
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 2, msg
    assert h.qsd.panics() == [], msg
    late = [seq for seq, sent, got in s.arrivals if got is None and sent > r.t["source_gone"]]
    assert s.sent > 0
    assert late == [], f"datagrams sent after the first upgrade lost ({s.host_drops} by the host's socket): {late[:50]}"
    assert dst2.agent.run("echo alive").strip() == "alive"


def test_downgrade_to_10_2_2(h):
    """The VM runs on the series with migrate-fds=on on its tap and disk,
    and goes back to QEMU 10.2.2 (a migration without the parameter, to a
    target with tap1 and a second export): the source hands nothing over,
    10.2.2 loads the stream and runs the VM on its own tap and connection,
    and the series' QEMU quits cleanly."""
    r = run(h, scenario("downgrade-to-10.2.2"))

    assert r.migration["status"] == "completed"
    assert r.target_status == "running"
    assert r.source_exit == 0
    assert r.target_tap_fds == ["tap1"]
    assert tap_info(r.target_network) == ["ifname=tap1,script=no,downscript=no"]
    assert_guest_answers_after(r, "source_gone")
    check_second_export_disk(r)
