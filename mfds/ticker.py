"""The guest's ticker (tests/e2e/guest/ticker.c) seen from the host: a
control for the network gap of a local upgrade that needs no network.

The guest writes "t<slot>\\n" every millisecond to an isa-debugcon port.
Each QEMU of the VM sends what its debugcon gets to its own unix socket,
on which a Ticker listens; the records of the source and of the target,
timestamped on arrival, tell how long the guest's own timer went unheard
across the upgrade, with no tap, no stream and no fd handed over:

    src_ticker = Ticker(h, "src")
    src = hn.Vm(h, "src", ..., extra=src_ticker.qemu_args())
    src.agent.run(start_command())
    ...                                   # a target with its own Ticker
    figures = tick_figures(src_ticker.records, dst_ticker.records)

Chardev: the Ticker listens, QEMU connects (`-chardev socket` as a client,
no reconnect).  The listener exists before its QEMU starts, so QEMU's
connect, made when it creates its chardevs (a cpr-transfer target: only
once it read the cpr channel), always finds it (the kernel queues it
until accept()); nothing the guest writes is dropped for want of a
client, as a QEMU server socket with wait=off drops it; and nothing polls
for a socket path.  A QEMU that cannot connect fails at start, loudly.
"""
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Optional

from .harness import accept_until_stopped
from .paths import scaled

DEBUGCON_IOBASE = 0xE9
PERIOD_US = 1000
# "t<slot>" or "t<slot> <slots the guest skipped just before it>".
RECORD = re.compile(rb"t(\d+)(?: (\d+))?")


@dataclass
class Tick:
    seq: int            # the schedule slot
    t: float            # host time.monotonic() when its last byte arrived
    skipped: int = 0    # slots the guest skipped right before this one (it fell behind)


def start_command(period_us=PERIOD_US, count=0, iobase=DEBUGCON_IOBASE, rtprio=0):
    """The guest command (for Agent.run) that starts the ticker in the
    background; count 0: until it is killed; rtprio: SCHED_FIFO priority
    (0: none; a ticker no other guest process can delay)."""
    return f"ticker {period_us} {count} {iobase:#x} {rtprio} >/dev/null 2>&1 &"


STOP_COMMAND = "kill $(pidof ticker) 2>/dev/null; true"


class Ticker:
    """The host end of one QEMU's debugcon (role: the Vm's role): listens
    on <run dir>/tick-<role>.sock, accepts that QEMU's connection and
    timestamps each record as it arrives (records, a list of Tick)."""

    def __init__(self, h, role, iobase=DEBUGCON_IOBASE):
        self.role = role
        self.iobase = iobase
        self.path = h.sock(f"tick-{role}")
        self.records = []
        # A record the guest began on one QEMU and ended on the next (the
        # VM stopped between two of its port writes): the bytes this
        # connection ended with, and the first line, if it is no record,
        # with its arrival time.
        self.tail = b""
        self.lead = None
        # Other lines that were no record (there should be none).
        self.fragments = []
        self.connected = threading.Event()
        self.closed = threading.Event()   # the connection ended (or was never made)
        self.error = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._conn = None
        self._seen_line = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self._thread = threading.Thread(target=self._run, name=f"ticker-{role}", daemon=True)
        self._thread.start()
        h.stack.callback(self.close)

    def qemu_args(self):
        """The QEMU options (Vm's extra=) of the debugcon and its chardev."""
        return ("-chardev", f"socket,id=tick,path={self.path}",
                "-device", f"isa-debugcon,iobase={self.iobase:#x},chardev=tick")

    def _run(self):
        try:
            self._conn = accept_until_stopped(self.listener, self._stop)
            if self._conn is None:
                return
            self.connected.set()
            self._conn.settimeout(0.1)
            buf = b""
            while not self._stop.is_set():
                try:
                    data = self._conn.recv(65536)
                except socket.timeout:
                    continue
                t = time.monotonic()
                if not data:
                    self.tail = buf
                    break
                # A record may come in pieces: only whole lines count.
                *lines, buf = (buf + data).split(b"\n")
                self._take(lines, t)
        except OSError as e:
            if not self._stop.is_set():
                self.error = e
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def _take(self, lines, t):
        ticks, other = [], []
        for line in lines:
            m = RECORD.fullmatch(line)
            if m:
                ticks.append(Tick(int(m.group(1)), t, int(m.group(2) or 0)))
            elif not self._seen_line and not other:
                self.lead = (line, t)
            else:
                other.append(line)
        self._seen_line = self._seen_line or bool(lines)
        with self._cond:
            self.records += ticks
            self.fragments += other
            self._cond.notify_all()

    def wait_ticks(self, n=1, timeout=30):
        """Wait until n records have arrived (e.g. the ticker started);
        return the records."""
        timeout = scaled(timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.records) >= n or self.closed.is_set(),
                                       timeout):
                raise TimeoutError(f"ticker {self.role}: {len(self.records)} of {n} ticks "
                                   f"in {timeout}s")
            if len(self.records) < n:
                raise ConnectionError(f"ticker {self.role}: connection ended after "
                                      f"{len(self.records)} ticks ({self.error!r})")
            return list(self.records)

    def wait_closed(self, timeout=10):
        """Wait until QEMU's end of the connection is gone (it quit), so
        that the records and the tail are final."""
        if not self.closed.wait(scaled(timeout)):
            raise TimeoutError(f"ticker {self.role}: QEMU did not close its socket")

    def close(self):
        self._stop.set()
        self._thread.join(scaled(5))
        with contextlib.suppress(OSError):
            if self._conn:
                self._conn.close()
        self.listener.close()
        self.path.unlink(missing_ok=True)


@dataclass
class TickFigures:
    """What the ticks of a source and its target say (tick_figures())."""
    src_ticks: int                  # records received from the source
    dst_ticks: int                  # ... from the target
    gap_ms: Optional[float]         # longest interval between two consecutive records, ms
    gap_from: Optional[int]         # the slot that began it
    gap_to: Optional[int]           # the slot that ended it
    gap_at: Optional[float]         # host time of the record that began it
    switch_gap_ms: Optional[float]  # last source record -> first target record, ms
    # The same by the guest's own clock, which stands still from the source's
    # stop to the target's start: (first target slot - last source slot) *
    # period, ms.  Free of the host's delivery delays; the target's warm-up
    # as the guest sees it (plus < 1 period run on the source after its last tick).
    guest_gap_ms: Optional[float]
    first_slot: Optional[int]
    last_slot: Optional[int]
    skipped: int                    # slots the guest skipped itself (it fell behind)
    skipped_max: int                # the most skipped at once
    lost: int                       # slots neither received nor skipped: lost on the way
    duplicates: int                 # slots received twice
    joined: int                     # records split between source and target, rejoined
    fragments: list                 # bytes that made no record (should be empty)


def _merged(src, dst):
    """The records of both sides in arrival order, the bytes that made no
    record, and how many records were rejoined (0 or 1): one the guest
    began on the source and ended on the target (the VM stopped between two
    of its port writes) counts as the target's, which delivered its end."""
    dst_records, fragments, joined = list(dst.records), [], 0
    lead = dst.lead
    if src.tail and lead:
        m = RECORD.fullmatch(src.tail + lead[0])
        if m:
            dst_records.insert(0, Tick(int(m.group(1)), lead[1], int(m.group(2) or 0)))
            joined, lead = 1, None
    src_extra = [src.tail] if src.tail and not joined else []
    dst_extra = [lead[0]] if lead else []
    fragments = ([src.lead[0]] if src.lead else []) + src.fragments + src_extra + \
        dst_extra + dst.fragments
    return src.records, dst_records, fragments, joined


def tick_figures(src, dst, period_us=PERIOD_US):
    """The figures (TickFigures) of the ticks a source (Ticker) and its
    target received: the longest gap between two consecutive records over
    both, what each delivered, and the schedule slots between the first and
    the last record that did not arrive: skipped by the guest (it fell a
    period or more behind and said so) or lost (anything else).  Across a
    migration lost should be 0: the guest does not run between the source's
    stop and the target's start, and its clock does not advance then.
    Call it once both connections ended (wait_closed()), or the target's
    is a snapshot."""
    src_records, dst_records, fragments, joined = _merged(src, dst)
    ticks = src_records + dst_records
    gap = max(((b.t - a.t, a, b) for a, b in zip(ticks, ticks[1:])),
              key=lambda g: g[0], default=None)
    seqs = [k.seq for k in ticks]
    first, last = (min(seqs), max(seqs)) if seqs else (None, None)
    # A skip reported by the first record is about slots before it.
    skips = [k.skipped for k in ticks if k.seq != first]
    skipped = sum(skips)
    unique = len(set(seqs))
    lost = (last - first + 1 - unique - skipped) if seqs else 0
    switch_gap = ((dst_records[0].t - src_records[-1].t) * 1000
                  if src_records and dst_records else None)
    # A rejoined record's slot was read on the source: the target's own first.
    guest_gap = ((dst.records[0].seq - src_records[-1].seq) * period_us / 1000
                 if src_records and dst.records else None)
    return TickFigures(
        src_ticks=len(src_records), dst_ticks=len(dst_records),
        gap_ms=gap[0] * 1000 if gap else None,
        gap_from=gap[1].seq if gap else None, gap_to=gap[2].seq if gap else None,
        gap_at=gap[1].t if gap else None,
        switch_gap_ms=switch_gap, guest_gap_ms=guest_gap,
        first_slot=first, last_slot=last,
        skipped=skipped, skipped_max=max(skips, default=0),
        lost=lost, duplicates=len(seqs) - unique, joined=joined,
        fragments=[f.decode(errors="replace") for f in fragments])


def gaps_over(src, dst, ms=5.0):
    """Every gap over ms between two consecutive records of both sides, in
    order: (host time it began, ms, slot before, slot after, slots the guest
    skipped in it).  Shows whether the longest is one outage or one of many."""
    src_records, dst_records, _, _ = _merged(src, dst)
    ticks = src_records + dst_records
    return [(a.t, (b.t - a.t) * 1000, a.seq, b.seq, b.skipped)
            for a, b in zip(ticks, ticks[1:]) if (b.t - a.t) * 1000 > ms]


def first_tick_after(ticker, t):
    """Host time of the first record ticker completed at or after host time
    t (e.g. the target running), or None.  The end of a record the guest
    began on the previous QEMU (ticker.lead) counts: it is the guest's
    first sign of life on this one."""
    times = [k.t for k in ticker.records] + ([ticker.lead[1]] if ticker.lead else [])
    return min((x for x in times if x >= t), default=None)
