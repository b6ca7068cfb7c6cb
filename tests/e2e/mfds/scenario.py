"""A local upgrade (replace the VM's QEMU by a new process on the same host)
and the run that measures what the guest sees during it.

A scenario says how the target is started and what management does around
the migration:
    source_net / source_disk   the source's -netdev and vhost-user socket
    target_net / target_disk   the same for the target
    source_disk_opts,          options appended to the disk's -chardev and
    target_disk_opts           -device (e.g. migrate-fds=on)
    caps, params               migration capabilities and parameters
    source_started(h, src)     once the source QEMU is up (e.g. configure the
                               tap it created)
    pre_migrate(h)             before the target starts (new tap, new export)
    migrate(h, src)            start the target, migrate; returns the target
    target_started(h, dst)     once the target's monitor is up, before it
                               loads anything (e.g. see what it opened)
    post_migrate(h)            once the migration has completed (switch host)
    check(r)                   assert on run()'s figures that the run did
                               what the scenario is about
The migrate-fds scenarios (same tap, same vhost-user connection handed over)
subclass Scenario and change these.
"""
import json
import re
import signal
import statistics
import time

from . import harness as hn
from .verify import check_image, tap_info

WRITER_LOG = "/tmp/writer.log"
WRITER_OUT = "/tmp/writer.out"
WRITER_STATUS = "/tmp/writer.status"
# The writes the guest's writer keeps in flight (its queue depth).
WRITER_DEPTH = 32
# The throttled daemon of the vhost-user-blk scenarios (requests stay in it
# for a while: a slow backend).
THROTTLED_IOPS = 1000
# The disk's -chardev and -device options of a vhost-user-blk handover.
MIGRATE_FDS_DISK = {"disk_chardev_opts": ",migrate-fds=on",
                    "disk_device_opts": ",migrate-fds=on"}


class Scenario:
    name = "base"
    caps = {"x-ignore-shared": True, "events": True}
    params = {}
    # The source tap's downscript (a path, or "no").
    downscript = "no"

    # What management does on the host once the migration has completed
    # (for reports).
    host_switch = "host side switched"
    # Pause the guest's writer, with nothing left in flight, across each
    # upgrade (see upgrade()).
    quiesce_disk = False

    def __init__(self, multi_queue=False, cpr=False, iops_limit=None, queues=None):
        """queues: tap queues (default 2 with multi_queue, else 1)."""
        self.queues = queues or (2 if multi_queue else 1)
        self.mq = self.queues > 1
        self.cpr = cpr
        self.iops_limit = iops_limit

    def tap_opts(self, queues=None):
        queues = self.queues if queues is None else queues
        return f",queues={queues}" if queues > 1 else ""

    def source_net(self, h):
        return (f"tap,id=n0,ifname=tap0,script=no,downscript={self.downscript}"
                f"{self.tap_opts()}")

    def source_disk(self, h):
        return h.sock("vub0")

    def source_disk_opts(self, h):
        """Options appended to the source's disk -chardev and -device, as
        the Vm keyword arguments that take them."""
        return {"disk_chardev_opts": "", "disk_device_opts": ""}

    def setup(self, h):
        """Host side before the source starts: tap0 with the host address,
        the daemon with export exp0."""
        h.ns.add_tap("tap0", self.mq, f"{hn.HOST_IP}/{hn.PREFIXLEN}")
        h.qsd = hn.Storage(h, h.image, self.iops_limit)
        h.qsd.add_export("exp0", self.source_disk(h))

    def source_started(self, h, src):
        pass

    def target_net(self, h):
        raise NotImplementedError

    def target_disk(self, h):
        raise NotImplementedError

    def target_disk_opts(self, h):
        """The same for the target."""
        return {"disk_chardev_opts": "", "disk_device_opts": ""}

    def pre_migrate(self, h):
        pass

    def migrate(self, h, src, extra=(), target_net=None, role="dst"):
        """Start the target and the migration; return the target Vm and the
        host time of the migrate command.  Guest RAM stays in the shared
        file: x-ignore-shared, or the cpr-transfer mode (which also passes
        fds on a cpr channel and opens the target's monitor only once the
        source has sent it).  extra, target_net: a different target (extra
        QEMU options, another -netdev on the source's virtio-net device) for
        the failure tests.  role: the target's name (its logs and agent
        socket), a new one per upgrade when a VM is upgraded repeatedly."""
        mig = f"unix:{h.sock('migrate')}"
        if not self.cpr:
            dst = hn.Vm(h, role, target_net or self.target_net(h), self.target_disk(h),
                        incoming=["defer"], extra=extra,
                        nic_queues=self.queues if target_net else None,
                        **self.target_disk_opts(h))
            self.target_started(h, dst)
            for vm in (src, dst):
                vm.set_migration(self.caps, self.params)
            dst.mon.cmd("migrate-incoming", uri=mig)
            t = time.monotonic()
            src.mon.cmd("migrate", uri=mig)
            return dst, t
        # cpr-transfer: the target reads the cpr channel before it creates its
        # devices and opens its monitor, so it waits with -incoming defer for
        # its own parameters (migrate-fds) before it listens on the main
        # channel; the source connects there once the target closed the cpr
        # channel, which it does at migrate-incoming.
        cpr = {"transport": "socket", "type": "unix", "path": str(h.sock("cpr"))}
        main = [{"channel-type": "main", "addr": {**cpr, "path": str(h.sock("migrate"))}}]
        dst = hn.Vm(h, role, target_net or self.target_net(h), self.target_disk(h),
                    incoming=["defer", json.dumps({"channel-type": "cpr", "addr": cpr})],
                    machine=self.machine(), connect=False, extra=extra,
                    nic_queues=self.queues if target_net else None,
                    **self.target_disk_opts(h))
        # No monitor to ask yet: the cpr socket appearing says it listens.
        deadline = time.monotonic() + 30
        while not h.sock("cpr").exists():
            if not dst.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError("cpr-transfer target did not open its cpr channel")
            time.sleep(0.01)
        caps = {k: v for k, v in self.caps.items() if k != "x-ignore-shared"}
        src.set_migration(caps, {**self.params, "mode": "cpr-transfer"})
        t = time.monotonic()
        src.mon.cmd("migrate", channels=main + [{"channel-type": "cpr", "addr": cpr}])
        dst.connect()
        self.target_started(h, dst)
        dst.set_migration(caps, self.params)
        dst.mon.cmd("migrate-incoming", channels=main)
        return dst, t

    def machine(self):
        """Extra -machine options for both sides."""
        return ",aux-ram-share=on" if self.cpr else ""

    def target_started(self, h, dst):
        pass

    def post_migrate(self, h):
        pass

    def check(self, r):
        pass


class Baseline(Scenario):
    """What management must do today: the target gets a new tap and a second
    export of the same block node; once the migration has completed the host
    address moves to the new tap and the old one goes."""
    host_switch = "host side switched to the new tap"

    @property
    def name(self):
        return ("baseline" + ("-cpr" if self.cpr else "") +
                ("-throttled" if self.iops_limit else ""))

    def target_net(self, h):
        return f"tap,id=n0,ifname=tap1,script=no,downscript=no{self.tap_opts()}"

    def target_disk(self, h):
        return h.sock("vub1")

    def pre_migrate(self, h):
        h.ns.add_tap("tap1", self.mq)
        h.qsd.add_export("exp1", self.target_disk(h))

    def post_migrate(self, h):
        h.ns.batch(["link del tap0",
                    f"addr add {hn.HOST_IP}/{hn.PREFIXLEN} dev tap1"])


class TapFallbackOpen(Baseline):
    """The baseline with migrate-fds=on on the target's tap and the
    migration without the migrate-fds parameter: no fds come, so the tap,
    which opened nothing at start, opens tap1 as its options say once the
    NIC's state is loaded, inside the downtime (the fallback open).  The
    rest is the baseline's: its downtime against the baseline's is the
    open's cost."""
    name = "tap-fallback-open"

    def target_net(self, h):
        return super().target_net(h) + ",migrate-fds=on"

    def target_started(self, h, dst):
        # Before the load: the tap must still be waiting, holding nothing.
        self.waiting = (tap_info(dst.hmp("info network")), hn.tap_fds(dst.pid()))

    def check(self, r):
        info, fds = self.waiting
        assert info == ["migrate-fds=on, waiting for the incoming migration"] * self.queues, info
        assert fds == [], f"the target held {fds} before the load"
        # After: it opened tap1 itself, nothing handed over; the host was
        # switched to tap1 as in the baseline.
        assert r["target_tap_fds"] == ["tap1"] * self.queues, r["target_tap_fds"]
        assert tap_info(r["target_network"]) == \
            ["ifname=tap1,script=no,downscript=no"] * self.queues, r["target_network"]
        assert list(r["links_after"]) == ["tap1"], r["links_after"]


class TapHandover(Baseline):
    """migrate-fds for the tap: the source QEMU creates tap0 itself (a
    non-persistent tap: it lives only as long as some process holds an fd
    of it) and the host gives it its address; the target takes over the fds
    of every queue through the migration channel, so the same interface,
    ifindex, address, neighbour entries and queued packets carry on, and
    nothing is switched on the host.  The target's -netdev names no
    interface: it can only get one by the handover (a missing handover is a
    load error, not a silently opened second tap).  The disk is as in the
    baseline (a second vhost-user-blk export), quiesced at each switchover
    (quiesce_disk).
    """
    host_switch = "nothing switched on the host (same tap)"
    params = {"migrate-fds": True}
    # The disk takes today's path, whose known defect of QEMU 10.2.2 (see
    # verify.known_second_export_defect) strikes when requests are inside
    # the daemon as the source stops: the network is what these scenarios
    # test, and their disk must still complete every write.
    quiesce_disk = True
    hops = 0  # upgrades started so far (pre_migrate counts them)

    @property
    def name(self):
        return "tap-migrate-fds" + ("-cpr" if self.cpr else "")

    def setup(self, h):
        h.qsd = hn.Storage(h, h.image, self.iops_limit)
        h.qsd.add_export("exp0", self.source_disk(h))

    def source_net(self, h):
        return super().source_net(h) + ",migrate-fds=on"

    def source_started(self, h, src):
        h.ns.configure("tap0", f"{hn.HOST_IP}/{hn.PREFIXLEN}")

    def target_net(self, h, queues=None):
        return f"tap,id=n0,script=no,downscript=no{self.tap_opts(queues)},migrate-fds=on"

    def target_disk(self, h):
        # A new export per upgrade, so that a VM can be upgraded again and
        # again: exp1 at vub1 for the first, exp2 at vub2 for the next...
        return h.sock(f"vub{self.hops}")

    def pre_migrate(self, h):
        self.hops += 1
        h.qsd.add_export(f"exp{self.hops}", self.target_disk(h))

    def post_migrate(self, h):
        pass


class VubHandover(TapHandover):
    """migrate-fds for the disk too: the target takes over the source's live
    vhost-user connection to qemu-storage-daemon (the socket, and with it
    the rings the daemon is processing), so there is no second export and
    the daemon never sees a reconnect.  Both sides name the same socket
    with migrate-fds=on on the chardev and the device: the target's chardev
    does not connect while it waits for the incoming migration, it adopts
    the handed-over fd.  The tap is handed over as in TapHandover.

    The daemon is throttled (THROTTLED_IOPS by default), so that requests
    are inside it at the switchover: the case in which today's path (a
    second export) loses completions."""
    host_switch = "nothing switched on the host (same tap, same vhost-user connection)"
    # Requests in flight at the switchover are what this scenario tests.
    quiesce_disk = False

    def __init__(self, iops_limit=THROTTLED_IOPS, **kwargs):
        super().__init__(iops_limit=iops_limit, **kwargs)

    @property
    def name(self):
        return "vhost-user-blk-migrate-fds" + ("-cpr" if self.cpr else "")

    def source_disk_opts(self, h):
        return MIGRATE_FDS_DISK

    def target_disk(self, h):
        return self.source_disk(h)

    def target_disk_opts(self, h):
        return self.source_disk_opts(h)

    def pre_migrate(self, h):
        pass


class VubContribHandover(VubHandover):
    """VubHandover with contrib/vhost-user-blk as the backend: it tracks its
    requests in an inflight region (F_INFLIGHT_SHMFD), which is handed over
    with the session.  It completes each request before it reads the next
    message, so nothing is in flight at the switchover: this shows that the
    region comes along, not what a re-submission would do.  It serves one
    connection and exits when that closes (h.qsd stands for it)."""

    def __init__(self, **kwargs):
        super().__init__(iops_limit=None, **kwargs)

    @property
    def name(self):
        return "vhost-user-blk-migrate-fds-contrib"

    def setup(self, h):
        h.qsd = hn.ContribBlk(h, h.image, self.source_disk(h))


class VubTargetOnly(TapHandover):
    """The vhost-user-blk property on the target only: the source (property
    off) hands over no disk, so the target's chardev, which waited for a
    handover instead of connecting, connects as today once the state is
    loaded, to a second export (one per upgrade, as in TapHandover).  The
    tap is handed over."""

    @property
    def name(self):
        return "vhost-user-blk-target-only"

    def target_disk_opts(self, h):
        return MIGRATE_FDS_DISK


# Name -> factory, for bench.py and demo.py (new scenarios add themselves).
SCENARIOS = {
    "baseline": Baseline,
    "baseline-cpr": lambda: Baseline(cpr=True),
    "tap-migrate-fds": TapHandover,
    # The baseline with the tap opened inside the downtime.
    "tap-fallback-open": TapFallbackOpen,
    # The disk's figures of the vhost-user-blk handover compare with the
    # baseline's on the same (throttled) daemon.
    "baseline-throttled": lambda: Baseline(iops_limit=THROTTLED_IOPS),
    "vhost-user-blk-migrate-fds": VubHandover,
    "tap-migrate-fds-cpr": lambda: TapHandover(cpr=True),
    "vhost-user-blk-migrate-fds-cpr": lambda: VubHandover(cpr=True),
}


def stream_figures(s):
    """Sent, lost and the longest gap between replies (ms), plus the
    per-sequence arrivals for plots."""
    sent_t, recv = s["sent_t"], s["recv"]
    times = sorted(recv.values())
    gaps = [(b - a, a) for a, b in zip(times, times[1:])]
    gap, gap_at = max(gaps) if gaps else (0.0, None)
    return {
        "sent": len(sent_t),
        "received": len(recv),
        "lost": len(sent_t) - len(recv),
        "gap_ms": gap * 1000,
        "gap_at": gap_at,
        "arrivals": [(seq, t, recv.get(seq)) for seq, t in enumerate(sent_t)],
    }


def wait_running(vm, timeout=30):
    """Host time at which vm was first seen running."""
    deadline = time.monotonic() + timeout
    while vm.mon.cmd("query-status")["status"] != "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{vm.role} not running after {timeout}s")
        time.sleep(0.005)
    return time.monotonic()


def vhost_protocol(vm):
    """The names of the vhost-user protocol features the disk's vhost device
    has (each entry reads "NAME: description")."""
    st = vm.mon.cmd("x-query-virtio-status", path="/machine/peripheral/disk0/virtio-backend")
    protocols = st.get("vhost-dev", {}).get("protocol-features", {}).get("protocols", [])
    return [p.split(":")[0] for p in protocols]


def guest_writes(vm):
    """Writes completed on the guest's /dev/vda (field 5 of its stat)."""
    return int(vm.agent.run("cat /sys/block/vda/stat").split()[4])


def guest_records_written(vm):
    """4 KiB records written on the guest's /dev/vda so far: its written
    sectors (field 7 of its stat) / 8.  Unlike the count of writes, which
    the block layer may merge, one per record the writer saw complete."""
    return int(vm.agent.run("cat /sys/block/vda/stat").split()[6]) // 8


def parse_kv(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def run(h, sc, settle=1.0, after=2.0):
    """Boot the VM under scenario sc in harness h, start the stream and the
    writer, do the local upgrade, and return the figures (a dict).

    settle: seconds of steady traffic and I/O before the migration;
    after: seconds after the switch before the stream and writer stop.
    """
    r = {"scenario": sc.name, "multi_queue": sc.mq, "t": {}}
    t = r["t"]
    sc.setup(h)
    src = boot_source(h, sc, r)
    start_writer(src)
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(settle)

    r["links_before"] = h.ns.links()
    r["source_tap_fds"] = hn.tap_fds(src.pid())
    dst = upgrade(h, sc, src, r)
    # The host's interfaces once the source is gone, and who holds them.
    r["links_after"] = h.ns.links()
    r["target_tap_fds"] = hn.tap_fds(dst.pid())
    r["target_network"] = dst.hmp("info network")
    r["target_vhost_protocol"] = vhost_protocol(dst)

    # Writes the guest has completed so far (a guest counter, so it carried
    # over): the writer must go on adding to it on the target.
    r["writes_at_switch"] = guest_writes(dst)
    r["records_at_switch"] = guest_records_written(dst)
    time.sleep(after)
    r.update(stream_figures(stream.stop()))
    r["writes_after"] = guest_writes(dst)
    # Where the longest gap goes: the switch itself (source stopped ->
    # target running) and the new process getting going (target running ->
    # the first reply it sends), which under TCG is mostly translating the
    # guest's code afresh.
    after = [tr for _, _, tr in r["arrivals"] if tr is not None and tr >= t["target_running"]]
    r["switch_ms"] = (t["target_running"] - t["source_stopped"]) * 1000
    r["first_reply_ms"] = (min(after) - t["target_running"]) * 1000 if after else None
    t["stream_stopped"] = time.monotonic()
    stop_writer(h, dst, r)
    r["guest_alive_after"] = dst.agent.run("echo alive").strip() == "alive"
    r["vhost_user_connections"] = h.qsd.connections()
    r["backend_panics"] = h.qsd.panics()
    sc.check(r)
    return r


def start_writer(vm, run=1):
    """Start the guest's writer on its vhost-user-blk disk (WRITER_DEPTH
    AIO writes in flight) through vm's agent; return once it has started.
    run: the run id its records carry (a later writer, e.g. after a guest
    reboot, takes a new one, so that its records cannot be mistaken for an
    earlier writer's at the same place)."""
    vm.agent.run(f"writer write /dev/vda -q {WRITER_DEPTH} -r {run} -l {WRITER_LOG} -s {WRITER_STATUS} "
                 f">{WRITER_OUT} 2>&1 &")
    vm.agent.run(f"for i in $(seq 100); do grep -q started {WRITER_OUT} && exit 0; sleep 0.1; done; "
                 f"cat {WRITER_OUT}; exit 1")


def stop_writer(h, vm, r, run=1):
    """Stop the guest's writer through vm's agent (the QEMU the guest runs
    on now) and add to r what it saw: writer (its status line),
    writer_stuck, records, io_lost, io_errors, io_stall_ms, io_stalls,
    lost_seqs (the records whose write never completed), and the host's
    check of the image: records_verified, bad_records, bytes_verified
    (records of run id run, as start_writer was given)."""
    # Wait for the writer's final status, not for its exit: a writer with
    # completions lost at the switchover gives up draining after 20 s but
    # may then hang in the kernel on the writes still in flight; its last
    # status still tells what it saw.
    out = vm.agent.run(f"kill -TERM $(pidof writer); for i in $(seq 300); do "
                       f"grep -q state=final {WRITER_STATUS} && break; sleep 0.1; done; "
                       f"cat {WRITER_STATUS}", timeout=90)
    summary = next((ln for ln in out.splitlines() if ln.startswith("records=")), None)
    if summary is None:
        raise RuntimeError(f"writer gave no status: {out}")
    w = parse_kv(summary)
    r["writer"] = w
    r["writer_stuck"] = w["state"] != "final"
    r["records"] = int(w["records"])
    r["io_lost"] = int(w["lost"])
    r["io_errors"] = int(w["errors"])
    r["io_stall_ms"] = float(w["max_stall_ms"])
    # Every completion gap over 20 ms (guest clock, ms since the writer
    # started): shows whether the worst stall is one outage or several.
    out = vm.agent.run(f"awk 'NR > 1 && $2 - p > 20000 {{ print p / 1000, ($2 - p) / 1000 }} "
                       f"{{ p = $2 }}' {WRITER_LOG}", check=False)
    r["io_stalls"] = [tuple(map(float, ln.split())) for ln in out.splitlines()
                      if re.fullmatch(r"[0-9.]+ [0-9.]+", ln.strip())]
    # Which writes never completed: the records the writer submitted that
    # its completion log lacks (the first 1000).
    out = vm.agent.run(f"awk -v n={r['records']} '{{ done[$1] = 1 }} END {{ "
                       f"for (i = 0; i < n && k < 1000; i++) if (!(i in done)) {{ print i; k++ }} }}' "
                       f"{WRITER_LOG}", check=False)
    r["lost_seqs"] = [int(ln) for ln in out.split() if ln.isdigit()]
    good, bad = check_image(h.image, r["records"], run)
    r["records_verified"] = good
    r["bad_records"] = bad
    r["bytes_verified"] = good * 4096


def upgrade(h, sc, src, r, role="dst"):
    """One local upgrade of the VM src runs, under scenario sc: pre_migrate,
    the target started and migrated to, post_migrate on the completion
    event, the source told to quit once stopped and the target running.
    Returns the target Vm; adds to r the migration (query-migrate on the
    source), downtime_ms, target_status and source_exit, and to r["t"] the
    host times of migrate, completed, switched, source_stopped,
    target_running and source_gone.  role: the target's name.
    source_exit is the source's exit status if it quit by itself (0: a
    clean exit), None if it had to be stopped (see Vm.quit).

    The waits take only events of this hop: src may have been the target
    of an earlier one, whose own MIGRATION "completed" (and RESUME) are
    still queued on its monitor; they are dropped before the migration
    starts, and each wait consumes the event it matched."""
    t = r["t"]
    src.mon.discard_events()
    if sc.quiesce_disk:
        pause_writer(src)
    sc.pre_migrate(h)
    dst, t["migrate"] = sc.migrate(h, src, role=role)
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed"))
    t["completed"] = hn.event_time(done)
    if done["data"]["status"] != "completed":
        raise RuntimeError("migration failed: " + str(src.mon.cmd("query-migrate")))
    # Management acts on the completion event at once; the times of the
    # other events come from their timestamps, collected after.
    sc.post_migrate(h)
    t["switched"] = time.monotonic()
    stop = src.mon.wait_event(lambda e: e["event"] == "STOP", timeout=5)
    t["source_stopped"] = hn.event_time(stop)
    if not sc.cpr:
        resume = dst.mon.wait_event(lambda e: e["event"] == "RESUME")
        t["target_running"] = hn.event_time(resume)
    else:
        # A cpr-transfer target may resume before its monitor is up (the
        # RESUME event then went nowhere): the time it was first seen running.
        t["target_running"] = wait_running(dst)
    if sc.quiesce_disk:
        resume_writer(dst)
    r["migration"] = src.mon.cmd("query-migrate")
    r["downtime_ms"] = r["migration"].get("downtime")
    r["target_status"] = dst.mon.cmd("query-status")["status"]
    r["source_exit"] = src.quit()
    t["source_gone"] = time.monotonic()
    return dst


def pause_writer(vm, timeout=20):
    """Pause the guest's writer, if it runs (SIGSTOP), and wait until
    nothing is in flight on its disk (/sys/block/vda/inflight)."""
    vm.agent.run("if pidof writer >/dev/null; then kill -STOP $(pidof writer); fi")
    deadline = time.monotonic() + timeout
    while vm.agent.run("cat /sys/block/vda/inflight").split() != ["0", "0"]:
        assert time.monotonic() < deadline, "the guest's writes did not drain"
        time.sleep(0.05)


def resume_writer(vm):
    """Let the guest's writer paused by pause_writer() go on."""
    vm.agent.run("if pidof writer >/dev/null; then kill -CONT $(pidof writer); fi")


def boot_source(h, sc, r):
    """Start the source QEMU, boot the guest, start its UDP echo."""
    t = r["t"]
    src = hn.Vm(h, "src", sc.source_net(h), sc.source_disk(h), machine=sc.machine(),
                **sc.source_disk_opts(h))
    sc.source_started(h, src)
    t["boot_start"] = time.monotonic()
    src.agent.wait_boot()
    t["booted"] = time.monotonic()
    start_echo(src)
    return src


def start_echo(vm):
    """Start the guest's UDP echo for the stream, after each boot.

    With a roomy receive buffer: the guest takes up to a few hundred ms to
    get going on a new (TCG) QEMU, or after a `cont`, and the datagrams
    queued meanwhile reach its socket in one burst; with the default ~200
    KiB a hundred or so of them were dropped there (UDP RcvbufErrors in the
    guest), a guest-side loss that says nothing about the host.  A reboot
    resets it.  Same for every scenario."""
    vm.agent.run("echo 4194304 >/proc/sys/net/core/rmem_default")
    vm.agent.run(f"udpecho {hn.ECHO_PORT} >/dev/null 2>&1 &")


def run_failed_target(h, sc, how, after=1.5, io=False):
    """A handover whose target does not take over, under the 1 kHz stream.
    how="load-fails": the target's tap has half the source's queues (on the
    same virtio-net device), so it rejects the fds and its load fails;
    how="killed": the target, started with -S so that it loads the state and
    takes the fds but does not run the guest, gets SIGKILL once the
    migration has completed.
    Then management does what it does when the target is lost: `cont` on
    the source if that is not running.  Returns what the guest's network
    did; with io, the guest's writer runs on its disk throughout as well,
    and r also has what it saw (see stop_writer), writes_at_recovery and
    writes_after (the guest's completed writes when the source ran again
    and `after` seconds later) and vhost_user_connections.  source_exit:
    the source's exit status when it quits at the end (see Vm.quit)."""
    r = {"scenario": f"{sc.name}-{how}", "t": {}}
    t = r["t"]
    sc.setup(h)
    src = boot_source(h, sc, r)
    if io:
        start_writer(src)
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(0.5)
    r["links_before"] = h.ns.links()
    r["source_tap_fds_before"] = hn.tap_fds(src.pid())
    sc.pre_migrate(h)
    if how == "load-fails":
        assert sc.queues > 1, "load-fails needs a multiqueue source"
        dst, t["migrate"] = sc.migrate(h, src, target_net=sc.target_net(h, sc.queues // 2))
    elif how == "killed":
        dst, t["migrate"] = sc.migrate(h, src, extra=["-S"])
    else:
        raise ValueError(how)
    done = src.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                              e["data"]["status"] in ("completed", "failed", "cancelled"))
    r["migration_status"] = done["data"]["status"]
    t["ended"] = hn.event_time(done)
    if how == "killed":
        # The paused target holds the handed-over fds now: kill it.
        deadline = time.monotonic() + 30
        while dst.mon.cmd("query-migrate").get("status") != "completed":
            if time.monotonic() > deadline:
                raise TimeoutError("target did not complete the incoming migration")
            time.sleep(0.01)
        r["target_tap_fds"] = hn.tap_fds(dst.pid())
        dst.proc.stop(signal.SIGKILL)
    r["target_exit"] = dst.proc.wait(30)
    dst.close()
    r["target_log"] = (h.dir / "qemu-dst.log").read_text(errors="replace")
    t["target_gone"] = time.monotonic()
    status = src.mon.cmd("query-status")["status"]
    r["source_status_after_failure"] = status
    r["cont_needed"] = status != "running"
    if r["cont_needed"]:
        src.mon.cmd("cont")
    t["source_running"] = wait_running(src)
    if io:
        r["writes_at_recovery"] = guest_writes(src)
    time.sleep(after)
    r.update(stream_figures(stream.stop()))
    r["replies_after_recovery"] = sum(1 for _, _, tr in r["arrivals"]
                                      if tr is not None and tr > t["source_running"])
    r["links_after"] = h.ns.links()
    r["source_tap_fds_after"] = hn.tap_fds(src.pid())
    r["source_network"] = src.hmp("info network")
    if io:
        r["writes_after"] = guest_writes(src)
        stop_writer(h, src, r)
        r["vhost_user_connections"] = h.qsd.connections()
    r["guest_alive_after"] = src.agent.run("echo alive").strip() == "alive"
    r["source_exit"] = src.quit()
    return r


def summarize(name, runs):
    """Median and range of the figures of several runs of one scenario."""
    out = {"scenario": name, "runs": len(runs)}
    for key in ("lost", "sent", "gap_ms", "downtime_ms", "io_stall_ms", "switch_ms",
                "first_reply_ms"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_median"] = statistics.median(vals) if vals else None
        out[f"{key}_min"] = min(vals) if vals else None
        out[f"{key}_max"] = max(vals) if vals else None
    return out
