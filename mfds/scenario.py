"""A local upgrade (replace the VM's QEMU by a new process on the same host)
and the run that measures what the guest sees during it.

A scenario is a combination of four parts, each with its say in how the
target is started and what management does around the migration:
    network   NewTap (today: the target gets tap1, the host is switched to
              it), FallbackOpen (the same, the target's tap waiting for
              fds that never come), SourceOnlyTap (the same, the source's
              tap may hand over, the migration does not ask it to),
              TapHandover (the tap's fds handed over)
    disk      SecondExport (today: the target connects to a new export),
              TargetOnly / SourceOnly (the same, one side's property on),
              SessionHandover (the vhost-user connection handed over)
    ram       SharedFile (x-ignore-shared), CprTransfer (the cpr-transfer
              mode: RAM and fds on a cpr channel); each starts the target
              and migrates
    backend   Qsd (qemu-storage-daemon, throttled or not), Contrib
              (contrib/vhost-user-blk)
SCENARIOS names each combination once; scenario(name) builds one, with
QEMU 10.2.2 on the sides BASE_SIDES says.

The hooks, which Scenario runs on every part in that order:
    setup(h)                   host side before the source starts
    source_started(h, src)     once the source QEMU is up (e.g. configure the
                               tap it created)
    pre_migrate(h)             before the target starts (new tap, new export)
    target_started(h, dst)     once the target's monitor is up, before it
                               loads anything (e.g. see what it opened)
    post_migrate(h)            once the migration has completed (switch host)
    check(r)                   assert on run()'s figures that the run did
                               what the part is about
and what one part answers alone: the network the -netdev of each side
(source_net, target_net), the disk their vhost-user socket and the options
appended to its -chardev and -device (source_disk, target_disk,
source_disk_opts, target_disk_opts), the ram the migration itself
(migrate, machine, target_running).  Migration capabilities and parameters
are those of all parts.
"""
import json
import re
import resource
import signal
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from . import harness as hn
from . import qemutrace
from .paths import BASE_QEMU, scaled
from .result import FaultResult, RunResult, StreamFigures
from .ringwatch import RingWatch
from .ticker import Ticker, first_tick_after, start_command, tick_figures
from .verify import check_image, tap_info

WRITER_LOG = "/tmp/writer.log"
WRITER_OUT = "/tmp/writer.out"
WRITER_STATUS = "/tmp/writer.status"
# The writes the guest's writer keeps in flight (its queue depth).
WRITER_DEPTH = 32
# The throttled daemon of the vhost-user-blk scenarios (requests stay in it
# for a while: a slow backend).
THROTTLED_IOPS = 1000
# The source's vhost-user socket (the backend's first export).
SOURCE_DISK = "vub0"
# The disk's -chardev and -device options of a vhost-user-blk handover.
MIGRATE_FDS_DISK = {"disk_chardev_opts": ",migrate-fds=on",
                    "disk_device_opts": ",migrate-fds=on"}
NO_DISK_OPTS = {"disk_chardev_opts": "", "disk_device_opts": ""}


class Part:
    """What every part does unless it has a say: nothing."""
    # Migration capabilities and parameters this part needs.
    caps = {}
    params = {}
    # What stays the same on the host across the upgrade (for reports).
    kept = ""

    def setup(self, h):
        pass

    def source_started(self, h, src):
        pass

    def pre_migrate(self, h):
        pass

    def target_started(self, h, dst):
        pass

    def post_migrate(self, h):
        pass

    def check(self, r):
        pass


# Network parts: the -netdev tap of each side.

@dataclass
class Tap(Part):
    """The source's tap0, with queues queues."""
    queues: int = 1
    # The source tap's downscript (a path, or "no").
    downscript: str = "no"

    def tap_opts(self, queues=None):
        queues = self.queues if queues is None else queues
        return f",queues={queues}" if queues > 1 else ""

    def source_net(self, h):
        return (f"tap,id=n0,ifname=tap0,script=no,downscript={self.downscript}"
                f"{self.tap_opts()}")


@dataclass
class NewTap(Tap):
    """What management must do today: the target gets a new tap, tap1; once
    the migration has completed the host address moves to it and tap0
    goes."""
    host_switch = "host side switched to the new tap"

    def setup(self, h):
        h.ns.add_tap("tap0", self.queues > 1, f"{hn.HOST_IP}/{hn.PREFIXLEN}")

    def target_net(self, h, queues=None):
        return f"tap,id=n0,ifname=tap1,script=no,downscript=no{self.tap_opts(queues)}"

    def pre_migrate(self, h):
        h.ns.add_tap("tap1", self.queues > 1)

    def post_migrate(self, h):
        h.ns.batch(["link del tap0",
                    f"addr add {hn.HOST_IP}/{hn.PREFIXLEN} dev tap1"])


@dataclass
class FallbackOpen(NewTap):
    """The new tap with migrate-fds=on on the target's, and the migration
    without the migrate-fds parameter: no fds come, so the tap, which
    opened nothing at start, opens tap1 as its options say once the NIC's
    state is loaded, inside the downtime (the fallback open).  The rest is
    NewTap's: its downtime against the baseline's is the open's cost."""
    # What the target held before its load (target_started).
    waiting: Optional[tuple] = field(default=None, init=False)

    def target_net(self, h, queues=None):
        return super().target_net(h, queues) + ",migrate-fds=on"

    def target_started(self, h, dst):
        # Before the load: the tap must still be waiting, holding nothing.
        self.waiting = (tap_info(dst.hmp("info network")), hn.tap_fds(dst.pid()))

    def check(self, r):
        info, fds = self.waiting
        assert info == ["migrate-fds=on, waiting for the incoming migration"] * self.queues, info
        assert fds == [], f"the target held {fds} before the load"
        # After: it opened tap1 itself, nothing handed over; the host was
        # switched to tap1 as with NewTap.
        assert r.target_tap_fds == ["tap1"] * self.queues, r.target_tap_fds
        assert tap_info(r.target_network) == \
            ["ifname=tap1,script=no,downscript=no"] * self.queues, r.target_network
        assert list(r.links_after) == ["tap1"], r.links_after


@dataclass
class SourceOnlyTap(NewTap):
    """migrate-fds=on on the source's tap only, and the migration without
    the migrate-fds parameter (a target that does not know it: QEMU
    10.2.2): the source hands nothing over and the target gets tap1 as
    with NewTap."""

    def source_net(self, h):
        return super().source_net(h) + ",migrate-fds=on"


@dataclass
class TapHandover(Tap):
    """migrate-fds for the tap: the source QEMU creates tap0 itself (a
    non-persistent tap: it lives only as long as some process holds an fd
    of it) and the host gives it its address; the target takes over the fds
    of every queue through the migration channel, so the same interface,
    ifindex, address, neighbour entries and queued packets carry on, and
    nothing is switched on the host.  The target's -netdev names no
    interface: it can only get one by the handover (a missing handover is a
    load error, not a silently opened second tap)."""
    params = {"migrate-fds": True}
    host_switch = "nothing switched on the host"
    kept = "same tap"

    def source_net(self, h):
        return super().source_net(h) + ",migrate-fds=on"

    def source_started(self, h, src):
        h.ns.configure("tap0", f"{hn.HOST_IP}/{hn.PREFIXLEN}")

    def target_net(self, h, queues=None):
        return f"tap,id=n0,script=no,downscript=no{self.tap_opts(queues)},migrate-fds=on"


# Disk parts: the vhost-user-blk socket of each side (the source's is always
# the backend's first, SOURCE_DISK).

@dataclass
class SecondExport(Part):
    """Today's path: the target connects to a second export of the same
    block node, a new one per upgrade, so that a VM can be upgraded again
    and again: exp1 at vub1 for the first, exp2 at vub2 for the next...
    quiesced: pause the guest's writer, with nothing left in flight, across
    each upgrade (see upgrade()): today's path has a known defect of QEMU
    10.2.2 (see verify.known_second_export_defect), which strikes when
    requests are inside the daemon as the source stops; a scenario that is
    about its network, not its disk, must still complete every write."""
    quiesced: bool = False
    hops: int = field(default=0, init=False)  # upgrades started so far (pre_migrate counts them)

    def source_disk_opts(self, h):
        """Options appended to the source's disk -chardev and -device, as
        the Vm keyword arguments that take them."""
        return NO_DISK_OPTS

    def target_disk(self, h):
        return h.sock(f"vub{self.hops}")

    def target_disk_opts(self, h):
        """The same for the target."""
        return NO_DISK_OPTS

    def pre_migrate(self, h):
        self.hops += 1
        h.qsd.add_export(f"exp{self.hops}", self.target_disk(h))


@dataclass
class TargetOnly(SecondExport):
    """The vhost-user-blk property on the target only: the source (property
    off) hands over no disk, so the target's chardev, which waited for a
    handover instead of connecting, connects as today once the state is
    loaded, to a second export."""

    def target_disk_opts(self, h):
        return MIGRATE_FDS_DISK


@dataclass
class SourceOnly(SecondExport):
    """The vhost-user-blk property on the source only, and the migration
    without the migrate-fds parameter: the source hands over no disk, the
    target connects as today to a second export."""

    def source_disk_opts(self, h):
        return MIGRATE_FDS_DISK


@dataclass
class SessionHandover(Part):
    """migrate-fds for the disk: the target takes over the source's live
    vhost-user connection to the backend (the socket, and with it the rings
    the backend is processing), so there is no second export and the backend
    never sees a reconnect.  Both sides name the same socket with
    migrate-fds=on on the chardev and the device: the target's chardev does
    not connect while it waits for the incoming migration, it adopts the
    handed-over fd."""
    params = {"migrate-fds": True}
    kept = "same vhost-user connection"
    # Requests in flight at the switchover are what it is about.
    quiesced = False

    def source_disk_opts(self, h):
        return MIGRATE_FDS_DISK

    def target_disk(self, h):
        return h.sock(SOURCE_DISK)

    def target_disk_opts(self, h):
        return MIGRATE_FDS_DISK


# RAM parts: guest RAM stays in the shared file on /dev/shm; how the target
# gets it decides how the target is started and migrated to.

@dataclass
class SharedFile(Part):
    """x-ignore-shared: the target maps the same file, no RAM is sent."""
    caps = {"x-ignore-shared": True}
    cpr = False

    def machine(self):
        """Extra -machine options for both sides."""
        return ""

    def migrate(self, sc, h, src, extra, target_net, role, uri, incoming_args):
        """Scenario.migrate() says what this does."""
        mig = f"unix:{h.sock('migrate')}"
        dst = hn.Vm(h, role, target_net or sc.target_net(h), sc.target_disk(h),
                    incoming=["defer"], extra=extra, qemu=sc.target_qemu,
                    nic_queues=sc.queues if target_net else None,
                    **sc.target_disk_opts(h))
        sc.target_started(h, dst)
        for vm in (src, dst):
            vm.set_migration(sc.caps, sc.params)
        dst.mon.cmd("migrate-incoming", uri=mig, **(incoming_args or {}))
        t = time.monotonic()
        src.mon.cmd("migrate", uri=uri or mig)
        return dst, t

    def target_running(self, dst):
        """Host time at which the migrated target began to run.  A target
        whose load failed fails this at once, with its error (the source
        completed all the same: the stream had left it)."""
        ev = dst.mon.wait_event(lambda e: e["event"] == "RESUME" or
                                (e["event"] == "MIGRATION" and e["data"]["status"] == "failed"))
        if ev["event"] != "RESUME":
            raise RuntimeError(f"the target's load failed: {load_error(dst)}")
        return hn.event_time(ev)


@dataclass
class CprTransfer(Part):
    """The cpr-transfer mode: the target takes guest RAM (and, with
    migrate-fds, the fds) over a cpr channel, and opens its monitor only
    once the source has sent it."""
    cpr = True

    def machine(self):
        return ",aux-ram-share=on"

    def migrate(self, sc, h, src, extra, target_net, role, uri, incoming_args):
        # Both are arguments of the main channel's migrate / migrate-incoming,
        # which this mode replaces with its own channels.
        if uri is not None:
            raise ValueError(f"{sc.name}: no uri under cpr-transfer (its channels are fixed)")
        if incoming_args is not None:
            raise ValueError(f"{sc.name}: no incoming_args under cpr-transfer")
        # The target reads the cpr channel before it creates its devices and
        # opens its monitor, so it waits with -incoming defer for its own
        # parameters (migrate-fds) before it listens on the main channel;
        # the source connects there once the target closed the cpr channel,
        # which it does at migrate-incoming.
        cpr = {"transport": "socket", "type": "unix", "path": str(h.sock("cpr"))}
        main = [{"channel-type": "main", "addr": {**cpr, "path": str(h.sock("migrate"))}}]
        dst = hn.Vm(h, role, target_net or sc.target_net(h), sc.target_disk(h),
                    incoming=["defer", json.dumps({"channel-type": "cpr", "addr": cpr})],
                    machine=self.machine(), connect=False, extra=extra, qemu=sc.target_qemu,
                    nic_queues=sc.queues if target_net else None,
                    **sc.target_disk_opts(h))
        # No monitor to ask yet: the cpr socket appearing says it listens.
        deadline = time.monotonic() + scaled(30)
        while not h.sock("cpr").exists():
            if not dst.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError("cpr-transfer target did not open its cpr channel")
            time.sleep(0.01)
        src.set_migration(sc.caps, {**sc.params, "mode": "cpr-transfer"})
        t = time.monotonic()
        src.mon.cmd("migrate", channels=main + [{"channel-type": "cpr", "addr": cpr}])
        dst.connect()
        sc.target_started(h, dst)
        dst.set_migration(sc.caps, sc.params)
        dst.mon.cmd("migrate-incoming", channels=main)
        return dst, t

    def target_running(self, dst):
        # The target may resume before its monitor is up (the RESUME event
        # then went nowhere): the time it was first seen running.
        return wait_running(dst)


# Backend parts: what serves the disk (h.qsd), with the source's socket.

@dataclass
class Qsd(Part):
    """qemu-storage-daemon with export exp0 at the source's socket;
    iops_limit throttles it (requests stay in it: a slow backend); queues:
    the virtqueues of each export and of the disk on both sides."""
    iops_limit: Optional[int] = None
    queues: int = 1

    def setup(self, h):
        h.qsd = hn.Storage(h, h.image, self.iops_limit, self.queues)
        h.qsd.add_export("exp0", h.sock(SOURCE_DISK))


@dataclass
class Contrib(Part):
    """contrib/vhost-user-blk: it tracks its requests in an inflight region
    (F_INFLIGHT_SHMFD), which a session handover hands over too.  It
    completes each request before it reads the next message, so nothing is
    in flight at the switchover: this shows that the region comes along,
    not what a re-submission would do.  It serves one connection and exits
    when that closes."""

    def setup(self, h):
        h.qsd = hn.ContribBlk(h, h.image, h.sock(SOURCE_DISK))


@dataclass
class Scenario:
    """A local upgrade: a name and its parts.  Each hook runs on the parts in
    order (network, disk, ram, backend); see the module's docstring."""
    name: str
    network: Tap
    disk: Part
    ram: Part
    backend: Part
    # More options for the source QEMU only (e.g. a device the target lacks).
    source_extra: tuple = ()
    # The source's and the targets' QEMU binaries (None: the build's)
    source_qemu: Optional[str] = None
    target_qemu: Optional[str] = None
    # run(measure=True): the control and QEMU's trace, on every QEMU of the VM
    control: Optional["Control"] = None

    @property
    def parts(self):
        return (self.network, self.disk, self.ram, self.backend)

    @property
    def queues(self):
        return self.network.queues

    @property
    def mq(self):
        return self.queues > 1

    @property
    def cpr(self):
        return self.ram.cpr

    @property
    def caps(self):
        return {**self.ram.caps, "events": True}

    @property
    def params(self):
        return {k: v for p in self.parts for k, v in p.params.items()}

    @property
    def quiesce_disk(self):
        """Pause the guest's writer across each upgrade (see upgrade())."""
        return self.disk.quiesced

    @property
    def host_switch(self):
        """What management does on the host once the migration has
        completed (for reports)."""
        kept = [p.kept for p in self.parts if p.kept]
        return self.network.host_switch + (f" ({', '.join(kept)})" if kept else "")

    def setup(self, h):
        for p in self.parts:
            p.setup(h)

    def source_started(self, h, src):
        for p in self.parts:
            p.source_started(h, src)

    def pre_migrate(self, h):
        for p in self.parts:
            p.pre_migrate(h)

    def target_started(self, h, dst):
        for p in self.parts:
            p.target_started(h, dst)

    def post_migrate(self, h):
        for p in self.parts:
            p.post_migrate(h)

    def check(self, r):
        for p in self.parts:
            p.check(r)

    def source_net(self, h):
        return self.network.source_net(h)

    def target_net(self, h, queues=None):
        """queues: another count than the source's (the failure tests)."""
        return self.network.target_net(h, queues)

    def source_disk(self, h):
        return h.sock(SOURCE_DISK)

    @property
    def disk_queues(self):
        """The disk's virtqueues (the backend's say; 1 unless Qsd's queues)."""
        return getattr(self.backend, "queues", 1)

    def _with_disk_queues(self, opts):
        if self.disk_queues == 1:
            return opts
        return {**opts, "disk_device_opts":
                f"{opts['disk_device_opts']},num-queues={self.disk_queues}"}

    def source_disk_opts(self, h):
        return self._with_disk_queues(self.disk.source_disk_opts(h))

    def target_disk(self, h):
        return self.disk.target_disk(h)

    def target_disk_opts(self, h):
        return self._with_disk_queues(self.disk.target_disk_opts(h))

    def machine(self):
        return self.ram.machine()

    def migrate(self, h, src, extra=(), target_net=None, role="dst", uri=None,
                incoming_args=None):
        """Start the target and the migration; return the target Vm and the
        host time of the migrate command.  extra, target_net: a different
        target (extra QEMU options, another -netdev on the source's
        virtio-net device) for the failure tests.  role: the target's name
        (its logs and agent socket), a new one per upgrade when a VM is
        upgraded repeatedly.  uri: where the source migrates to instead of
        the target's socket (a Proxy's); incoming_args: more
        migrate-incoming arguments (e.g. exit-on-error).  Neither under
        cpr-transfer, which refuses them (ValueError)."""
        return self.ram.migrate(self, h, src, extra, target_net, role, uri, incoming_args)

    def target_running(self, dst):
        return self.ram.target_running(dst)


# Name -> parts (network, disk, ram, backend), for scenario(), bench.py and
# demo.py.  The parts here are templates: scenario() gives each scenario
# its own copies, which keep its state (e.g. the upgrades so far).
SCENARIOS = {
    # What management must do today: a new tap and a second export.
    "baseline": (NewTap(), SecondExport(), SharedFile(), Qsd()),
    # The same with both QEMUs unpatched (BASE_SIDES): what the series
    # costs when nothing hands fds over.
    "baseline-10.2.2": (NewTap(), SecondExport(), SharedFile(), Qsd()),
    "baseline-cpr": (NewTap(), SecondExport(), CprTransfer(), Qsd()),
    # The baseline with the tap opened inside the downtime.
    "tap-fallback-open": (FallbackOpen(), SecondExport(), SharedFile(), Qsd()),
    # The disk's figures of the vhost-user-blk handover compare with the
    # baseline's on the same (throttled) daemon.
    "baseline-throttled": (NewTap(), SecondExport(), SharedFile(), Qsd(THROTTLED_IOPS)),
    "tap-migrate-fds": (TapHandover(), SecondExport(quiesced=True), SharedFile(), Qsd()),
    "tap-migrate-fds-cpr": (TapHandover(), SecondExport(quiesced=True), CprTransfer(), Qsd()),
    # The daemon throttled, so that requests are inside it at the
    # switchover: the case in which today's path loses completions.
    "vhost-user-blk-migrate-fds": (TapHandover(), SessionHandover(), SharedFile(),
                                   Qsd(THROTTLED_IOPS)),
    "vhost-user-blk-migrate-fds-cpr": (TapHandover(), SessionHandover(), CprTransfer(),
                                       Qsd(THROTTLED_IOPS)),
    "vhost-user-blk-migrate-fds-contrib": (TapHandover(), SessionHandover(), SharedFile(),
                                           Contrib()),
    "vhost-user-blk-target-only": (TapHandover(), TargetOnly(quiesced=True), SharedFile(),
                                   Qsd()),
    # Between QEMU 10.2.2 and the series, with the devices' migrate-fds on
    # on the series' side (BASE_SIDES): the first upgrade onto the series
    # (its tap and disk wait, nothing comes, they open as today) and a
    # return to 10.2.2 (nothing handed over: the stream of 10.2.2).
    "upgrade-from-10.2.2": (FallbackOpen(), TargetOnly(quiesced=True), SharedFile(), Qsd()),
    "downgrade-to-10.2.2": (SourceOnlyTap(), SourceOnly(quiesced=True), SharedFile(), Qsd()),
}


# The scenarios with a side whose QEMU is QEMU 10.2.2 as the series found
# it (paths.BASE_QEMU): "source", "target" or both.
BASE_SIDES = {"baseline-10.2.2": ("source", "target"),
              "upgrade-from-10.2.2": ("source",),
              "downgrade-to-10.2.2": ("target",)}


def scenario(name, queues=1, disk_queues=1):
    """A new scenario of SCENARIOS; queues: the tap's; disk_queues: the
    disk's virtqueues, for a qemu-storage-daemon backend (ValueError for
    another: contrib/vhost-user-blk serves one)."""
    network, disk, ram, backend = SCENARIOS[name]
    if disk_queues != 1:
        if not isinstance(backend, Qsd):
            raise ValueError(f"{name}: disk_queues={disk_queues} needs qemu-storage-daemon")
        backend = replace(backend, queues=disk_queues)
    base = BASE_SIDES.get(name, ())
    return Scenario(name, replace(network, queues=queues), replace(disk), replace(ram),
                    replace(backend),
                    source_qemu=BASE_QEMU if "source" in base else None,
                    target_qemu=BASE_QEMU if "target" in base else None)


class Control:
    """What run(measure=True) adds to each QEMU of the VM: the guest's
    ticker on a debugcon port of its own (a control for the network gap
    that needs no network and nothing handed over; ticker=False: none) and
    QEMU's trace of its downtime (qemutrace.DOWNTIME_EVENTS, a few dozen
    lines)."""

    def __init__(self, h, ticker=True):
        self.h = h
        self.ticker = ticker
        self.tickers = {}
        self.rings = None

    def trace_log(self, role):
        return self.h.dir / f"trace-{role}.log"

    def qemu_args(self, role):
        """The options of the QEMU of role, whose records it starts taking."""
        if not self.ticker:
            return qemutrace.trace_args(self.trace_log(role))
        self.tickers[role] = Ticker(self.h, role)
        return [*self.tickers[role].qemu_args(),
                *qemutrace.trace_args(self.trace_log(role))]

    def start(self, vm):
        """Start the ticker in the guest (SCHED_FIFO, so that no other guest
        process delays it) and wait for its first 100 ticks."""
        if not self.ticker:
            return
        vm.agent.run(start_command(rtprio=50))
        self.tickers[vm.role].wait_ticks(100)

    def watch_rings(self, vm):
        """Watch the disk's rings in guest RAM, in the shared file
        (ringwatch: the backend's view of the switchover).  Its polling
        thread costs CPU: only for the runs that report it
        (run(watch_rings=True))."""
        self.rings = RingWatch(self.h.shm, vm)
        self.h.stack.callback(self.rings.stop)

    def figures(self, r, src, dst):
        """Set in r what the ticks and the traces of the upgrade from role
        src to role dst say (call once src has quit)."""
        if self.ticker:
            self.tick_figures(r, src, dst)
        self.trace_figures(r, src, dst)

    def tick_figures(self, r, src, dst):
        self.tickers[src].wait_closed()
        ticks = tick_figures(self.tickers[src], self.tickers[dst])
        r.tick_gap_ms = ticks.gap_ms
        r.ticks_lost = ticks.lost
        running = r.t["target_running"]
        first = first_tick_after(self.tickers[dst], running)
        r.first_tick_ms = (first - running) * 1000 if first is not None else None
        if r.first_reply_ms is not None and r.first_tick_ms is not None:
            r.net_rest_ms = r.first_reply_ms - r.first_tick_ms

    def trace_figures(self, r, src, dst):
        save = qemutrace.downtime(self.trace_log(src), "save")
        load = qemutrace.downtime(self.trace_log(dst), "load")
        for key, value in qemutrace.figures(save, load).items():
            setattr(r, key, value)
        if self.rings:
            self.ring_figures(r)

    def ring_figures(self, r):
        self.rings.stop()
        io = self.rings.switch(r.t["source_stopped"], r.t["target_running"])
        r.in_daemon_at_stop = io.in_daemon_at_stop
        r.completed_while_stopped = io.completed_while_stopped
        r.backend_stall_ms, r.backend_stall_at_ms = io.backend_stall_ms, io.backend_stall_at_ms
        r.first_request_ms = io.first_request_ms
        r.first_completion_ms = io.first_completion_ms


def stream_figures(s):
    """Sent, lost and the longest gap between replies (ms), plus the
    per-sequence arrivals for plots, of the stream's record s (Stream.stop())."""
    sent_t, recv = s["sent_t"], s["recv"]
    times = sorted(recv.values())
    gaps = [(b - a, a) for a, b in zip(times, times[1:])]
    gap, gap_at = max(gaps) if gaps else (0.0, None)
    return StreamFigures(
        sent=len(sent_t),
        received=len(recv),
        lost=len(sent_t) - len(recv),
        gap_ms=gap * 1000,
        gap_at=gap_at,
        host_drops=s.get("rcvbuf_errors"),
        arrivals=[(seq, t, recv.get(seq)) for seq, t in enumerate(sent_t)],
    )


def load_error(vm):
    """The last line of the log of vm, whose incoming migration failed
    (QEMU's error; vm may have exited, so not query-migrate)."""
    vm.proc.wait(2)
    lines = Path(vm.proc.log).read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(its log is empty)"


def wait_running(vm, timeout=30):
    """Host time at which vm was first seen running."""
    deadline = time.monotonic() + scaled(timeout)
    while vm.mon.cmd("query-status")["status"] != "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{vm.role} not running after {scaled(timeout)}s")
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


def run(h, sc, settle=1.0, after=2.0, measure=False, watch_rings=False, ticker=True):
    """Boot the VM under scenario sc in harness h, start the stream and the
    writer, do the local upgrade, and return the figures (a RunResult).

    settle: seconds of steady traffic and I/O before the migration;
    after: seconds after the switch before the stream and writer stop;
    measure: also the ticker's and QEMU's trace's figures (Control);
    watch_rings (with measure): also the backend's view of the disk
    (ringwatch.IoSwitch); ticker=False (with measure): no guest ticker
    (its 1 kHz real-time wake-ups on the guest's one TCG vCPU keep the
    writer from queueing requests in the daemon).
    """
    r = RunResult(scenario=sc.name, multi_queue=sc.mq)
    t = r.t
    if measure:
        sc.control = Control(h, ticker=ticker)
    sc.setup(h)
    src = boot_source(h, sc, r)
    if sc.control:
        sc.control.start(src)
    start_writer(src)
    if sc.control and watch_rings:
        sc.control.watch_rings(src)
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(settle)

    r.links_before = h.ns.links()
    r.source_tap_fds = hn.tap_fds(src.pid())
    dst = upgrade(h, sc, src, r)
    # The host's interfaces once the source is gone, and who holds them.
    r.links_after = h.ns.links()
    r.target_tap_fds = hn.tap_fds(dst.pid())
    r.target_network = dst.hmp("info network")
    r.target_vhost_protocol = vhost_protocol(dst)

    # Writes the guest has completed so far (a guest counter, so it carried
    # over): the writer must go on adding to it on the target.
    r.writes_at_switch = guest_writes(dst)
    r.records_at_switch = guest_records_written(dst)
    time.sleep(after)
    t["stream_stopping"] = time.monotonic()
    r.set_stream(stream_figures(stream.stop()))
    r.writes_after = guest_writes(dst)
    # Where the longest gap goes: the switch itself (source stopped ->
    # target running) and the new process getting going (target running ->
    # the first reply it sends), which under TCG is mostly translating the
    # guest's code afresh.
    after = [tr for _, _, tr in r.arrivals if tr is not None and tr >= t["target_running"]]
    r.switch_ms = (t["target_running"] - t["source_stopped"]) * 1000
    r.first_reply_ms = (min(after) - t["target_running"]) * 1000 if after else None
    t["stream_stopped"] = time.monotonic()
    if sc.control:
        sc.control.figures(r, "src", "dst")
    stop_writer(h, dst, r)
    r.guest_alive_after = dst.agent.run("echo alive").strip() == "alive"
    r.vhost_user_connections = h.qsd.connections()
    r.backend_panics = h.qsd.panics()
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
    on now) and set in r (a RunResult or FaultResult) what it saw: writer
    (its status line), writer_stuck, records, io_lost, io_errors,
    io_stall_ms, io_stalls, lost_seqs (the records whose write never
    completed), and the host's check of the image: records_verified,
    bad_records, bytes_verified (records of run id run, as start_writer
    was given)."""
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
    r.writer = w
    r.writer_stuck = w["state"] != "final"
    r.records = int(w["records"])
    r.io_lost = int(w["lost"])
    r.io_errors = int(w["errors"])
    r.io_stall_ms = float(w["max_stall_ms"])
    # Every completion gap over 20 ms (guest clock, ms since the writer
    # started): shows whether the worst stall is one outage or several.
    out = vm.agent.run(f"awk 'NR > 1 && $2 - p > 20000 {{ print p / 1000, ($2 - p) / 1000 }} "
                       f"{{ p = $2 }}' {WRITER_LOG}", check=False)
    r.io_stalls = [tuple(map(float, ln.split())) for ln in out.splitlines()
                      if re.fullmatch(r"[0-9.]+ [0-9.]+", ln.strip())]
    # Which writes never completed: the records the writer submitted that
    # its completion log lacks (the first 1000).
    out = vm.agent.run(f"awk -v n={r.records} '{{ done[$1] = 1 }} END {{ "
                       f"for (i = 0; i < n && k < 1000; i++) if (!(i in done)) {{ print i; k++ }} }}' "
                       f"{WRITER_LOG}", check=False)
    r.lost_seqs = [int(ln) for ln in out.split() if ln.isdigit()]
    good, bad = check_image(h.image, r.records, run)
    r.records_verified = good
    r.bad_records = bad
    r.bytes_verified = good * 4096


def upgrade(h, sc, src, r, role="dst"):
    """One local upgrade of the VM src runs, under scenario sc: pre_migrate,
    the target started and migrated to, post_migrate on the completion
    event, the source told to quit once stopped and the target running.
    Returns the target Vm; sets in r (a RunResult) the migration
    (query-migrate on the source), downtime_ms, target_status and
    source_exit, and in r.t the host times of migrate, completed,
    switched, source_stopped, target_running and source_gone.  role: the
    target's name.
    source_exit is the source's exit status if it quit by itself (0: a
    clean exit), None if it had to be stopped (see Vm.quit).

    The waits take only events of this hop: src may have been the target
    of an earlier one, whose own MIGRATION "completed" (and RESUME) are
    still queued on its monitor; they are dropped before the migration
    starts, and each wait consumes the event it matched."""
    t = r.t
    src.mon.discard_events()
    if sc.quiesce_disk:
        pause_writer(src)
    sc.pre_migrate(h)
    extra = sc.control.qemu_args(role) if sc.control else ()
    dst, t["migrate"] = sc.migrate(h, src, extra=extra, role=role)
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
    t["target_running"] = sc.target_running(dst)
    if sc.quiesce_disk:
        resume_writer(dst)
    r.migration = src.mon.cmd("query-migrate")
    r.downtime_ms = r.migration.get("downtime")
    r.total_ms = r.migration.get("total-time")
    r.target_status = dst.mon.cmd("query-status")["status"]
    r.source_exit = src.quit()
    t["source_gone"] = time.monotonic()
    return dst


def pause_writer(vm, timeout=20):
    """Pause the guest's writer, if it runs (SIGSTOP), and wait until
    nothing is in flight on its disk (/sys/block/vda/inflight)."""
    vm.agent.run("if pidof writer >/dev/null; then kill -STOP $(pidof writer); fi")
    deadline = time.monotonic() + scaled(timeout)
    while vm.agent.run("cat /sys/block/vda/inflight").split() != ["0", "0"]:
        assert time.monotonic() < deadline, "the guest's writes did not drain"
        time.sleep(0.05)


def resume_writer(vm):
    """Let the guest's writer paused by pause_writer() go on."""
    vm.agent.run("if pidof writer >/dev/null; then kill -CONT $(pidof writer); fi")


def boot_source(h, sc, r):
    """Start the source QEMU, boot the guest, start its UDP echo; the
    times of the boot go to r.t."""
    t = r.t
    extra = [*sc.source_extra, *(sc.control.qemu_args("src") if sc.control else ())]
    src = hn.Vm(h, "src", sc.source_net(h), sc.source_disk(h), machine=sc.machine(),
                extra=extra, qemu=sc.source_qemu, **sc.source_disk_opts(h))
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


# Where a fault strikes in a handover (run_fault()), in order:
#   before-send  the source stopped the VM and waits before it sends any
#                device state (pause-before-switchover): no fd sent yet
#   sent         the source sent everything, fds included, and completed;
#                the stream is held (Proxy) before the first fd reaches
#                the target
#   load         the target took every fd, its load waits for the rest of
#                the stream (Proxy); or the load fails on its own (below)
#   loaded       the target (-S) loaded the state and took the fds, and
#                does not run the guest
#   running      right after `cont` on that target
POINTS = ("before-send", "sent", "load", "loaded", "running")
# What strikes: a SIGKILL of either QEMU, `migrate_cancel` on the source,
# the migration socket closed from outside (Proxy.cut()), and at "load"
# only, a load that fails by itself: load-fails (a device the target
# lacks, whose state comes after the NIC's and the disk's: the target
# took the tap and the session first), nic-rejects (the target's tap has
# half the queues: virtio-net rejects the stream), out-of-fds (the
# target's RLIMIT_NOFILE leaves room for one fd of those handed over: the
# kernel drops the rest, MSG_CTRUNC).
FAULTS = ("target-kill", "source-kill", "cancel", "socket-closed", "load-fails",
          "nic-rejects", "out-of-fds")
# The device of load-fails, on the source only (it has migration state,
# and the guest has no use for it).
LOAD_FAILS_DEVICE = ("-device", "i6300esb")


def _migration_event(vm, *states, timeout=60):
    return vm.mon.wait_event(lambda e: e["event"] == "MIGRATION" and
                             e["data"]["status"] in states, timeout=timeout)


def _status(vm):
    """vm's run state, or None once its process is gone."""
    if not vm.proc.alive():
        return None
    try:
        return vm.mon.cmd("query-status")["status"]
    except Exception:
        if vm.proc.wait(5) is not None:
            return None
        raise


def _target_fate(dst, timeout=30):
    """Wait until the target's incoming migration is decided: "dead" (its
    process is gone), "failed" (its load failed, it lives on:
    exit-on-error off) or "loaded"."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        if not dst.proc.alive():
            return "dead"
        try:
            status = dst.mon.cmd("query-migrate").get("status")
        except Exception:
            if dst.proc.wait(5) is not None:
                return "dead"
            raise
        if status in ("completed", "failed"):
            return "loaded" if status == "completed" else "failed"
        if time.monotonic() > deadline:
            raise TimeoutError(f"the target's incoming migration is still {status}")
        time.sleep(0.02)


def run_fault(h, sc, point, fault, after=1.5, io=False, keep_failed_target=True):
    """A handover under scenario sc that a fault strikes at point (POINTS,
    FAULTS above), with the 1 kHz stream (and with io, the guest's
    writer) running throughout; then management does what it must: the
    target goes on if it loaded the state and lives (`cont` if it was
    started with -S), else the source does (`cont` if it is not running),
    unless the guest ran on the target, which then may not run on the
    source any more (a guest that ran on both sides is corrupt): no QEMU
    runs it, the "none" outcome.

    keep_failed_target: a target whose load fails stays (exit-on-error
    off), so that what it still holds can be seen before it is told to
    quit; else it exits as by default.

    Returns r, a FaultResult: outcome ("source", "target" or "none"), running (the roles
    that run the guest once it is decided), migration_status (the
    source's), target_fate, what each side held (tap fds and fd counts,
    before the attempt, at the point, after), what the survivor's guest
    did afterwards (the stream's figures, replies_after_recovery,
    late_losses: datagrams sent after its first reply that got none;
    with io, stop_writer's figures, writes_at_recovery, writes_after and
    vhost_user_connections) and each process's exit status (survivor_exit, source_exit,
    target_exit: 0 for a clean quit, see Vm.quit; -9 for a SIGKILL)."""
    assert point in POINTS and fault in FAULTS, (point, fault)
    own = fault in ("load-fails", "nic-rejects", "out-of-fds")
    assert point == "load" or not own, f"{fault} strikes at load"
    r = FaultResult(scenario=f"{sc.name}-{point}-{fault}", point=point, fault=fault)
    t = r.t
    if fault == "load-fails":
        sc.source_extra = LOAD_FAILS_DEVICE
    sc.setup(h)
    src = boot_source(h, sc, r)
    if io:
        start_writer(src)
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(0.5)
    if io and sc.quiesce_disk:
        pause_writer(src)
    r.links_before = h.ns.links()
    r.source_tap_fds_before = hn.tap_fds(src.pid())
    r.source_fds_before = hn.proc_usage(src.pid())["fds"]
    r.tap_txqlen = next(l["txqlen"] for l in json.loads(h.ns.ip("-j", "link", "show"))
                           if l["ifname"] == "tap0")
    t["attempt"] = time.monotonic()
    sc.pre_migrate(h)

    proxy = None
    if fault == "socket-closed" or (point in ("sent", "load") and not own):
        proxy = hn.Proxy(h, h.sock("migrate"), hold=None if point == "before-send" else point)
    # out-of-fds: the target's limit is set where the source waits, its
    # migration connection open, before any fd comes.
    pause = point == "before-send" or fault == "out-of-fds"
    if pause:
        src.set_migration({"pause-before-switchover": True}, {})
    started = sc.target_started

    def target_started(h, dst):
        r.target_fds_at_start = hn.proc_usage(dst.pid())["fds"]
        r.target_fd_kinds_at_start = hn.fd_kinds(dst.pid())
        started(h, dst)

    sc.target_started = target_started
    try:
        dst, t["migrate"] = sc.migrate(
            h, src, extra=["-S"] if point in ("loaded", "running") else [],
            target_net=sc.target_net(h, sc.queues // 2) if fault == "nic-rejects" else None,
            uri=proxy.uri if proxy else None,
            incoming_args={"exit-on-error": False} if keep_failed_target else None)
    finally:
        del sc.target_started

    def kill(vm):
        vm.proc.stop(signal.SIGKILL)

    if pause:
        ev = _migration_event(src, "pre-switchover", "failed")
        assert ev["data"]["status"] == "pre-switchover", src.mon.cmd("query-migrate")
        t["source_stopped"] = hn.event_time(src.mon.wait_event(lambda e: e["event"] == "STOP",
                                                              timeout=5))
        r.target_tap_fds_at_point = hn.tap_fds(dst.pid())
        if fault == "target-kill":
            kill(dst)
        elif fault == "source-kill":
            kill(src)
        elif fault == "cancel":
            src.mon.cmd("migrate_cancel")
        elif fault == "socket-closed":
            proxy.wait_forwarded()
            proxy.cut()
        elif fault == "out-of-fds":
            n = hn.proc_usage(dst.pid())["fds"]
            _, hard = resource.prlimit(dst.pid(), resource.RLIMIT_NOFILE)
            resource.prlimit(dst.pid(), resource.RLIMIT_NOFILE, (n + 1, hard))
            r.target_fd_limit = n + 1
        if fault not in ("cancel", "source-kill"):
            src.mon.cmd("migrate-continue", state="pre-switchover")
    if src.proc.alive():
        done = _migration_event(src, "completed", "failed", "cancelled")
        r.migration_status = done["data"]["status"]
        t["ended"] = hn.event_time(done)
    if "source_stopped" not in t and src.proc.alive():
        t["source_stopped"] = hn.event_time(src.mon.wait_event(lambda e: e["event"] == "STOP",
                                                              timeout=5))
    if proxy and proxy.hold:
        proxy.wait_held()
        r.target_tap_fds_at_point = hn.tap_fds(dst.pid())
        r.fds_in_stream = proxy.fds_sent
        r.fds_forwarded_at_point = proxy.fds_forwarded
        if fault in ("target-kill", "source-kill"):
            kill(dst if fault == "target-kill" else src)
        elif fault == "cancel":
            r.cancel_reply = src.mon.cmd("migrate_cancel")
        if fault in ("target-kill", "socket-closed"):
            proxy.cut()
        else:
            proxy.release()
    elif point in ("loaded", "running"):
        fate = _target_fate(dst)
        assert fate == "loaded", f"the -S target: {fate}"
        r.target_tap_fds_at_point = hn.tap_fds(dst.pid())
        if point == "running":
            dst.mon.cmd("cont")
            dst.mon.wait_event(lambda e: e["event"] == "RESUME")
        if fault in ("target-kill", "source-kill"):
            kill(dst if fault == "target-kill" else src)
        elif fault == "cancel":
            r.cancel_reply = src.mon.cmd("migrate_cancel")
        else:
            raise ValueError(f"{fault} at {point}")
    # Compatibility: the target's tap fds when the fault struck.
    r.target_tap_fds = r.target_tap_fds_at_point

    # Management decides from what the target did.
    r.target_fate = fate = _target_fate(dst)
    if fate == "failed":
        r.target_error = dst.mon.cmd("query-migrate").get("error-desc")

    def kept_by_failed_target():
        """What a failed load left the target holding, once it has let go
        of the migration connection (its cleanup follows the failure; up
        to 2 s for it)."""
        deadline = time.monotonic() + scaled(2)
        while True:
            r.failed_target_tap_fds = hn.tap_fds(dst.pid())
            r.failed_target_fds = hn.proc_usage(dst.pid())["fds"]
            if (not r.failed_target_tap_fds and
                    r.failed_target_fds <= r.target_fds_at_start) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        r.failed_target_status = _status(dst)
        # What it holds that it did not when it started.
        kept = list(hn.fd_kinds(dst.pid()))
        for k in r.target_fd_kinds_at_start:
            if k in kept:
                kept.remove(k)
        r.failed_target_kept = kept

    def finish(vm):
        """Quit a QEMU that does not run the guest (or reap a dead one)."""
        code = vm.quit() if vm.proc.alive() else vm.proc.wait(30)
        vm.close()
        return code

    if fate == "loaded" and _status(dst) is not None:
        vm, r.outcome = dst, "target"
        if _status(dst) != "running":
            dst.mon.cmd("cont")
    elif point == "running" or _status(src) is None:
        vm, r.outcome = None, "none"
        # The source must not resume on its own: give it the time to.
        time.sleep(1.0)
    else:
        vm, r.outcome = src, "source"
        # A target that is still there once its load failed can never run
        # the guest: the source goes on at once (the outage stays short),
        # the failed target quits after (beside the running source); any
        # other is gone first, as management makes sure.
        if fate != "failed":
            r.target_exit = finish(dst)
        status = _status(src)
        r.source_status_after_failure = status
        r.cont_needed = status != "running"
        if r.cont_needed:
            src.mon.cmd("cont")
        if fate == "failed":
            kept_by_failed_target()
            r.target_exit = finish(dst)
    if vm is not None:
        t["survivor_running"] = wait_running(vm)
    r.statuses = {"src": _status(src), "dst": _status(dst)}
    r.running = sorted(k for k, v in r.statuses.items() if v == "running")
    if vm is not src:
        r.source_exit = finish(src)
    # (A source that goes on had its target quit above.)
    if vm is None:
        r.target_exit = finish(dst)
    r.target_log = (h.dir / "qemu-dst.log").read_text(errors="replace")
    if vm is src:
        t["source_running"] = t["survivor_running"]
    if vm is not None and io:
        if sc.quiesce_disk:
            resume_writer(vm)
        r.writes_at_recovery = guest_writes(vm)
    time.sleep(after)
    r.set_stream(stream_figures(stream.stop()))
    r.links_after = h.ns.links()
    if io:
        r.vhost_user_connections = h.qsd.connections()
    if vm is None:
        return r
    after_t = [tr for _, _, tr in r.arrivals if tr is not None and tr > t["survivor_running"]]
    r.replies_after_recovery = len(after_t)
    first = min(after_t, default=None)
    r.late_losses = [seq for seq, ts, tr in r.arrivals
                        if tr is None and (first is None or ts > first)]
    r.early_losses = [seq for seq, ts, tr in r.arrivals if tr is None and ts < t["attempt"]]
    # While no QEMU reads the tap, its queue (txqlen packets, at 1 kHz as
    # many ms) holds the stream; only once it is full may datagrams go.
    # Lost earlier in the outage: something read them and lost them.
    if "source_stopped" in t:
        full = t["source_stopped"] + 0.9 * r.tap_txqlen / 1000
        r.outage_losses_before_full = [seq for seq, ts, tr in r.arrivals
                                          if tr is None and t["attempt"] <= ts < full]
    r.survivor_tap_fds = hn.tap_fds(vm.pid())
    r.survivor_network = vm.hmp("info network")
    if vm is src:
        r.source_tap_fds_after = r.survivor_tap_fds
        r.source_network = r.survivor_network
    if io:
        r.writes_after = guest_writes(vm)
        stop_writer(h, vm, r)
        r.vhost_user_connections = h.qsd.connections()
    r.guest_alive_after = vm.agent.run("echo alive").strip() == "alive"
    r.survivor_fds = hn.proc_usage(vm.pid())["fds"]
    r.survivor_exit = vm.quit()
    if vm is src:
        r.source_exit = r.survivor_exit
    return r


def run_failed_target(h, sc, how, after=1.5, io=False):
    """A handover whose target does not take over, under the 1 kHz stream
    (run_fault() with the target exiting as by default).
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
    if how == "load-fails":
        assert sc.queues > 1, "load-fails needs a multiqueue source"
        point, fault = "load", "nic-rejects"
    elif how == "killed":
        point, fault = "loaded", "target-kill"
    else:
        raise ValueError(how)
    r = run_fault(h, sc, point, fault, after=after, io=io, keep_failed_target=False)
    assert r.outcome == "source", r.outcome
    r.scenario = f"{sc.name}-{how}"
    return r


def summarize(name, runs):
    """Median and range of the figures of several runs of one scenario."""
    out = {"scenario": name, "runs": len(runs)}
    keys = ["lost", "sent", "gap_ms", "downtime_ms", "io_stall_ms", "switch_ms",
            "first_reply_ms"]
    # and every other figure that is a number
    keys += sorted({k for r in runs for k, v in r.items() if k not in keys and
                    isinstance(v, (int, float)) and not isinstance(v, bool)})
    for key in keys:
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_median"] = statistics.median(vals) if vals else None
        out[f"{key}_min"] = min(vals) if vals else None
        out[f"{key}_max"] = max(vals) if vals else None
    return out
