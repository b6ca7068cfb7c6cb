"""A local upgrade (replace the VM's QEMU by a new process on the same host)
and the run that measures what the guest sees during it.

A scenario says how the target is started and what management does around
the migration:
    source_net / source_disk   the source's -netdev and vhost-user socket
    target_net / target_disk   the same for the target
    caps, params               migration capabilities and parameters
    pre_migrate(h)             before the target starts (new tap, new export)
    migrate(h, src)            start the target, migrate; returns the target
    post_migrate(h)            once the migration has completed (switch host)
The migrate-fds scenarios (same tap, same vhost-user connection handed over)
subclass Scenario and change these.
"""
import json
import re
import statistics
import time

from . import harness as hn
from .verify import check_image

WRITER_LOG = "/tmp/writer.log"
WRITER_OUT = "/tmp/writer.out"
WRITER_STATUS = "/tmp/writer.status"


class Scenario:
    name = "base"
    caps = {"x-ignore-shared": True, "events": True}
    params = {}

    def __init__(self, multi_queue=False, cpr=False, iops_limit=None):
        self.mq = multi_queue
        self.cpr = cpr
        self.iops_limit = iops_limit

    def tap_opts(self):
        return ",queues=2" if self.mq else ""

    def source_net(self, h):
        return f"tap,id=n0,ifname=tap0,script=no,downscript=no{self.tap_opts()}"

    def source_disk(self, h):
        return h.sock("vub0")

    def setup(self, h):
        """Host side before the source starts: tap0 with the host address,
        the daemon with export exp0."""
        h.ns.add_tap("tap0", self.mq, f"{hn.HOST_IP}/{hn.PREFIXLEN}")
        h.qsd = hn.Storage(h, h.image, self.iops_limit)
        h.qsd.add_export("exp0", self.source_disk(h))

    def target_net(self, h):
        raise NotImplementedError

    def target_disk(self, h):
        raise NotImplementedError

    def pre_migrate(self, h):
        pass

    def migrate(self, h, src):
        """Start the target and the migration; return the target Vm and the
        host time of the migrate command.  Guest RAM stays in the shared
        file: x-ignore-shared, or the cpr-transfer mode (which also passes
        fds on a cpr channel and opens the target's monitor only once the
        source has sent it)."""
        mig = f"unix:{h.sock('migrate')}"
        if not self.cpr:
            dst = hn.Vm(h, "dst", self.target_net(h), self.target_disk(h),
                        incoming=["defer"])
            for vm in (src, dst):
                vm.set_migration(self.caps, self.params)
            dst.mon.cmd("migrate-incoming", uri=mig)
            t = time.monotonic()
            src.mon.cmd("migrate", uri=mig)
            return dst, t
        cpr = {"transport": "socket", "type": "unix", "path": str(h.sock("cpr"))}
        dst = hn.Vm(h, "dst", self.target_net(h), self.target_disk(h),
                    incoming=[mig, json.dumps({"channel-type": "cpr", "addr": cpr})],
                    machine=self.machine(), connect=False)
        # No monitor to ask yet: the cpr socket appearing says it listens.
        deadline = time.monotonic() + 30
        while not h.sock("cpr").exists():
            if not dst.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError("cpr-transfer target did not open its cpr channel")
            time.sleep(0.01)
        caps = {k: v for k, v in self.caps.items() if k != "x-ignore-shared"}
        src.set_migration(caps, {**self.params, "mode": "cpr-transfer"})
        t = time.monotonic()
        src.mon.cmd("migrate", channels=[
            {"channel-type": "main", "addr": {**cpr, "path": str(h.sock("migrate"))}},
            {"channel-type": "cpr", "addr": cpr}])
        dst.connect()
        return dst, t

    def machine(self):
        """Extra -machine options for both sides."""
        return ",aux-ram-share=on" if self.cpr else ""

    def post_migrate(self, h):
        pass


class Baseline(Scenario):
    """What management must do today: the target gets a new tap and a second
    export of the same block node; once the migration has completed the host
    address moves to the new tap and the old one goes."""

    @property
    def name(self):
        return "baseline-cpr" if self.cpr else "baseline"

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


# Name -> factory, for bench.py and demo.py (new scenarios add themselves).
SCENARIOS = {
    "baseline": Baseline,
    "baseline-cpr": lambda: Baseline(cpr=True),
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


def guest_writes(vm):
    """Writes completed on the guest's /dev/vda (field 5 of its stat)."""
    return int(vm.agent.run("cat /sys/block/vda/stat").split()[4])


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
    src = hn.Vm(h, "src", sc.source_net(h), sc.source_disk(h), machine=sc.machine())
    t["boot_start"] = time.monotonic()
    src.agent.wait_boot()
    t["booted"] = time.monotonic()
    src.agent.run(f"udpecho {hn.ECHO_PORT} >/dev/null 2>&1 &")
    src.agent.run(f"writer write /dev/vda -q 32 -l {WRITER_LOG} -s {WRITER_STATUS} "
                  f">{WRITER_OUT} 2>&1 &")
    src.agent.run(f"for i in $(seq 100); do grep -q started {WRITER_OUT} && exit 0; sleep 0.1; done; "
                  f"cat {WRITER_OUT}; exit 1")
    stream = hn.Stream(h)
    stream.wait_ready()
    time.sleep(settle)

    sc.pre_migrate(h)
    dst, t["migrate"] = sc.migrate(h, src)
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
    r["migration"] = src.mon.cmd("query-migrate")
    r["downtime_ms"] = r["migration"].get("downtime")
    r["target_status"] = dst.mon.cmd("query-status")["status"]
    src.quit()
    t["source_gone"] = time.monotonic()
    r["source_exit"] = src.proc.p.returncode

    # Writes the guest has completed so far (a guest counter, so it carried
    # over): the writer must go on adding to it on the target.
    r["writes_at_switch"] = guest_writes(dst)
    time.sleep(after)
    r.update(stream_figures(stream.stop()))
    r["writes_after"] = guest_writes(dst)
    t["stream_stopped"] = time.monotonic()

    # Wait for the writer's final status, not for its exit: a writer with
    # completions lost at the switchover gives up draining after 20 s but
    # may then hang in the kernel on the writes still in flight; its last
    # status still tells what it saw.
    out = dst.agent.run(f"kill -TERM $(pidof writer); for i in $(seq 300); do "
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
    out = dst.agent.run(f"awk 'NR > 1 && $2 - p > 20000 {{ print p / 1000, ($2 - p) / 1000 }} "
                        f"{{ p = $2 }}' {WRITER_LOG}", check=False)
    r["io_stalls"] = [tuple(map(float, ln.split())) for ln in out.splitlines()
                      if re.fullmatch(r"[0-9.]+ [0-9.]+", ln.strip())]
    good, bad = check_image(h.image, r["records"])
    r["records_verified"] = good
    r["bad_records"] = bad
    r["bytes_verified"] = good * 4096
    r["guest_alive_after"] = dst.agent.run("echo alive").strip() == "alive"
    r["vhost_user_connections"] = h.qsd.connections()
    return r


def summarize(name, runs):
    """Median and range of the figures of several runs of one scenario."""
    out = {"scenario": name, "runs": len(runs)}
    for key in ("lost", "sent", "gap_ms", "downtime_ms", "io_stall_ms"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_median"] = statistics.median(vals) if vals else None
        out[f"{key}_min"] = min(vals) if vals else None
        out[f"{key}_max"] = max(vals) if vals else None
    return out
