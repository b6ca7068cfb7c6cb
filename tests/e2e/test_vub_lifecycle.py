"""What a VM does AFTER (and just before) a vhost-user-blk handover: the
handover itself is test_vub_handover.py's; here the new QEMU must survive
what management and the guest do next (stop/cont, a guest reboot, another
handover after the reboot, a reset before a paused target's `cont`), a VM
paused before `migrate`, a target whose load fails, and an old QEMU that
is asked things once it handed over.

Each test runs the vhost-user-blk-migrate-fds scenario (qemu-storage-daemon
throttled to 1000 IOPS, the guest writer keeping 32 AIO writes in flight,
the tap handed over too) and checks, after every step: the QEMU that runs
the VM is alive, the guest's disk completes writes on it (its
completed-write counter grows), and the daemon saw one vhost-user
connection (h.qsd.connections() == 1, the first QEMU's, taken over by each
next one).  At the end every write the
guest submitted completed and reads back intact (assert_every_write_completed).

A QEMU that dies (e.g. SIGSEGV) fails the step with its exit status and the
tail of its log (work/e2e/<test>/qemu-<role>.log).

stop/cont, the reboot, the handover after it and the paused VM run under
both RAM parts (HANDOVERS): x-ignore-shared and the cpr-transfer mode."""
import contextlib
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError

from mfds import qemutrace
from mfds.paths import scaled
from mfds.result import RunResult
from mfds.ringwatch import RingWatch
from mfds.scenario import (boot_source, guest_writes, pause_writer, resume_writer,
                           run_failed_target, scenario, start_writer, stop_writer, upgrade,
                           wait_running)
from mfds.verify import assert_every_write_completed, io_summary
from test_vub_handover import report_io, wait_writes

# The vhost-user-blk device's virtio backend (-device ...,id=disk0).
DISK = "/machine/peripheral/disk0/virtio-backend"
# vhost-user requests (docs/interop/vhost-user.rst), as QEMU's trace
# (vhost_user_write) numbers them.
SET_VRING_ADDR, GET_VRING_BASE, SET_VRING_KICK = 9, 11, 12
# Writes that must complete on the disk after a step for it to count as
# working (0.2 s at the daemon's 1000 IOPS), and the time they get.
PROGRESS, PROGRESS_S = 200, 20


# The RAM part of the handover: x-ignore-shared, or the cpr-transfer mode.
HANDOVERS = pytest.mark.parametrize("name", ["vhost-user-blk-migrate-fds",
                                             "vhost-user-blk-migrate-fds-cpr"],
                                    ids=["shared-file", "cpr-transfer"])


def alive(vm):
    """Fail unless vm's QEMU still runs, with its exit status and log tail."""
    if not vm.proc.alive():
        tail = Path(vm.proc.log).read_text(errors="replace")[-3000:]
        pytest.fail(f"QEMU {vm.role} died (exit status {vm.proc.p.returncode}); "
                    f"log tail:\n{tail}")


def qmp(vm, name, **args):
    """vm.mon.cmd; a QEMU that dies on the command fails as in alive()."""
    try:
        return vm.mon.cmd(name, **args)
    except ExecuteError:
        raise
    except Exception:
        vm.proc.wait(3)
        alive(vm)
        raise


def disk_works(h, vm, after):
    """The disk works on vm after the step `after`: vm alive, PROGRESS more
    writes completed within PROGRESS_S, and the daemon still has its one
    connection.  Returns the guest's completed writes."""
    alive(vm)
    n0 = guest_writes(vm)
    n = wait_writes(vm, n0 + PROGRESS, PROGRESS_S)
    alive(vm)
    assert n is not None, (f"after {after}: fewer than {PROGRESS} writes completed on "
                           f"{vm.role} in {PROGRESS_S} s (from {n0}: {guest_writes(vm)})")
    assert h.qsd.connections() == 1, f"after {after}"
    return n


@contextlib.contextmanager
def quiesced(vm, resume=True):
    """The guest's writer paused (SIGSTOP) and nothing in flight on its disk
    (/sys/block/vda/inflight) for the steps inside; it writes on after
    (resume), unless the steps end it (a reboot).

    A stop of the vrings (GET_VRING_BASE: `stop`, a reset) while
    qemu-storage-daemon still holds requests makes the daemon's
    libvhost-user, which closed the call eventfd, panic writing it when
    they complete ("vu_panic: Error writing eventfd: Bad file
    descriptor"), and the disk is dead: a defect of QEMU 10.2.2 and its
    daemon that shows as often without a handover (a plain stop/cont loop
    on one QEMU) as after one.  These steps are what a handover must
    survive, so they run with no request inside the daemon.  With no
    writer (one stopped before), there is none to pause."""
    pause_writer(vm)
    yield
    if resume:
        resume_writer(vm)


def wait_completed(src, dst):
    """Wait until the migration from src completed on both sides, for a
    target that does not run the VM (so no RESUME to wait for)."""
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    assert done["data"]["status"] == "completed", qmp(src, "query-migrate")
    deadline = time.monotonic() + scaled(30)
    while qmp(dst, "query-migrate").get("status") != "completed":
        assert time.monotonic() < deadline, "the target did not complete the incoming migration"
        time.sleep(0.05)


def boot_writing(h, sc):
    """Boot the source under sc, start the writer (run id 1); returns the
    source and the RunResult for stop_writer."""
    r = RunResult()
    sc.setup(h)
    src = boot_source(h, sc, r)
    start_writer(src)
    disk_works(h, src, "boot")
    return src, r


def hand_over(h, sc, src, role="dst"):
    """One handover (upgrade(): the source quits once the target runs);
    checks it completed, the source quit cleanly and the disk works on the
    target.  Returns the target and upgrade()'s figures."""
    hop = RunResult()
    dst = upgrade(h, sc, src, hop, role=role)
    assert hop.migration["status"] == "completed"
    assert hop.target_status == "running"
    assert hop.source_exit == 0, "the source did not quit cleanly"
    disk_works(h, dst, f"the handover to {role}")
    return dst, hop


def finish(h, vm, r, run=1, **extra):
    """Stop the writer of run id run on vm and assert every write it
    submitted completed intact, with the daemon's one connection."""
    stop_writer(h, vm, r, run)
    r.vhost_user_connections = h.qsd.connections()
    report_io(h, r, **extra)
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1, io_summary(r)


@HANDOVERS
def test_vub_handover_then_stop_cont(h, name):
    """After a handover, `stop` then `cont` on the new QEMU, three times
    (the writer paused meanwhile, see quiesced()): the first start of the vrings
    the new QEMU does itself (not a take-over).  It used to SIGSEGV at
    `cont` (the memory regions taken over held the source's addresses):
    that fails here at the first `cont`, as "QEMU dst died (exit status
    -11)"."""
    sc = scenario(name)
    src, r = boot_writing(h, sc)
    dst, _ = hand_over(h, sc, src)
    for i in range(1, 4):
        with quiesced(dst):
            qmp(dst, "stop")
            assert qmp(dst, "query-status")["status"] == "paused"
            time.sleep(0.5)
            qmp(dst, "cont")
            wait_running(dst)
        disk_works(h, dst, f"stop/cont {i}")
    finish(h, dst, r)


def plug_memory(h, vm, size_mb=128):
    """Hotplug a pc-dimm of size_mb on a shared file (vhost-user needs an
    fd); returns None, or the error of the refusal.  The backend object
    stays for a later try."""
    path = Path(f"/dev/shm/{h.id}-dimm0")
    if not path.exists():
        h.stack.callback(lambda: path.unlink(missing_ok=True))
        qmp(vm, "object-add", **{"qom-type": "memory-backend-file", "id": "dimm0mem",
                                 "size": size_mb << 20, "mem-path": str(path), "share": True})
    try:
        qmp(vm, "device_add", driver="pc-dimm", id="dimm0", memdev="dimm0mem")
    except ExecuteError as e:
        return str(e)
    return None


def test_vub_memory_hotplug_refused_until_vrings_restart(h):
    """After a handover, a memory hotplug (a pc-dimm) on the new QEMU is
    refused with an error that says what to do: the daemon knows the vrings
    taken over by the old QEMU's addresses until the new QEMU restarts them,
    and a new memory table would remove those regions.  The VM goes on and
    the disk works.  After a stop/cont (the vrings restart here) the same
    hotplug succeeds, the daemon maps the new memory, and the disk works on;
    every write completes intact, one connection.  Without the refusal the
    hotplug "succeeds" at once, and fails here as "the hotplug was not
    refused"."""
    h.mem_slots = 1
    sc = scenario("vhost-user-blk-migrate-fds")
    src, r = boot_writing(h, sc)
    dst, _ = hand_over(h, sc, src)
    refusal = plug_memory(h, dst)
    assert refusal is not None, "the hotplug was not refused"
    assert "must restart first" in refusal, refusal
    assert qmp(dst, "query-status")["status"] == "running"
    assert not qmp(dst, "query-memory-devices")
    disk_works(h, dst, "the refused hotplug")
    with quiesced(dst):
        qmp(dst, "stop")
        qmp(dst, "cont")
        wait_running(dst)
    disk_works(h, dst, "stop/cont")
    err = plug_memory(h, dst)
    assert err is None, f"the hotplug after the restart failed: {err}"
    devices = qmp(dst, "query-memory-devices")
    assert [d["data"]["id"] for d in devices] == ["dimm0"], devices
    disk_works(h, dst, "the hotplug after the restart")
    finish(h, dst, r, hotplug_refused_with=refusal)


def reboot(h, vm):
    """Reboot the guest from the host (`system_reset`) and wait until it
    answers again; asserts it did boot anew (a new boot_id).  The VM runs
    with -no-reboot (reboot action "shutdown"), under which a system_reset
    quits QEMU: the action becomes "reset" first."""
    boot_id = vm.agent.run("cat /proc/sys/kernel/random/boot_id").strip()
    vm.mon.discard_events()
    qmp(vm, "set-action", reboot="reset")
    # The reset stops the vrings: nothing in the daemon then (quiesced()).
    with quiesced(vm, resume=False):
        qmp(vm, "system_reset")
    vm.mon.wait_event(lambda e: e["event"] == "RESET", timeout=10)
    try:
        vm.agent.wait_boot()
    except Exception:
        alive(vm)
        raise
    alive(vm)
    assert vm.agent.run("cat /proc/sys/kernel/random/boot_id").strip() != boot_id
    assert h.qsd.connections() == 1, "after the reboot"


def handover_then_reboot(h, sc):
    """Boot, writer run 1 across a handover (every write completed), writer
    run 2 on the new QEMU, then a guest reboot with run 2 paused and
    drained (its records are not checked: the reboot ends it), then writer
    run 3 on the rebooted guest.  Returns the target and run 3's
    RunResult."""
    src, r1 = boot_writing(h, sc)
    dst, _ = hand_over(h, sc, src)
    finish(h, dst, r1)
    start_writer(dst, run=2)
    disk_works(h, dst, "writer run 2 started")
    reboot(h, dst)
    start_writer(dst, run=3)
    disk_works(h, dst, "the reboot")
    return dst, RunResult()


@HANDOVERS
def test_vub_handover_then_guest_reboot(h, name):
    """After a handover, the guest reboots (`system_reset` on the new QEMU):
    the device reset stops the vrings, the new guest
    kernel starts them again on the new QEMU (its own start, not a
    take-over), and the disk works: every write after the reboot completes
    intact.  It used to SIGSEGV at the restart (no boot, QEMU dead)."""
    sc = scenario(name)
    dst, r3 = handover_then_reboot(h, sc)
    time.sleep(1)
    finish(h, dst, r3, run=3)


@HANDOVERS
def test_vub_handover_after_reboot_hands_over_again(h, name):
    """After a handover and a guest reboot, a second handover to a third
    QEMU, with the writer (run 3) running across it: the vrings the rebooted
    guest started on the second QEMU move on to the third, every write
    completes intact, and the daemon still saw one connection."""
    sc = scenario(name)
    dst, r3 = handover_then_reboot(h, sc)
    dst2, _ = hand_over(h, sc, dst, role="dst2")
    finish(h, dst2, r3, run=3)


@HANDOVERS
def test_vub_handover_of_paused_vm(h, name):
    """The VM is paused (`stop`, its writer paused and drained) before `migrate`: the
    handover completes into a target that stays paused; `cont` on the target
    while the old QEMU is still there (both hold the session: only the
    target may use it), then the old QEMU quits: the disk works after each,
    every write completes intact, one connection."""
    sc = scenario(name)
    src, r = boot_writing(h, sc)
    # Nothing inside the daemon at the stop (see quiesced()); the writer
    # goes on on the target.
    with quiesced(src, resume=False):
        qmp(src, "stop")
    assert qmp(src, "query-status")["status"] == "paused"
    time.sleep(0.2)
    sc.pre_migrate(h)
    dst, _ = sc.migrate(h, src)
    wait_completed(src, dst)
    # A VM paused before the migration stays paused on the target.
    assert qmp(dst, "query-status")["status"] == "paused"
    assert h.qsd.connections() == 1
    qmp(dst, "cont")
    wait_running(dst)
    dst.agent.run("kill -CONT $(pidof writer)")
    disk_works(h, dst, "cont on the target (the source still there)")
    assert src.quit() == 0, "the source did not quit cleanly"
    disk_works(h, dst, "the source quit")
    finish(h, dst, r)


def test_vub_handover_then_reset_before_cont(h):
    """The running VM (its writer run 1 finished: nothing in the daemon,
    see quiesced()) hands its session over to a target started with -S,
    as libvirt starts one, which takes the vrings over and stays paused.
    Still paused, the guest is reset (`system_reset`, as `virsh reset`
    before the target's `cont`); a migrate-fds migration of it is then
    refused, saying why (the session it would pass on runs vrings the
    guest gave up), and only then is it continued.  The backend still ran
    the vrings handed over: the target must stop them (GET_VRING_BASE),
    here when the refused migration gives the session back to it, and
    give the backend the rebooted guest's new vrings (SET_VRING_ADDR)
    before it starts any (SET_VRING_KICK).  Taken over instead, the
    backend would serve the old rings, in memory the new guest reuses (the
    guest's firmware then waited forever).  The target's vhost-user
    messages come from its trace.  The guest boots, a new writer (run 2)
    completes every write intact, one connection.

    The disk has two virtqueues and the guest, with one vCPU, sets up one
    (/sys/block/vda/mq): the backend never started the other, so the
    target must not stop it either, one GET_VRING_BASE per vring the
    guest used."""
    sc = scenario("vhost-user-blk-migrate-fds", disk_queues=2)
    src, r1 = boot_writing(h, sc)
    finish(h, src, r1)
    guest_vqs = len(src.agent.run("ls /sys/block/vda/mq").split())
    assert 0 < guest_vqs < sc.disk_queues, \
        f"the guest set up {guest_vqs} of {sc.disk_queues} virtqueues: no unused one to test"
    boot_id = src.agent.run("cat /proc/sys/kernel/random/boot_id").strip()
    sc.pre_migrate(h)
    trace = h.dir / "trace-vhost-user-dst.log"
    dst, _ = sc.migrate(h, src, extra=["-S", *qemutrace.trace_args(trace, ("vhost_user_write",))])
    wait_completed(src, dst)
    assert src.quit() == 0, "the source did not quit cleanly"
    assert qmp(dst, "query-status")["status"] == "paused"
    dst.mon.discard_events()
    qmp(dst, "set-action", reboot="reset")
    qmp(dst, "system_reset")
    dst.mon.wait_event(lambda e: e["event"] == "RESET", timeout=10)
    # A listener that accepts nothing: the migration fails when it starts.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sink:
        sink.bind(str(h.dir / "sink.sock"))
        sink.listen(1)
        qmp(dst, "migrate", uri=f"unix:{h.dir / 'sink.sock'}")
        dst.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                           e["data"]["status"] == "failed", timeout=10)
    refusal = qmp(dst, "query-migrate").get("error-desc", "")
    assert "the guest reset it before the VM ran here" in refusal, refusal
    alive(dst)
    assert qmp(dst, "query-status")["status"] in ("paused", "prelaunch")
    qmp(dst, "cont")
    wait_running(dst)
    try:
        dst.agent.wait_boot()
    except Exception:
        alive(dst)
        raise
    alive(dst)
    assert dst.agent.run("cat /proc/sys/kernel/random/boot_id").strip() != boot_id
    r2 = RunResult()
    start_writer(dst, run=2)
    disk_works(h, dst, "the reset before cont")
    time.sleep(1)
    finish(h, dst, r2, run=2)
    sent = [int(n) for n in re.findall(r"vhost_user_write req:(\d+)", trace.read_text())]
    assert SET_VRING_KICK in sent, sent
    before = sent[:sent.index(SET_VRING_KICK)]
    assert GET_VRING_BASE in before, f"the vrings the reset guest gave up were not stopped: {sent}"
    assert before.count(GET_VRING_BASE) == guest_vqs, \
        f"{before.count(GET_VRING_BASE)} vrings stopped, the guest used {guest_vqs}: {sent}"
    assert SET_VRING_ADDR in before, f"vrings started without their address: {sent}"


def test_vub_handover_requests_in_flight_at_switchover(h):
    """At queue depth 32 with the daemon throttled to 1000 IOPS, the
    requests inside the daemon when the source stopped (the switchover) are
    counted from the guest's rings: there must be some, or this run did not
    test the case it is about.  Recorded (io.json): the count at the
    source's STOP, the least and most in the switchover window (source
    stopped -> target running), completions the daemon made in that window
    (while no QEMU ran the VM), and the guest's own in-flight writes read
    just before `migrate`.  Every write completes intact, one connection."""
    sc = scenario("vhost-user-blk-migrate-fds")
    src, r = boot_writing(h, sc)
    ring = RingWatch(h.shm, src)
    try:
        time.sleep(0.5)
        # The guest block layer's writes in flight (/sys/block/vda/inflight:
        # reads writes), just before the migrate command.
        guest_inflight = int(src.agent.run("cat /sys/block/vda/inflight").split()[1])
        dst, hop = hand_over(h, sc, src)
    finally:
        ring.stop()
    t = hop.t
    io = ring.switch(t["source_stopped"], t["target_running"])
    window = [s for s in ring.samples if t["source_stopped"] <= s[0] <= t["target_running"]]
    figures = {
        "in_daemon_at_switchover": io.in_daemon_at_stop,
        "in_daemon_at_target_running": io.in_daemon_at_run,
        "in_daemon_in_window_min": min((sum(s[1]) for s in window), default=None),
        "in_daemon_in_window_max": max((sum(s[1]) for s in window), default=None),
        "completed_in_window": io.completed_while_stopped,
        "window_ms": (t["target_running"] - t["source_stopped"]) * 1000,
        "window_samples": len(window),
        "ring_samples": io.samples,
        "guest_inflight_before_migrate": guest_inflight,
        "downtime_ms": hop.downtime_ms,
    }
    print("switchover:", figures)
    finish(h, dst, r, **figures)
    assert figures["in_daemon_at_switchover"] > 0, figures


def test_vub_source_takes_back_then_hands_over_and_reboots(h):
    """The session goes back to the source and on from there: a handover
    into a target started with -S, which is SIGKILLed before it runs the
    VM; `cont` on the source, which takes its session back and completes
    writes; then a handover from it to a new QEMU, with the writer
    running across it, and a guest reboot there.  Every write completes
    intact, and the daemon saw one connection throughout.  A source that
    kept the session marked as handed over refuses that second handover
    ("its session was handed over to another QEMU")."""
    sc = scenario("vhost-user-blk-migrate-fds")
    src, r = boot_writing(h, sc)
    sc.pre_migrate(h)
    dst, _ = sc.migrate(h, src, extra=["-S"])
    wait_completed(src, dst)
    dst.proc.stop(signal.SIGKILL)
    qmp(src, "cont")
    wait_running(src)
    disk_works(h, src, "cont on the source whose target was killed")
    dst2, _ = hand_over(h, sc, src, role="dst2")
    finish(h, dst2, r)
    reboot(h, dst2)
    r2 = RunResult()
    start_writer(dst2, run=2)
    disk_works(h, dst2, "the reboot after the second handover")
    finish(h, dst2, r2, run=2)


def test_vub_failed_load_source_resumes_io(h):
    """A handover whose target's load fails (its tap has half the source's
    2 queues: it rejects the fds) and exits; management does `cont` on the
    source (which saw the migration complete: no return path).  The source
    serves the disk again on the session it never gave up: writes complete
    after the `cont`, every write completes intact, one connection."""
    r = run_failed_target(h, scenario("vhost-user-blk-migrate-fds", queues=2), "load-fails",
                          io=True)
    report_io(h, r, writes_at_recovery=r.writes_at_recovery, writes_after=r.writes_after)
    io = io_summary(r)

    assert r.target_exit not in (None, 0)
    assert "load of migration failed" in r.target_log
    assert "never claimed" not in r.target_log
    assert r.writes_after - r.writes_at_recovery >= PROGRESS, io
    assert_every_write_completed(r)
    assert r.vhost_user_connections == 1, io
    assert r.guest_alive_after
    assert r.source_exit == 0, "the source did not quit cleanly"


def test_vub_old_qemu_silent_after_handover(h):
    """After a completed handover and BEFORE the old QEMU quits, management
    asks it things that would make it speak on, or shut down, the session
    the new QEMU now owns: x-query-virtio-queue-status of the disk (which
    asks the backend for the vring base), `system_reset` (a device reset
    stops the vrings), `yank` of its vhost-user chardev (shuts the socket
    down), then `quit`.  Whatever each answers, the new QEMU's writes keep
    completing after each.  Without the fix the query alone stopped the
    ring in the daemon: every write in flight on the new QEMU hung for
    good, which fails here as "after x-query-virtio-queue-status on the old
    QEMU: fewer than 200 writes completed on dst in 20 s"."""
    sc = scenario("vhost-user-blk-migrate-fds")
    src, r = boot_writing(h, sc)
    sc.pre_migrate(h)
    dst, _ = sc.migrate(h, src)
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    assert done["data"]["status"] == "completed", qmp(src, "query-migrate")
    wait_running(dst)
    disk_works(h, dst, "the handover")

    answers = {}

    def ask(what, name, **args):
        try:
            answers[what] = qmp(src, name, **args)
        except ExecuteError as e:
            answers[what] = f"error: {e}"
        disk_works(h, dst, f"{what} on the old QEMU")

    ask("x-query-virtio-queue-status", "x-query-virtio-queue-status", path=DISK, queue=0)
    # -no-reboot would turn the reset into a quit.
    qmp(src, "set-action", reboot="reset")
    ask("system_reset", "system_reset")
    time.sleep(0.5)  # the reset is done by the main loop after the reply
    ask("yank", "yank", instances=[{"type": "chardev", "id": "vub0"}])
    assert src.quit() == 0, "the old QEMU did not quit cleanly"
    disk_works(h, dst, "the old QEMU quit")
    print("the old QEMU answered:", answers)
    finish(h, dst, r, old_qemu_answers={k: str(v)[:300] for k, v in answers.items()})
