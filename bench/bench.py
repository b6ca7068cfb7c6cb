"""`make bench`: run each local-upgrade scenario several times and report
median and range of what the guest saw.

    /usr/bin/python3 -m bench.bench [SCENARIO ...]     (default: those below)
    (from the repository's root, where the mfds package is)

Scenarios: baseline (new tap, host switched), baseline-10.2.2 (the same
with both QEMUs unpatched, from scripts/build-base.sh: what the series
costs when nothing is handed over), baseline-cpr (the same in the
cpr-transfer mode), tap-migrate-fds (the tap's fds handed over, nothing
switched), tap-fallback-open (the baseline, but the target's tap has
migrate-fds=on and the migration runs without the parameter: no fds come,
and the tap opens tap1 at load time, inside the downtime, instead of at
start), baseline-throttled (the baseline with qemu-storage-daemon throttled
to 1000 IOPS: requests wait in it, as in a slow backend),
vhost-user-blk-migrate-fds (the tap and the vhost-user-blk connection handed
over, the same throttled daemon).  When the run has baseline and
tap-migrate-fds, a closing note compares them; when it has baseline and
tap-fallback-open, another gives the fallback open's cost (in QEMU's
downtime, which is the source's and need not include the target's load, and
in the switch, source stopped -> target running, which does); when it has
baseline-throttled and vhost-user-blk-migrate-fds, another compares their
disks.

scale and scale-baseline (mfds/scale.py, issue #16): a 4-vCPU guest with 4
virtio-net NICs on 4 taps of 8 queues each and 4 vhost-user-blk disks in 2
qemu-storage-daemons, a stream into every NIC and a writer on every disk,
upgraded with every fd handed over (scale) and with the property off,
today's new taps and second exports (scale-baseline), and the latter with
both QEMUs unpatched (scale-baseline-10.2.2), last in the default set; they
have a table of their own and, when they ran, what the handover adds to
the switch and its cost per fd passed, and what the series costs the
scale VM when nothing is handed over.

Every run also has the guest's ticker on a debugcon port (a control that
needs no network: where the longest gap goes) and QEMU's trace of its
downtime, section by section (run(measure=True)); a second table gives
them, and a third the switch in its steps, from both QEMUs' traces: the
source stops the VM, the state is saved and loaded (at the target's pace),
the target starts the VM (qemutrace.Switchover).

A scale run whose guest hangs before its migration (scale.GuestNotReady:
with 4 MTTCG vCPUs on 2 host cores a vCPU's timer now and then never
fires at boot) is tried again, up to SCALE_RETRIES times, and said so.

Env: MFDS_BENCH_RUNS (default 5).  Writes work/bench/results.json: a list
with one object per scenario (scenario, runs, <figure>_median/_min/_max for
lost, sent, gap_ms, downtime_ms, io_stall_ms, switch_ms, first_reply_ms, and
the per-run figures).
"""
import json
import os
import sys
import traceback

from mfds import harness, paths, scale
from mfds.scenario import run, scenario, summarize

# The scenarios run when none is named, in this order (mfds.scenario.SCENARIOS
# has also those only the tests use).
DEFAULT = ("baseline", "baseline-10.2.2", "baseline-cpr", "tap-migrate-fds",
           "tap-fallback-open", "baseline-throttled", "vhost-user-blk-migrate-fds",
           "tap-migrate-fds-cpr", "vhost-user-blk-migrate-fds-cpr",
           "scale", "scale-baseline", "scale-baseline-10.2.2")

# The scenarios whose disk is the subject (their daemon is throttled, so
# that requests wait in it at the switchover): their runs watch the disk's
# rings (a polling thread: not in the other runs) and get the disk's table;
# they run no guest ticker (with it, 1 kHz of real-time wake-ups on the
# guest's one TCG vCPU, the writer kept no request waiting in the daemon:
# 0 at the stop in every run, 6 without it on a busy host, 24-28 in the
# lifecycle test).
DISK_SCENARIOS = ("baseline-throttled", "vhost-user-blk-migrate-fds",
                  "vhost-user-blk-migrate-fds-cpr")

# The scale scenarios (mfds/scale.py): name -> (handover, QEMU binary;
# None: the series').  scale-baseline-10.2.2: both QEMUs unpatched, what
# the series costs the scale VM when nothing is handed over.
SCALE = {"scale": (True, None), "scale-baseline": (False, None),
         "scale-baseline-10.2.2": (False, paths.BASE_QEMU)}

KEEP = ("sent", "received", "lost", "gap_ms", "downtime_ms", "io_stall_ms", "switch_ms",
        "first_reply_ms", "total_ms",
        "tick_gap_ms", "first_tick_ms", "ticks_lost", "net_rest_ms",
        "save_us", "load_us", "nic_save_us", "nic_load_us", "disk_save_us", "disk_load_us",
        "stop_ms", "stream_ms", "start_ms", "traced_switch_ms",
        "in_daemon_at_stop", "completed_while_stopped", "backend_stall_ms", "backend_stall_at_ms",
        "first_request_ms", "first_completion_ms", "records", "records_verified", "io_lost", "writer_stuck", "vhost_user_connections")


def med(s, key):
    """s's median of key, a whole number, or "-"."""
    m = s.get(f"{key}_median")
    return "-" if m is None else f"{m:.0f}"


def fmt(s, key, digits=0):
    med, lo, hi = (s.get(f"{key}_{x}") for x in ("median", "min", "max"))
    if med is None:
        return "-"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def downtime(ho, base):
    return (f"downtime {ho['downtime_ms_median']:.0f} vs {base['downtime_ms_median']:.0f} ms "
            f"({ho['downtime_ms_median'] - base['downtime_ms_median']:+.0f} ms)")


def cost(ho, base, key, what):
    """What ho's medians add to base's in key (µs)."""
    if ho.get(key + "_median") is None or base.get(key + "_median") is None:
        return f"{what} -"
    return (f"{what} {ho[key + '_median']:.0f} vs {base[key + '_median']:.0f} µs "
            f"({ho[key + '_median'] - base[key + '_median']:+.0f} µs)")


def steps(s):
    """s's median stop/stream/start (ms)."""
    return "/".join(med1(s, k) for k in ("stop_ms", "stream_ms", "start_ms"))


def med1(s, key):
    m = s.get(f"{key}_median")
    return "-" if m is None else f"{m:.1f}"


def switch(ho, base):
    return (f"switch {ho['switch_ms_median']:.1f} vs {base['switch_ms_median']:.1f} ms "
            f"({ho['switch_ms_median'] - base['switch_ms_median']:+.1f} ms)")


# (scenario, its baseline, what the line says of them): the comparisons
# printed when a run has both scenarios.
COMPARISONS = [
    ("tap-migrate-fds", "baseline", lambda ho, base:
     f"lost {ho['lost_median']:.0f} vs {base['lost_median']:.0f}; "
     f"longest gap {ho['gap_ms_median']:.1f} vs {base['gap_ms_median']:.1f} ms "
     f"({ho['gap_ms_median'] / base['gap_ms_median']:.2f}x); {downtime(ho, base)}; "
     f"{cost(ho, base, 'nic_save_us', 'virtio-net saved in')}, "
     f"{cost(ho, base, 'nic_load_us', 'loaded in')}; "
     f"stop/stream/start {steps(ho)} vs {steps(base)} ms"),
    # The series with nothing handed over against QEMU as it found it.
    ("baseline", "baseline-10.2.2", lambda ho, base:
     f"migration total {ho['total_ms_median']:.0f} vs {base['total_ms_median']:.0f} ms; "
     f"{downtime(ho, base)}; {cost(ho, base, 'save_us', 'all sections saved in')}, "
     f"{cost(ho, base, 'load_us', 'loaded in')}"),
    # The target's tap opens while it loads the NIC's state: the source's
    # downtime figure need not include that, the switch does.
    ("tap-fallback-open", "baseline", lambda ho, base:
     f"{downtime(ho, base)}; {switch(ho, base)}; "
     f"longest gap {ho['gap_ms_median']:.1f} vs {base['gap_ms_median']:.1f} ms; "
     f"lost {ho['lost_median']:.0f} vs {base['lost_median']:.0f}"),
    ("vhost-user-blk-migrate-fds", "baseline-throttled", lambda ho, base:
     f"longest I/O stall {ho['io_stall_ms_median']:.1f} vs "
     f"{base['io_stall_ms_median']:.1f} ms; I/O lost {io_lost(ho)} vs {io_lost(base)}; "
     f"{downtime(ho, base)}; {cost(ho, base, 'disk_save_us', 'vhost-user-blk saved in')}, "
     f"{cost(ho, base, 'disk_load_us', 'loaded in')}; "
     f"stop/stream/start {steps(ho)} vs {steps(base)} ms; "
     f"vhost-user connections {connections(ho)} vs {connections(base)}"),
]


def compare(results):
    """The handovers against their baseline of the same run (medians)."""
    by = {s["scenario"]: s for s in results}
    for ho_name, base_name, line in COMPARISONS:
        ho, base = by.get(ho_name), by.get(base_name)
        if ho and base and ho["runs"] and base["runs"]:
            print(f"{ho_name} vs {base_name} (medians, this run): {line(ho, base)}")


def io_lost(s):
    """Completions the writer lost over the runs of s: in how many runs, and
    how many in all (today's path loses completions in some runs and not
    in others: a median would hide it)."""
    lost = [x["io_lost"] for x in s["samples"]]
    return f"{sum(lost)} in {sum(1 for n in lost if n)} of {len(lost)} runs"


def connections(s):
    """The vhost-user connections the daemon saw per run (distinct values)."""
    return "/".join(str(n) for n in sorted({x["vhost_user_connections"] for x in s["samples"]}))


# How often a scale run whose guest hung before the migration is tried
# again (scale.GuestNotReady: nothing was measured yet).
SCALE_RETRIES = 2


def run_once(name, i, out_dir):
    """Run i of scenario name; its logs in out_dir/logs/NAME-I."""
    for attempt in range(SCALE_RETRIES + 1):
        try:
            logs = out_dir / "logs" / (f"{name}-{i}" + (f"-retry{attempt}" if attempt else ""))
            with harness.Harness(f"bench-{name}-{i}", logs=logs) as h:
                if name in SCALE:
                    handover, qemu = SCALE[name]
                    return scale.run_scale(h, handover, qemu=qemu)
                disk = name in DISK_SCENARIOS
                return run(h, scenario(name), measure=True, watch_rings=disk, ticker=not disk)
        except scale.GuestNotReady as e:
            if attempt == SCALE_RETRIES:
                raise
            print(f"bench: {name} run {i + 1}: {e}; its guest hung before the migration, "
                  f"trying the run again", file=sys.stderr)


def main():
    missing = paths.missing()
    if missing:
        sys.exit("bench: missing " + ", ".join(missing) + " (make build; bash scripts/guest.sh)")
    runs = int(os.environ.get("MFDS_BENCH_RUNS", "5"))
    names = sys.argv[1:] or list(DEFAULT)
    out_dir = paths.ROOT / "work/bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for name in names:
        samples = []
        for i in range(runs):
            try:
                r = run_once(name, i, out_dir)
            except Exception:
                failed += 1
                traceback.print_exc()
                print(f"bench: {name} run {i + 1} failed (logs in {out_dir}/logs/{name}-{i})",
                      file=sys.stderr)
                continue
            if name in SCALE:
                samples.append(r.sample())
                print(f"{name} run {i + 1}/{runs}: {scale.describe(r)}", file=sys.stderr)
                continue
            samples.append({k: getattr(r, k) for k in KEEP})
            print(f"{name} run {i + 1}/{runs}: lost {r.lost}/{r.sent}, "
                  f"gap {r.gap_ms:.1f} ms, downtime {r.downtime_ms} ms, "
                  f"I/O stall {r.io_stall_ms:.1f} ms, {r.io_lost} I/O lost, "
                  f"{r.bytes_verified >> 20} MiB verified", file=sys.stderr)
        s = summarize(name, samples)
        s["failed"] = runs - len(samples)
        s["samples"] = samples
        results.append(s)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    scale_results = [s for s in results if s["scenario"] in SCALE]
    results = [s for s in results if s["scenario"] not in SCALE]
    if not results:
        scale_table(scale_results)
        finish(out_dir, failed)

    width = max([len("scenario")] + [len(s["scenario"]) for s in results])
    head = f"{'scenario':<{width}} {'runs':>4}  {'sent':>16}  {'lost':>14}  {'longest gap ms':>18}  " \
           f"{'downtime ms':>14}  {'I/O stall ms':>18}  {'switch ms':>14}  {'1st reply ms':>18}"
    print("median (min-max) over the runs; TCG guest, 1 kHz UDP stream, 32 AIO writes in flight")
    print(head)
    for s in results:
        print(f"{s['scenario']:<{width}} {s['runs']:>4}  {fmt(s, 'sent'):>16}  {fmt(s, 'lost'):>14}  "
              f"{fmt(s, 'gap_ms', 1):>18}  {fmt(s, 'downtime_ms'):>14}  {fmt(s, 'io_stall_ms', 1):>18}  "
              f"{fmt(s, 'switch_ms', 1):>14}  {fmt(s, 'first_reply_ms', 1):>18}")
    print("switch: source stopped -> target running; 1st reply: target running -> first "
          "reply from the guest on the target (the new process warming up)")
    print()
    print("where the longest gap goes (medians): the guest's ticker on a channel that is "
          "not handed over, and QEMU's own trace of its downtime (µs per section)")
    head = f"{'scenario':<{width}} {'tick gap ms':>18}  {'1st tick ms':>18}  {'net rest ms':>18}  " \
           f"{'ticks lost':>10}  {'saved µs':>8}  {'loaded µs':>9}  {'NIC save/load µs':>16}  " \
           f"{'disk save/load µs':>17}  {'total ms':>8}"
    print(head)
    for s in results:
        print(f"{s['scenario']:<{width}} {fmt(s, 'tick_gap_ms', 1):>18}  "
              f"{fmt(s, 'first_tick_ms', 1):>18}  {fmt(s, 'net_rest_ms', 1):>18}  "
              f"{med(s, 'ticks_lost'):>10}  {med(s, 'save_us'):>8}  {med(s, 'load_us'):>9}  "
              f"{med(s, 'nic_save_us') + '/' + med(s, 'nic_load_us'):>16}  "
              f"{med(s, 'disk_save_us') + '/' + med(s, 'disk_load_us'):>17}  "
              f"{med(s, 'total_ms'):>8}")
    print("tick gap: the longest gap between two ticks of the guest's 1 kHz timer (SCHED_FIFO, "
          "on isa-debugcon); 1st tick: target running -> its first tick there (the new process "
          "warming up, with no network); net rest: 1st reply - 1st tick (what the network path "
          "adds); saved/loaded: QEMU's vmstate_downtime_* trace, every section while stopped; "
          "the disk scenarios (see their table) run no ticker: -")
    print()
    print("where the switch goes (medians, ms; from both QEMUs' traces, one host clock)")
    head = f"{'scenario':<{width}} {'stop':>6}  {'stream':>7}  {'start':>6}  {'sum':>6}  " \
           f"{'switch':>7}  {'target loads ms':>15}"
    print(head)
    for s in results:
        print(f"{s['scenario']:<{width}} {med1(s, 'stop_ms'):>6}  {med1(s, 'stream_ms'):>7}  "
              f"{med1(s, 'start_ms'):>6}  {med1(s, 'traced_switch_ms'):>6}  {med1(s, 'switch_ms'):>7}  "
              f"{ms_of_us(s, 'load_us'):>15}")
    print("stop: the source stops the VM (src-downtime-start -> src-vm-stopped; today's path "
          "stops the vhost-user vrings here); stream: the source saves the state, the target "
          "loads it (-> dst-precopy-loadvm-completed; the target sets the pace: each virtio "
          "device's state is ~46 KB, the stream outgrows the socket's buffer and the source "
          "waits for the target, so the source's save figures above include that wait); "
          "start: the target starts the VM (-> dst-precopy-bh-vm-started; today's path sets "
          "the vhost-user session up again here); sum: the three steps' sum in each run, its "
          "median; switch: from QMP's "
          "STOP and RESUME events; "
          "target loads: the target's load of every section, the busy part of stream")
    disks = [s for s in results if s.get("in_daemon_at_stop_median") is not None
             and s["scenario"] in DISK_SCENARIOS]
    if disks:
        print()
        print("the disk around the switch (medians; the backend's view: the disk's rings read "
              "in guest RAM from the host, host clock)")
        print(f"{'scenario':<{width}} {'in daemon at stop':>17}  {'completed stopped':>17}  "
              f"{'backend stall ms':>16}  {'at ms':>7}  {'1st request ms':>14}  "
              f"{'1st completion ms':>17}  {'guest stall ms':>14}")
        for s in disks:
            print(f"{s['scenario']:<{width}} {med(s, 'in_daemon_at_stop'):>17}  "
                  f"{med(s, 'completed_while_stopped'):>17}  {med1(s, 'backend_stall_ms'):>16}  "
                  f"{med1(s, 'backend_stall_at_ms'):>7}  {med1(s, 'first_request_ms'):>14}  "
                  f"{med1(s, 'first_completion_ms'):>17}  {med1(s, 'io_stall_ms'):>14}")
        print("in daemon at stop: requests the guest submitted and the daemon had not "
              "completed when the source stopped (avail - used); completed stopped: completions "
              "the daemon pushed while no QEMU ran the VM (used idx moving between source "
              "stopped and target running); backend stall: the longest gap between two "
              "completions of those that overlap the switchover, beginning at ms after the source "
              "stopped; 1st request / 1st "
              "completion: target running -> the guest's first new request / the daemon's "
              "next completion; guest stall: the writer's own longest stall (guest clock, which "
              "stands still while the VM is stopped)")
    compare(results)
    scale_table(scale_results)
    finish(out_dir, failed)


def scale_table(results):
    """The scale scenarios' own table, and the handover against the
    property off of the same run."""
    if not results:
        return
    print()
    print(f"scale: {scale.VCPUS} vCPUs, {scale.NICS} NICs x {scale.QUEUES} tap queues "
          f"({scale.RATE_HZ} Hz UDP stream each), {scale.DISKS} vhost-user-blk disks "
          f"({scale.DISK_QUEUES} queues, {scale.DISK_IOPS} IOPS, {scale.EXPORTS_PER_DAEMON} "
          f"exports in each of {scale.DISKS // scale.EXPORTS_PER_DAEMON} daemons); "
          f"median (min-max)")
    width = max(len("scenario"), *(len(s["scenario"]) for s in results))
    print(f"{'scenario':<{width}} {'runs':>4}  {'downtime ms':>12}  {'switch ms':>18}  "
          f"{'traced ms':>18}  {'stop/stream/start ms':>20}  {'NIC save/load µs':>16}  "
          f"{'disk save/load µs':>17}  {'fds passed':>10}")
    for s in results:
        print(f"{s['scenario']:<{width}} {s['runs']:>4}  {fmt(s, 'downtime_ms'):>12}  "
              f"{fmt(s, 'switch_ms', 1):>18}  {fmt(s, 'traced_switch_ms', 1):>18}  "
              f"{steps(s):>20}  "
              f"{med(s, 'nic_save_us') + '/' + med(s, 'nic_load_us'):>16}  "
              f"{med(s, 'disk_save_us') + '/' + med(s, 'disk_load_us'):>17}  "
              f"{med(s, 'fds_passed'):>10}")
    print(f"{'per device':<{width}} {'':>4}  " +
          "  ".join(f"{'nic' + str(i) + ' lost/gap ms':>22}" for i in range(scale.NICS)))
    for s in results:
        print(f"{s['scenario']:<{width}} {s['runs']:>4}  " +
              "  ".join(f"{med(s, f'nic{i}_lost') + ' / ' + fmt(s, f'nic{i}_gap_ms', 1):>22}"
                        for i in range(scale.NICS)))
    print(f"{'':<{width}} {'':>4}  " +
          "  ".join(f"{'disk' + str(k) + ' lost/failed/stall ms':>26}"
                    for k in range(scale.DISKS)))
    for s in results:
        print(f"{s['scenario']:<{width}} {s['runs']:>4}  " +
              "  ".join(f"{disk_cell(s, k):>26}" for k in range(scale.DISKS)))
    for s in results:
        kinds = sorted(k for k in s if k.startswith("fds_") and k.endswith("_median")
                       and k != "fds_passed_median")
        print(f"{s['scenario']}: fds passed by kind (medians): " +
              (", ".join(f"{k[4:-7]} {s[k]:.0f}" for k in kinds) or "none") +
              f"; datagrams lost {sum(x['lost'] for x in s['samples'])}, "
              f"writes lost {sum(x['io_lost'] for x in s['samples'])}, failed "
              f"{sum(x['io_errors'] for x in s['samples'])} (daemon panics in "
              f"{sum(1 for x in s['samples'] if x['backend_panics'])}) over the runs")
    print("downtime ms: QEMU's (query-migrate: the source's, which waits for the target's "
          "load); switch: source stopped -> target running (QMP events); traced: the same "
          "from both QEMUs' traces, the sum of its steps in each run; stop/stream/start: "
          "each step's median (qemutrace.Switchover); "
          "save/load: vmstate_downtime_* of every NIC's / disk's section (the source's save "
          "includes waiting for the target); fds passed: the target's fds that are the "
          "source's open files (kcmp); per device: median lost (datagrams; writes "
          "lost/failed) and longest gap / I/O stall")
    by = {s["scenario"]: s for s in results}
    old, new = by.get("scale-baseline-10.2.2"), by.get("scale-baseline")
    if old and new and all(s.get(f"{k}_median") is not None for s in (old, new)
                           for k in ("traced_switch_ms", "downtime_ms", "total_ms", "load_us")):
        print(f"scale-baseline vs scale-baseline-10.2.2 (medians, this run; nothing handed over, "
              f"the series against QEMU 10.2.2): switch {new['traced_switch_ms_median']:.1f} vs "
              f"{old['traced_switch_ms_median']:.1f} ms traced "
              f"({new['traced_switch_ms_median'] - old['traced_switch_ms_median']:+.1f} ms); "
              f"stop/stream/start {steps(new)} vs {steps(old)} ms; downtime "
              f"{new['downtime_ms_median']:.0f} vs {old['downtime_ms_median']:.0f} ms; total "
              f"{new['total_ms_median']:.0f} vs {old['total_ms_median']:.0f} ms; the target's "
              f"load of every section {new['load_us_median'] / 1000:.1f} vs "
              f"{old['load_us_median'] / 1000:.1f} ms")
    ho, base = by.get("scale"), by.get("scale-baseline")
    keys = ("traced_switch_ms", "stop_ms", "stream_ms", "start_ms", "fds_passed",
            "nic_load_us", "disk_load_us")
    if not (ho and base) or any(s.get(f"{k}_median") is None for s in (ho, base) for k in keys):
        return
    added_ms = ho["traced_switch_ms_median"] - base["traced_switch_ms_median"]
    loads = lambda s: s["nic_load_us_median"] + s["disk_load_us_median"]
    added_load = loads(ho) - loads(base)
    fds = ho["fds_passed_median"]
    per_fd = f"{added_load / fds:+.1f} µs of the target's load per fd" if fds else "no fd passed"
    print(f"scale vs scale-baseline (medians, this run): switch {ho['traced_switch_ms_median']:.1f} "
          f"vs {base['traced_switch_ms_median']:.1f} ms traced ({added_ms:+.1f} ms; the "
          f"target, < 1 ms added, {'met' if added_ms < 1 else 'not met'} by these medians: "
          f"see their ranges); stop/stream/start {steps(ho)} vs {steps(base)} ms; the "
          f"target's load of the NICs and disks {loads(ho):.0f} vs {loads(base):.0f} µs "
          f"({added_load:+.0f} µs); {fds:.0f} fds passed: {per_fd}")


def ms_of_us(s, key):
    m = s.get(f"{key}_median")
    return "-" if m is None else f"{m / 1000:.1f}"


def disk_cell(s, k):
    return f"{med(s, f'disk{k}_lost')}/{med(s, f'disk{k}_failed')} / {fmt(s, f'disk{k}_stall_ms', 1)}"


def finish(out_dir, failed):
    print(f"written: {out_dir / 'results.json'}")
    left = harness.leftovers()
    if left:
        print(f"bench: left behind: {left}", file=sys.stderr)
    sys.exit(1 if failed or left else 0)


if __name__ == "__main__":
    main()
