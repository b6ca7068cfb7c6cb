"""The backend's own view of a switchover: the disk's split virtqueues,
read from the host in guest RAM while the guest writes.

The guest driver's avail idx and the daemon's used idx, sampled every
~0.5 ms from the shared RAM file (/dev/shm; guest physical address = file
offset).  Their difference is the number of requests the guest submitted
that the daemon has not completed: qemu-storage-daemon pops each kick's
requests at once, so these are requests inside the daemon (mostly in its
throttle group).  A used idx that moves while no QEMU runs the VM is the
daemon completing requests on its own.  The ring addresses come from
x-query-virtio-vhost-queue-status, which reads QEMU's own state
(x-query-virtio-queue-status would send GET_VRING_BASE, which stops the
ring).  Host clock (time.monotonic()), as the harness's event times.
"""
import dataclasses
import os
import struct
import threading
import time
from typing import Optional

from .paths import scaled

DISK = "/machine/peripheral/disk0/virtio-backend"


@dataclasses.dataclass
class IoSwitch:
    """What the rings show around a switchover (source stopped -> target
    running), host clock."""
    in_daemon_at_stop: int          # requests inside the daemon when the source stopped
    in_daemon_at_run: int           # ... when the target began to run
    completed_while_stopped: int    # completions the daemon pushed while no QEMU ran
    # The longest gap between two completions (used idx moving) of those
    # that overlap the switchover (a gap still open at the last sample
    # counts up to it), and where it began (ms after the source stopped)
    backend_stall_ms: Optional[float]
    backend_stall_at_ms: Optional[float]
    # target running -> the guest's first new request (avail idx moving):
    # the new process running the guest's I/O path again
    first_request_ms: Optional[float]
    # target running -> the daemon's first completion after it
    first_completion_ms: Optional[float]
    samples: int


class RingWatch:
    """Samples the rings of vm's disk from a thread, until stop()."""

    def __init__(self, shm, vm, path=DISK):
        nvqs = vm.mon.cmd("x-query-virtio-status", path=path)["vhost-dev"]["nvqs"]
        self.rings = []
        for q in range(nvqs):
            st = vm.mon.cmd("x-query-virtio-vhost-queue-status", path=path, queue=q)
            self.rings.append((st["avail-phys"] + 2, st["used-phys"] + 2))
        size = os.path.getsize(shm)
        assert all(a < size and u < size for a, u in self.rings), (self.rings, size)
        self.fd = os.open(shm, os.O_RDONLY)
        self.samples = []   # (host time, [in flight per queue], [used idx per queue], [avail idx])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _idx(self, off):
        return struct.unpack("<H", os.pread(self.fd, 2, off))[0]

    def _loop(self):
        while not self._stop.is_set():
            t = time.monotonic()
            used = [self._idx(u) for _, u in self.rings]
            avail = [self._idx(a) for a, _ in self.rings]
            inflight = [(a - u) & 0xffff for a, u in zip(avail, used)]
            self.samples.append((t, inflight, used, avail))
            time.sleep(0.0005)

    def stop(self):
        """Stop sampling (again: a no-op)."""
        self._stop.set()
        self._thread.join(scaled(5))
        if self.fd is not None and not self._thread.is_alive():
            os.close(self.fd)
            self.fd = None

    def at(self, t):
        """The last sample taken at or before host time t."""
        before = [s for s in self.samples if s[0] <= t]
        assert before, f"no ring sample before {t}"
        return before[-1]

    def _first_change(self, t, key):
        """Host time of the first sample after t whose key (2: used, 3:
        avail) differs from the sample at t; None if none."""
        ref = self.at(t)[key]
        return next((s[0] for s in self.samples if s[0] > t and s[key] != ref), None)

    def switch(self, stopped, running):
        """IoSwitch of the switchover from host time stopped to running."""
        _, at_stop, used_stop, _ = self.at(stopped)
        _, at_run, used_run, _ = self.at(running)
        moves = [s[0] for a, s in zip(self.samples, self.samples[1:]) if s[2] != a[2]]
        if self.samples and (not moves or moves[-1] < self.samples[-1][0]):
            moves.append(self.samples[-1][0])   # a gap still open at the end
        gaps = [(b - a, a) for a, b in zip(moves, moves[1:]) if b >= stopped and a <= running]
        stall = max(gaps, default=None)
        ms = lambda x, t0: None if x is None else (x - t0) * 1000
        return IoSwitch(
            in_daemon_at_stop=sum(at_stop), in_daemon_at_run=sum(at_run),
            completed_while_stopped=sum((b - a) & 0xffff for a, b in zip(used_stop, used_run)),
            backend_stall_ms=stall[0] * 1000 if stall else None,
            backend_stall_at_ms=ms(stall[1], stopped) if stall else None,
            first_request_ms=ms(self._first_change(running, 3), running),
            first_completion_ms=ms(self._first_change(running, 2), running),
            samples=len(self.samples))
