"""`make demo`: boot the test guest, run a 1 kHz UDP stream and checksummed
disk writes, replace its QEMU by a new process (a local upgrade), and report
what the guest saw.

By default it shows the handover of both backends (vhost-user-blk-migrate-fds:
the new QEMU takes over the open fds of the same tap and the live vhost-user
connection to qemu-storage-daemon, which is throttled so that writes wait in
it at the switchover; nothing is switched on the host) and then, for
comparison, a second VM (a fresh guest, its own namespace and daemon,
throttled the same) upgraded once the way management does it today
(baseline-throttled: a new tap, the host switched to it afterwards, a
second vhost-user-blk export): one report each, a side by side summary, and
work/demo/arrivals.png with one panel per scenario on the same time scale.
Also writes work/demo/result.json (scenario -> figures).

    /usr/bin/python3 scripts/demo.py [SCENARIO ...]
        (default: vhost-user-blk-migrate-fds baseline-throttled; also
        tap-migrate-fds, baseline, baseline-cpr)
"""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's root: mfds
from mfds import harness, paths  # noqa: E402
from mfds.scenario import SCENARIOS, run, scenario  # noqa: E402

OUT = paths.ROOT / "work/demo"
DEFAULT = ["vhost-user-blk-migrate-fds", "baseline-throttled"]

DESCRIPTIONS = {
    "baseline": "QEMU 10.2.2 as it is: the new QEMU gets a new tap and a second "
                "vhost-user-blk export; the host side moves to the new tap afterwards",
    "baseline-cpr": "the same, with the cpr-transfer migration mode",
    "tap-migrate-fds": "migrate-fds: the new QEMU takes over the open fds of the same tap "
                       "(nothing switched on the host); the disk as in the baseline "
                       "(second vhost-user-blk export)",
    "baseline-throttled": "the baseline with qemu-storage-daemon throttled to 1000 IOPS "
                          "(requests wait in the backend, as in a slow one)",
    "vhost-user-blk-migrate-fds": "migrate-fds for the tap and the disk: the new QEMU takes "
                                  "over the same tap and the live vhost-user connection to "
                                  "the (throttled) qemu-storage-daemon, no second export",
}


def marks(r, sc):
    t = r.t
    m = [("migrate", t["migrate"]), ("source stopped", t["source_stopped"]),
         ("target running", t["target_running"])]
    if r.links_after != r.links_before:
        m.append(("host switched", t["switched"]))
    m.append(("source exited", t["source_gone"]))
    return m


def plot(results):
    """Per scenario, reply round-trip per datagram against its send time
    (ms from the migrate command), lost ones in red, events as vertical
    lines; one panel each, same window."""
    ms = lambda t, t0: (t - t0) * 1000  # noqa: E731
    lo = -250.0
    hi = max(max(ms(r.t["source_gone"], r.t["migrate"]),
                 ms(r.gap_at, r.t["migrate"]) + r.gap_ms) for r, _ in results) + 400
    n = len(results)
    # One y scale for all panels, so that they compare at a glance.
    ymax = max((tr - ts) * 1000 for r, _ in results for _, ts, tr in r.arrivals
               if tr is not None and lo <= ms(ts, r.t["migrate"]) <= hi)
    panels, tmp = [], []
    for i, (r, sc) in enumerate(results):
        t0 = r.t["migrate"]
        got, lost = OUT / f"received-{i}.dat", OUT / f"lost-{i}.dat"
        tmp += [got, lost]
        with open(got, "w") as g, open(lost, "w") as l:
            for seq, ts, tr in r.arrivals:
                x = ms(ts, t0)
                if lo <= x <= hi:
                    if tr is None:
                        l.write(f"{x:.3f} 0\n")
                    else:
                        g.write(f"{x:.3f} {(tr - ts) * 1000:.3f}\n")
            l.write("nan nan\n")  # gnuplot refuses an empty file
        arrows = "\n".join(
            f'set arrow from {ms(v, t0):.3f}, graph 0 to {ms(v, t0):.3f}, graph 1 nohead dt 2 lc rgb "gray40"\n'
            f'set label "{name}" at {ms(v, t0):.3f}, graph {0.95 - 0.08 * j:.2f} offset 0.5,0 font ",9"'
            for j, (name, v) in enumerate(marks(r, sc)))
        panels.append(f"""
unset arrow
unset label
set title "{r.scenario}: {r.lost} lost, longest gap {r.gap_ms:.0f} ms, QEMU downtime {r.downtime_ms} ms\\n{sc.host_switch}"
{arrows}
{'set xlabel "send time, ms from the migrate command"' if i == n - 1 else 'unset xlabel'}
plot "{got}" using 1:2 with points pt 7 ps 0.4 lc rgb "#1f77b4" title "reply received", \\
     "{lost}" using 1:2 with points pt 2 ps 0.8 lc rgb "#d62728" title "lost"
""")
    script = f"""
set terminal pngcairo size 1100,{380 * n + 40}
set output "{OUT / 'arrivals.png'}"
set multiplot layout {n},1 title "1 kHz UDP stream into the guest across a local upgrade (TCG guest)"
set ylabel "round trip, ms (lost: 0, red)"
set xrange [{lo}:{hi}]
set yrange [-1:{ymax * 1.1 + 1:.0f}]
set key top right
set grid
{''.join(panels)}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    for p in tmp:
        p.unlink()


def links(d):
    return ", ".join(f"{k} (ifindex {v})" for k, v in d.items()) or "none"


def report(name, sc, r):
    t = r.t
    t0 = t["migrate"]
    rel = lambda k: (t[k] - t0) * 1000  # noqa: E731
    held = sorted(set(r.target_tap_fds))
    events = sorted([(0.0, "migrate issued to the source QEMU"),
                     (rel("source_stopped"), "source paused (guest stopped)"),
                     (rel("completed"), "migration completed"),
                     (rel("target_running"), "target QEMU running the guest"),
                     (rel("switched"), sc.host_switch),
                     (rel("source_gone"), "source QEMU exited")])
    timeline = "\n".join(f"    {ms:8.1f}  {what}" for ms, what in events)
    print(f"""
Local upgrade: {name}
  guest booted in {t['booted'] - t['boot_start']:.1f} s; stream and writer running, then:
  timeline (ms from the migrate command)
{timeline}
  QEMU downtime (query-migrate): {r.downtime_ms} ms
  network: {r.sent} datagrams at 1 kHz, {r.lost} lost, longest gap between replies {r.gap_ms:.1f} ms
           (gap began at {(r.gap_at - t0) * 1000:.1f} ms)
  host:    taps before {links(r.links_before)}; after {links(r.links_after)}
           target QEMU holds {len(r.target_tap_fds)} fd(s) of {', '.join(held) or 'no tap'}"""
          f"""{' (handed over)' if 'handed over' in r.target_network else ''}
  disk:    {r.records} records written ({r.records * 4096 / 2**20:.1f} MiB), {r.records_verified} verified intact,
           {r.io_lost} writes lost, {r.io_errors} failed, longest I/O stall {r.io_stall_ms:.1f} ms (guest clock)
  backend: {r.vhost_user_connections} vhost-user connections seen by qemu-storage-daemon""")


def main():
    names = sys.argv[1:] or DEFAULT
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"demo: unknown scenario {', '.join(unknown)} (have: {', '.join(SCENARIOS)})")
    missing = paths.missing()
    if missing:
        sys.exit("demo: missing " + ", ".join(missing) + " (make build; bash scripts/guest.sh)")
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        sc = scenario(name)
        print(f"demo: {name}: {DESCRIPTIONS.get(name, '')}")
        print("demo: booting the guest under TCG (about 10 s) ...", flush=True)
        with harness.Harness("demo", logs=OUT / "logs" / name) as h:
            r = run(h, sc, settle=1.0, after=2.0)
        report(name, sc, r)
        results.append((r, sc))
    if len(results) > 1:
        print("\nSide by side" + " " * 14 + "".join(f"{r.scenario:>28}" for r, _ in results))
        for label, f in (("datagrams lost", lambda r: f"{r.lost}"),
                         ("longest gap, ms", lambda r: f"{r.gap_ms:.1f}"),
                         ("QEMU downtime, ms", lambda r: f"{r.downtime_ms}"),
                         ("same tap after", lambda r: "yes" if r.links_after == r.links_before else "no"),
                         ("records intact", lambda r: f"{r.records_verified}/{r.records}"),
                         ("writes lost or failed", lambda r: f"{r.io_lost + r.io_errors}"),
                         ("longest I/O stall, ms", lambda r: f"{r.io_stall_ms:.1f}"),
                         ("vhost-user connections", lambda r: f"{r.vhost_user_connections}")):
            print(f"  {label:<24}" + "".join(f"{f(r):>28}" for r, _ in results))
    plot(results)
    print(f"\nplot: {OUT / 'arrivals.png'}")
    out = {}
    for r, _ in results:
        out[r.scenario] = r.to_dict()
        del out[r.scenario]["arrivals"]
    (OUT / "result.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    left = harness.leftovers()
    if left:
        sys.exit(f"demo: left behind: {left}")


if __name__ == "__main__":
    main()
