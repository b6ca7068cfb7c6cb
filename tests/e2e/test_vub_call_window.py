"""Completions in the switchover window of a vhost-user-blk handover (issue
#12).

The backend keeps running through a handover.  What it completes between the
source's stop and the target's VHOST_USER_SET_VRING_CALL it signals on the
source's call eventfd, and the guest never hears of it from there.
libvhost-user (and so qemu-storage-daemon) writes every new call fd once,
which happens to cover that; the vhost-user spec does not ask for it.  The
target therefore notifies each queue once when it takes the vrings over
(hw/block/vhost-user-blk.c, after vhost_dev_start()).

Here the backend is tests/e2e/backends/vub-late-completion.c: it installs a
new call fd without signalling it, and completes every request DELAY_MS
after it took it from the ring.  In the first two handovers:
  - the backend holds its completions back for QUIET_S before the
    migration (a storage hiccup), so that the guest has handled every
    earlier completion and waits when the VM stops: a guest stopped in the
    middle of its completion handler, or with an interrupt pending, picks
    up the window's completions by itself once it runs again, which would
    hide a lost notification in some runs;
  - the backend does the held requests as soon as the source has stopped,
    and the target, started with -S, gets `cont` PAUSED_S after the
    migration completed, as libvirt drives a migration (the target runs at
    its Finish step).
So every request inside the backend at the switchover completes inside the
window, signalled to the old QEMU only, and none is left to signal the new
one.  Without the target's own notification the guest then waits for good
for its 32 writes: the disk stalls, and this test fails at "fewer than 200
writes completed".  The third handover is the usual one (the target runs as
soon as the migration completed, a window of a few ms, no hold): recorded,
not required to catch anything.  There, requests left in the backend do not
wake the guest either once one completion of the window was signalled to
the old QEMU: with VIRTIO_RING_F_EVENT_IDX (which the backend offers and
Linux uses) a device signals once per batch the guest has not looked at yet.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

from mfds.backends import LateCompletionBlk
from mfds.paths import scaled
from mfds.result import RunResult
from mfds.scenario import (SOURCE_DISK, Part, Scenario, SessionHandover, SharedFile, TapHandover,
                           boot_source, guest_writes, start_writer, stop_writer, upgrade)
from mfds.verify import assert_every_write_completed, io_summary
from test_vub_handover import report_io, wait_writes

# The backend's completion delay; how long it holds its completions back
# before a migration (the guest handles what completed before and waits);
# how long a paused target waits for `cont` once the migration completed
# (longer than the delay: every request taken before the stop completes in
# the window).
DELAY_MS = 30
QUIET_S = 0.3
PAUSED_S = 0.5
# Writes that must complete on the guest's disk after a step, and the time
# they get (a few tenths of a second at the backend's ~1000 per second).
PROGRESS, PROGRESS_S = 200, 20


@dataclass
class LateCompletion(Part):
    """A backend part: vub-late-completion, which h.qsd stands for."""
    delay_ms: int = DELAY_MS

    def setup(self, h):
        h.qsd = LateCompletionBlk(h, h.image, h.sock(SOURCE_DISK), self.delay_ms)


def late_completion_handover():
    """The vhost-user-blk handover (the tap and the session handed over)
    with the disk on vub-late-completion."""
    return Scenario("vhost-user-blk-migrate-fds-late-completion", TapHandover(),
                    SessionHandover(), SharedFile(), LateCompletion())


def wall(ev):
    """A QMP event's timestamp: wall clock, as the backend's log."""
    return ev["timestamp"]["seconds"] + ev["timestamp"]["microseconds"] / 1e6


def handover(h, sc, src, role, held):
    """Hand the VM over from src to a new QEMU, then quit src.  held: the
    backend is quiet for QUIET_S before the migration and completes what it
    holds once src stopped, and the target starts with -S and gets `cont`
    PAUSED_S after the migration completed; else the target runs at once
    (upgrade()).  Returns the target and the wall times of the source's STOP
    and the target's RESUME."""
    src.mon.discard_events()
    if not held:
        hop = RunResult()
        dst = upgrade(h, sc, src, hop, role=role)
        assert hop.migration["status"] == "completed"
        assert hop.target_status == "running"
        assert hop.source_exit == 0, f"{src.role} did not quit cleanly"
        # upgrade() took the STOP and RESUME events: their times, back on
        # the wall clock of the backend's log.
        off = time.time() - time.monotonic()
        return dst, hop.t["source_stopped"] + off, hop.t["target_running"] + off
    h.qsd.hold(True)
    time.sleep(QUIET_S)
    dst, _ = sc.migrate(h, src, extra=["-S"], role=role)
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    assert done["data"]["status"] == "completed", src.mon.cmd("query-migrate")
    stop = src.mon.wait_event(lambda e: e["event"] == "STOP", timeout=5)
    h.qsd.hold(False)
    deadline = time.monotonic() + scaled(30)
    while dst.mon.cmd("query-migrate").get("status") != "completed":
        assert time.monotonic() < deadline, f"{role} did not complete the incoming migration"
        time.sleep(0.01)
    assert dst.mon.cmd("query-status")["status"] == "paused"
    time.sleep(PAUSED_S)
    dst.mon.cmd("cont")
    resume = dst.mon.wait_event(lambda e: e["event"] == "RESUME")
    src.quit()
    assert src.proc.p.returncode == 0, f"{src.role} did not quit cleanly"
    return dst, wall(stop), wall(resume)


def window(backend, t_stop, timeout=5):
    """What the backend did between the source's STOP (t_stop) and the
    target's first SET_VRING_CALL after it (waited for: the target does
    not wait for the backend to read it)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        ev = backend.events()
        calls = [(t, f) for t, kind, f in ev if kind == "SET_VRING_CALL" and t > t_stop]
        if calls:
            break
        assert time.monotonic() < deadline, (f"no SET_VRING_CALL after the source stopped; "
                                             f"backend log:\n{backend.tail()}")
        time.sleep(0.05)
    t_call, call = calls[0]
    before = [(t, f) for t, kind, f in ev if kind in ("took", "complete", "hold") and t <= t_stop]
    last_completion = max((t for t, kind, _ in ev if kind == "complete" and t <= t_stop),
                          default=None)
    return {
        "window_ms": round((t_call - t_stop) * 1000, 1),
        "in_backend_at_stop": int(before[-1][1]["inflight"]) if before else 0,
        "no_completion_before_stop_ms": (round((t_stop - last_completion) * 1000, 1)
                                         if last_completion else None),
        "completed_in_window": sum(1 for t, kind, _ in ev
                                   if kind == "complete" and t_stop < t < t_call),
        "in_backend_at_set_vring_call": int(call["inflight"]),
        # What the backend heard of the handover (the target sends only
        # SET_VRING_CALL and SET_VRING_ERR).
        "messages_after_stop": [f.get("req", kind) for t, kind, f in ev
                                if kind in ("msg", "SET_VRING_CALL") and t > t_stop],
    }


def disk_goes_on(h, vm, after, why=""):
    """PROGRESS more writes complete on vm's guest within PROGRESS_S, and the
    backend is still there with its one connection."""
    n0 = guest_writes(vm)
    n = wait_writes(vm, n0 + PROGRESS - 1, PROGRESS_S)
    assert n is not None, (f"after {after}: fewer than {PROGRESS} writes completed on {vm.role} "
                           f"in {PROGRESS_S} s (from {n0}: {guest_writes(vm)}): the guest's disk "
                           f"stalled{why}")
    assert h.qsd.connections() == 1, f"after {after}: {h.qsd.tail()}"
    assert h.qsd.alive(), f"after {after}: the backend ended: {h.qsd.tail()}"


def boot_writing(h):
    """Boot the VM with its disk on vub-late-completion and the guest's
    writer running; returns the scenario, the VM and its RunResult."""
    sc = late_completion_handover()
    r = RunResult()
    sc.setup(h)
    vm = boot_source(h, sc, r)
    start_writer(vm)
    disk_goes_on(h, vm, "boot")
    return sc, vm, r


def test_completions_in_switchover_window_reach_guest_without_backend_kick(h):
    """Three handovers (src -> dst -> dst2 -> dst3), the first two held (see
    above): in those the backend completes requests in the switchover
    window and has none left when the target points it at its own call fd;
    the guest's writes go on on each target all the same.  One connection
    for the life of the VM; every write completes and reads back intact.
    The windows' figures are printed and kept in io.json (hops)."""
    sc, vm, r = boot_writing(h)
    hops = []
    for role, held in (("dst", True), ("dst2", True), ("dst3", False)):
        vm, t_stop, t_resume = handover(h, sc, vm, role, held)
        w = {"target": role, "held": held, **window(h.qsd, t_stop),
             "stop_to_resume_ms": round((t_resume - t_stop) * 1000, 1)}
        hops.append(w)
        print(f"switchover to {role}:", json.dumps(w))
        if held:
            # The case this test is about: completions the backend signalled
            # to the previous QEMU only, and none left to signal the new
            # call fd (which could wake the guest up anyway).
            assert w["completed_in_window"] > 0, w
            assert w["in_backend_at_set_vring_call"] == 0, (
                f"requests left in the backend when {role} took over: PAUSED_S is too short "
                f"for the backend's delay, so this run cannot tell a lost notification: {w}")
        disk_goes_on(h, vm, f"the handover to {role}",
                     f" (the backend completed {w['completed_in_window']} requests in the "
                     f"switchover window, signalled to the previous QEMU only; backend "
                     f"log: {Path(h.logs or h.dir) / h.qsd.log.name})")
    stop_writer(h, vm, r)
    r.vhost_user_connections = h.qsd.connections()
    report_io(h, r, hops=hops, delay_ms=DELAY_MS, quiet_s=QUIET_S, paused_s=PAUSED_S)
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1, io_summary(r)
    assert h.qsd.alive(), h.qsd.tail()


def test_target_that_never_ran_hands_the_running_vrings_on(h):
    """A target that loaded the session but never ran the VM (-S, no `cont`:
    e.g. libvirt's migrate --suspend) is migrated on to a third QEMU: the
    vrings still run in the backend, so their kick eventfds go on with the
    session and the third QEMU takes them over as the second would have.
    The backend hears nothing but the new call and error fds (and the
    GET_FEATURES that orders them without REPLY_ACK) from the source's STOP
    on: no SET_VRING_BASE, which would skip the requests it had not taken
    yet, no new kick fd, no memory table.  The guest's writes go on on the
    third QEMU; one connection; every write completes intact.  When the
    second QEMU did not pass the vrings on, the third set them up afresh and
    this fails at "messages the backend heard"."""
    sc, src, r = boot_writing(h)
    src.mon.discard_events()
    dst, _ = sc.migrate(h, src, extra=["-S"], role="dst")
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    assert done["data"]["status"] == "completed", src.mon.cmd("query-migrate")
    t_stop = wall(src.mon.wait_event(lambda e: e["event"] == "STOP", timeout=5))
    deadline = time.monotonic() + scaled(30)
    while dst.mon.cmd("query-migrate").get("status") != "completed":
        assert time.monotonic() < deadline, "dst did not complete the incoming migration"
        time.sleep(0.01)
    assert dst.mon.cmd("query-status")["status"] == "paused"
    src.quit()
    assert src.proc.p.returncode == 0, "src did not quit cleanly"

    dst.mon.discard_events()
    dst2, _ = sc.migrate(h, dst, role="dst2")
    done = dst.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    assert done["data"]["status"] == "completed", dst.mon.cmd("query-migrate")
    deadline = time.monotonic() + scaled(30)
    while dst2.mon.cmd("query-migrate").get("status") != "completed":
        assert time.monotonic() < deadline, "dst2 did not complete the incoming migration"
        time.sleep(0.01)
    # A VM paused before its migration stays paused on the target.
    assert dst2.mon.cmd("query-status")["status"] == "paused"
    dst2.mon.cmd("cont")
    dst2.mon.wait_event(lambda e: e["event"] == "RESUME")
    dst.quit()
    assert dst.proc.p.returncode == 0, "dst did not quit cleanly"
    disk_goes_on(h, dst2, "the handover from a target that never ran")

    heard = [f.get("req", kind) for t, kind, f in h.qsd.events()
             if kind in ("msg", "SET_VRING_CALL") and t > t_stop]
    assert heard and set(heard) <= {"SET_VRING_CALL", "VHOST_USER_SET_VRING_ERR",
                                    "VHOST_USER_GET_FEATURES"}, (
        f"messages the backend heard after the source stopped: {heard}")
    stop_writer(h, dst2, r)
    r.vhost_user_connections = h.qsd.connections()
    report_io(h, r, messages_after_stop=heard)
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1, io_summary(r)
