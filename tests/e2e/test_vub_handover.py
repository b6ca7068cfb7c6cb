"""The vhost-user-blk handover (-chardev socket,...,migrate-fds=on and
-device vhost-user-blk-pci,...,migrate-fds=on with the migrate-fds
migration parameter): the target QEMU takes over the source's live
connection to qemu-storage-daemon instead of connecting to a second export,
so the daemon sees one vhost-user connection for the whole life of the VM,
however many QEMUs it runs on.  The daemon is throttled, so that requests
are inside it at the switchover (the case in which today's path loses
completions): every write the guest submitted must complete and read back
intact.
The tap is handed over too.  A target killed after it took the connection
leaves the source serving the disk on it; with the device property off on
the source, the disk takes today's path (a second export), whatever the
target asks for.  Behaviour only: the timings are for `make bench` (the
longest I/O stall is reported, not judged)."""
import json
import statistics
import time

import pytest

from mfds import harness as hn
from mfds.paths import scaled
from mfds.result import RunResult
from mfds.scenario import (boot_source, guest_writes, run, run_failed_target, scenario,
                           start_writer, stop_writer, stream_figures, upgrade)
from mfds.verify import (assert_every_write_completed, assert_guest_answers_after,
                         check_second_export_disk, io_summary, make_downscript, tap_info)


def report_io(h, r, **extra):
    """The disk's figures, the longest I/O stall among them: printed (the
    captured output of a failing test) and written to io.json among the
    test's logs (work/e2e/<test>/), which stay whatever the outcome.
    extra: more figures for io.json.  r: a RunResult or a FaultResult
    (which has no downtime_ms: null there)."""
    print(io_summary(r))
    keys = ("records", "records_verified", "io_lost", "io_errors", "io_stall_ms", "io_stalls",
            "downtime_ms", "vhost_user_connections")
    (h.dir / "io.json").write_text(json.dumps({**{k: getattr(r, k, None) for k in keys}, **extra}))


def test_vub_handover_local_upgrade(h):
    r = run(h, scenario("vhost-user-blk-migrate-fds"))
    report_io(h, r)
    io = io_summary(r)

    # Migration: completed, QEMU's own downtime figure, target running, the
    # source quit cleanly.
    assert r.migration["status"] == "completed"
    assert isinstance(r.downtime_ms, int) and r.downtime_ms >= 0
    assert r.target_status == "running"
    assert r.source_exit == 0

    # The tap, handed over as in the tap tests: same interface, the target
    # holds it, and the guest's network loses nothing.
    assert r.links_after == r.links_before
    assert r.target_tap_fds == ["tap0"]
    assert tap_info(r.target_network) == ["ifname=tap0,downscript=no,migrate-fds=on (handed over)"]
    lost = [seq for seq, _, tr in r.arrivals if tr is None]
    assert lost == [], f"{r.lost} of {r.sent} datagrams lost ({r.host_drops} by the host's socket): {lost}"
    assert_guest_answers_after(r, "source_gone")

    # The disk: every write completed and intact, the writer went on on the
    # target, and the daemon saw one connection, the source's, which the
    # target took over (a target that connected would be a second).
    assert_every_write_completed(r)
    assert r.writes_after > r.writes_at_switch, io
    assert r.vhost_user_connections == 1, io


def test_vub_handover_cpr_transfer(h):
    """The local upgrade of test_vub_handover_local_upgrade in cpr-transfer
    mode (guest RAM passed on the cpr channel, migrate-fds set on both
    sides, the session and the tap on the main unix channel): every write
    completes intact with the daemon throttled, the daemon sees one
    connection, no datagram is lost, and the source leaves the tap alone."""
    sc = scenario("vhost-user-blk-migrate-fds-cpr")
    sc.network.downscript, ran = make_downscript(h, "src")
    r = run(h, sc)
    report_io(h, r)
    io = io_summary(r)

    assert r.migration["status"] == "completed"
    assert r.target_status == "running"
    assert r.source_exit == 0
    assert not ran.exists(), f"the source ran its downscript: {ran.read_text()!r}"
    assert r.target_tap_fds == ["tap0"]
    lost = [seq for seq, _, tr in r.arrivals if tr is None]
    assert lost == [], f"{r.lost} of {r.sent} datagrams lost ({r.host_drops} by the host's socket): {lost}"
    assert_every_write_completed(r)
    assert r.writes_after > r.writes_at_switch, io
    assert r.vhost_user_connections == 1, io


def wait_writes(vm, than, timeout=10):
    """The guest's completed writes on vm once they exceed than; None if
    they did not within timeout seconds (scaled: MFDS_TIMEOUT_SCALE)."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        n = guest_writes(vm)
        if n > than:
            return n
        time.sleep(0.05)
    return None


HOPS = 20


def test_vub_handover_repeated_upgrades(h):
    """20 local upgrades in a row, each new QEMU the source of the next (its
    predecessor quits cleanly), the guest's writer and the 1 kHz UDP stream
    running through all of them: each QEMU completes writes of its own, the
    daemon sees the one connection of the first QEMU from start to end,
    every write completes intact, and not one datagram is lost.  A handover must leave
    nothing behind that adds up: every target holds exactly as many fds as
    the first (the socket, its kick and call eventfds, the tap's queue...;
    one leaked or duplicated per hop shows at once) and the 20th one's RSS
    stays near the first targets'."""
    sc = scenario("vhost-user-blk-migrate-fds")
    r = RunResult()
    sc.setup(h)
    vm = boot_source(h, sc, r)
    start_writer(vm)
    stream = hn.Stream(h)
    stream.wait_ready()
    # usage[0] is the source, which booted the guest; usage[i] the i-th
    # target, taken the same way for each: once it runs alone and has
    # completed writes of its own.
    usage = [hn.proc_usage(vm.pid())]
    writes = [guest_writes(vm)]
    for hop in range(1, HOPS + 1):
        hop_r = RunResult()
        vm = upgrade(h, sc, vm, hop_r, role=f"dst{hop}")
        assert hop_r.migration["status"] == "completed", f"hop {hop}"
        assert hop_r.target_status == "running", f"hop {hop}"
        assert hop_r.source_exit == 0, f"hop {hop}: the source did not quit cleanly"
        assert h.qsd.connections() == 1, f"hop {hop}"
        n = wait_writes(vm, guest_writes(vm))
        assert n is not None, f"hop {hop}: no write completed on dst{hop}"
        writes.append(n)
        usage.append(hn.proc_usage(vm.pid()))
    s = stream_figures(stream.stop())
    stop_writer(h, vm, r)
    r.vhost_user_connections = h.qsd.connections()
    # The series, for the log (and work/e2e/<test>/io.json).
    report_io(h, r, writes=writes, usage=usage, datagrams_sent=s.sent,
              datagrams_lost=s.lost)
    print("fds:", [u["fds"] for u in usage])
    print("rss_kb:", [u["rss_kb"] for u in usage])

    assert vm.agent.run("echo alive").strip() == "alive"
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1
    lost = [seq for seq, _, tr in s.arrivals if tr is None]
    assert s.sent > 0
    assert lost == [], f"{s.lost} of {s.sent} datagrams lost over {HOPS} upgrades ({s.host_drops} by the host's socket): {lost}"
    fds = [u["fds"] for u in usage]
    assert fds[1:] == [fds[1]] * HOPS, fds
    # RSS: as in test_tap_handover_repeated_upgrades (20% over the median
    # of the first three targets: well clear of the jitter from one target
    # to the next, crossed within the 20 by ~0.6 MB carried per upgrade).
    base = statistics.median(u["rss_kb"] for u in usage[1:4])
    assert usage[-1]["rss_kb"] <= base * 1.2, [u["rss_kb"] for u in usage]


def test_vub_handover_target_killed(h):
    """The handover completes into a paused (-S) target, which takes the
    connection and the tap and is then SIGKILLed; management does `cont` on
    the source.  The source serves the disk on the connection it never
    gave up: the writer completes writes again at once, every write
    completes intact (those the daemon held while the source was paused
    too), and the daemon never saw a reconnect."""
    r = run_failed_target(h, scenario("vhost-user-blk-migrate-fds"), "killed", after=2.0, io=True)
    report_io(h, r)
    io = io_summary(r)

    assert r.migration_status == "completed"
    assert r.cont_needed
    assert r.target_tap_fds == ["tap0"]
    assert "never claimed" not in r.target_log

    assert r.writes_after > r.writes_at_recovery, io
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1, io

    # The network came back on the source as well.
    assert r.links_after == r.links_before
    assert r.source_tap_fds_after == ["tap0"]
    assert r.replies_after_recovery > 0
    assert r.guest_alive_after
    assert r.source_exit == 0, "the source did not quit cleanly"


# off: the migrate-fds parameter on, the vhost-user-blk property off on both
# sides (the tap handed over): the device migrates as in QEMU 10.2.2.
# target-only: the property on the target only: no handover comes, so the
# target connects at load, as today.  Either way to a second export, with an
# unthrottled daemon as in the baseline.  Both run code of the series (the
# tap handover; the target's wait for a session that never comes): a lost
# or failed write fails, even if it looks like today's known defect.
@pytest.mark.parametrize("name", ["tap-migrate-fds", "vhost-user-blk-target-only"],
                         ids=["off", "target-only"])
def test_vub_property_off_today_path(h, name):
    r = run(h, scenario(name))

    assert r.migration["status"] == "completed"
    assert r.target_status == "running"
    assert r.source_exit == 0
    assert r.target_tap_fds == ["tap0"]
    assert_guest_answers_after(r, "source_gone")

    # Disk: today's path (two connections), intact, every write completed.
    check_second_export_disk(r)


def test_vub_handover_backend_channel(h):
    """After the upgrade, the backend's own requests reach the new QEMU: the
    daemon announces a resize of the disk on the backend channel that was
    handed over (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), the new QEMU reads
    the config on the connection it took over and interrupts the guest,
    which sees the new size; and still one connection."""
    sc = scenario("vhost-user-blk-migrate-fds")
    sc.setup(h)
    src = boot_source(h, sc, RunResult())
    before = int(src.agent.run("cat /sys/block/vda/size"))
    r = RunResult()
    dst = upgrade(h, sc, src, r)
    assert r.migration["status"] == "completed"
    grown = before + (64 << 20) // 512
    h.qsd.mon.cmd("block_resize", **{"node-name": h.qsd.node}, size=grown * 512)
    deadline = time.monotonic() + scaled(10)
    size = before
    while size != grown and time.monotonic() < deadline:
        time.sleep(0.1)
        size = int(dst.agent.run("cat /sys/block/vda/size"))
    assert size == grown, f"guest sees {size} sectors, the daemon has {grown}"
    assert h.qsd.connections() == 1


def test_vub_handover_inflight_backend(h):
    """The same local upgrade with contrib/vhost-user-blk, a backend that
    tracks its requests in an inflight region: the region is handed over
    with the session (the target has negotiated F_INFLIGHT_SHMFD without
    asking), every write completes intact, and the backend, which exits
    when its one connection closes, is still serving at the end."""
    r = run(h, scenario("vhost-user-blk-migrate-fds-contrib"))
    report_io(h, r)
    assert r.migration["status"] == "completed"
    assert r.target_status == "running"
    assert "VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD" in r.target_vhost_protocol
    assert_every_write_completed(r)
    assert r.writes_after > r.writes_at_switch, io_summary(r)
    assert r.vhost_user_connections == 1
