"""QEMU's own account of a migration's downtime, from its trace events.

QEMU 10.2 times every section it saves or loads while the VM is stopped
(vmstate_downtime_save/_load, in microseconds) and marks the steps of the
switchover (vmstate_downtime_checkpoint).  With `-msg timestamp=on` each
line of the log (-D) carries the wall-clock time it was written at, which
also times a VMState description's load (vmstate_load_state ... _end):
that is how long the handover's own state takes, nested in its device's.

The per-vmsd events are many (one per VMState description loaded), and
writing them lengthens the load they time: VMSD_EVENTS is for a run that
looks at the handover's state, DOWNTIME_EVENTS for one that measures.
"""
import dataclasses
import datetime
import re
from typing import Optional

DOWNTIME_EVENTS = ("vmstate_downtime_save", "vmstate_downtime_load",
                   "vmstate_downtime_checkpoint")
VMSD_EVENTS = ("vmstate_load_state", "vmstate_load_state_end")

# "2026-12-02T13:40:51.859481Z <event> <args>"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) (\w+) (.*)$")
_DOWNTIME = re.compile(r"type=([\w-]+) idstr=(\S+) instance_id=(\d+) downtime=(-?\d+)")


def trace_args(log, events=DOWNTIME_EVENTS):
    """QEMU arguments that write @events, timestamped, into @log."""
    args = ["-msg", "timestamp=on", "-D", str(log)]
    for e in events:
        args += ["-trace", e]
    return args


def _time(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _events(log):
    """(time in s, event, args) of each trace line of @log."""
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if m:
                yield _time(m.group(1)), m.group(2), m.group(3)


@dataclasses.dataclass
class Downtime:
    """One side's account of the switchover, from its log."""
    sections_us: dict      # (type, idstr, instance_id) -> µs that section took
    checkpoints: dict      # checkpoint name -> time (s, epoch)

    def section_us(self, pattern):
        """µs of the sections whose idstr matches @pattern (a regex), summed."""
        return sum(us for (_, idstr, _), us in self.sections_us.items()
                   if re.search(pattern, idstr))

    def span_ms(self, first, last):
        """ms from checkpoint @first to @last; None if either is missing."""
        if first not in self.checkpoints or last not in self.checkpoints:
            return None
        return (self.checkpoints[last] - self.checkpoints[first]) * 1000


def downtime(log, side):
    """Parse the vmstate_downtime_* events of @log; side: "save" or "load"."""
    sections, checkpoints = {}, {}
    for t, ev, args in _events(log):
        if ev == f"vmstate_downtime_{side}":
            m = _DOWNTIME.match(args)
            if m:
                key = (m.group(1), m.group(2), int(m.group(3)))
                sections[key] = sections.get(key, 0) + int(m.group(4))
        elif ev == "vmstate_downtime_checkpoint":
            checkpoints.setdefault(args.strip(), t)
    return Downtime(sections, checkpoints)


@dataclasses.dataclass
class Switchover:
    """Where the switchover's time goes, from the checkpoints of both sides
    (one host clock), ms; None where a checkpoint is missing.

    stop: the source stops the VM (src-downtime-start -> src-vm-stopped;
    today's path stops the vhost-user vrings here).  stream: the source
    saves the devices' state and the target loads it (-> dst-precopy-
    loadvm-completed).  The target sets the pace: each virtio device's
    state is ~46 KB (QEMU saves arrays of VIRTIO_QUEUE_MAX queues), so the
    stream outgrows the socket's buffer and the source's save waits for the
    target's load; the source's per-section save times include that wait,
    the target's load times do not.  start: the target starts the VM
    (-> dst-precopy-bh-vm-started; today's path sets the vhost-user
    session up again here).  switch: their sum."""
    stop_ms: Optional[float]
    stream_ms: Optional[float]
    start_ms: Optional[float]

    @property
    def switch_ms(self):
        parts = (self.stop_ms, self.stream_ms, self.start_ms)
        return None if None in parts else sum(parts)


def switchover(save, load):
    """Switchover of the source's Downtime save and the target's load."""
    def span(a, first, b, last):
        if first not in a.checkpoints or last not in b.checkpoints:
            return None
        return (b.checkpoints[last] - a.checkpoints[first]) * 1000
    return Switchover(
        stop_ms=span(save, "src-downtime-start", save, "src-vm-stopped"),
        stream_ms=span(save, "src-vm-stopped", load, "dst-precopy-loadvm-completed"),
        start_ms=span(load, "dst-precopy-loadvm-completed", load, "dst-precopy-bh-vm-started"))


def figures(save, load):
    """What a run records of the source's Downtime save and the target's
    load (RunResult and ScaleResult have these fields): every section and
    the virtio-net and vhost-user-blk ones, in µs; the switch's steps, ms."""
    steps = switchover(save, load)
    return {"save_us": sum(save.sections_us.values()),
            "load_us": sum(load.sections_us.values()),
            "nic_save_us": save.section_us("/virtio-net$"),
            "nic_load_us": load.section_us("/virtio-net$"),
            "disk_save_us": save.section_us("/vhost-user-blk$"),
            "disk_load_us": load.section_us("/vhost-user-blk$"),
            "stop_ms": steps.stop_ms, "stream_ms": steps.stream_ms,
            "start_ms": steps.start_ms, "traced_switch_ms": steps.switch_ms}


def vmsd_loads_us(log, name):
    """µs each outermost load of VMState description @name took, in order
    (nested loads of the same name count in their parent's)."""
    spans, depth, start = [], 0, None
    for t, ev, args in _events(log):
        vmsd = args.split(" ", 1)[0]
        if vmsd != name:
            continue
        if ev == "vmstate_load_state":
            if depth == 0:
                start = t
            depth += 1
        elif ev == "vmstate_load_state_end" and depth:
            depth -= 1
            if depth == 0:
                spans.append((t - start) * 1e6)
    return spans
