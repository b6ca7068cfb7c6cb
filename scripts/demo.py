"""`make demo`: boot the test guest, run a 1 kHz UDP stream and checksummed
disk writes, replace its QEMU by a new process (a local upgrade; today: the
baseline a management layer must do), and report what the guest saw.
Writes work/demo/arrivals.png (gnuplot) and work/demo/result.json.

    /usr/bin/python3 scripts/demo.py [SCENARIO]     (default: baseline)
"""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/e2e"))
from mfds import harness, paths  # noqa: E402
from mfds.scenario import SCENARIOS, run  # noqa: E402

OUT = paths.ROOT / "work/demo"

DESCRIPTIONS = {
    "baseline": "QEMU 10.2.2 as it is: the new QEMU gets a new tap and a second "
                "vhost-user-blk export; the host side moves to the new tap afterwards",
    "baseline-cpr": "the same, with the cpr-transfer migration mode",
}


def plot(r, t0):
    """Reply round-trip per datagram against its send time, lost ones in red,
    events as vertical lines; a window around the outage."""
    ms = lambda t: (t - t0) * 1000  # noqa: E731
    t = r["t"]
    lo = -250.0
    hi = max(ms(t["switched"]), ms(r["gap_at"]) + r["gap_ms"]) + 400
    got = OUT / "received.dat"
    lost = OUT / "lost.dat"
    with open(got, "w") as g, open(lost, "w") as l:
        for seq, ts, tr in r["arrivals"]:
            x = ms(ts)
            if lo <= x <= hi:
                if tr is None:
                    l.write(f"{x:.3f} 0\n")
                else:
                    g.write(f"{x:.3f} {(tr - ts) * 1000:.3f}\n")
        l.write("nan nan\n")  # gnuplot refuses an empty file
    marks = [("migrate", t["migrate"]), ("source stopped", t["source_stopped"]),
             ("target running", t["target_running"]), ("host switched", t["switched"])]
    arrows = "\n".join(
        f'set arrow from {ms(v):.3f}, graph 0 to {ms(v):.3f}, graph 1 nohead dt 2 lc rgb "gray40"\n'
        f'set label "{name}" at {ms(v):.3f}, graph {0.95 - 0.07 * i:.2f} offset 0.5,0 font ",9"'
        for i, (name, v) in enumerate(marks))
    script = f"""
set terminal pngcairo size 1000,500
set output "{OUT / 'arrivals.png'}"
set title "{r['scenario']}: 1 kHz UDP stream across a local upgrade ({r['lost']} lost, longest gap {r['gap_ms']:.0f} ms)"
set xlabel "send time, ms from the migrate command"
set ylabel "round trip, ms (lost: 0, red)"
set xrange [{lo}:{hi}]
set yrange [-1:*]
set key top right
set grid
{arrows}
plot "{got}" using 1:2 with points pt 7 ps 0.4 lc rgb "#1f77b4" title "reply received", \\
     "{lost}" using 1:2 with points pt 2 ps 0.8 lc rgb "#d62728" title "lost"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    got.unlink()
    lost.unlink()


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "baseline"
    missing = paths.missing()
    if missing:
        sys.exit("demo: missing " + ", ".join(missing) + " (make build; bash scripts/guest.sh)")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"demo: {name}: {DESCRIPTIONS.get(name, '')}")
    print("demo: booting the guest under TCG (about 15 s) ...", flush=True)
    with harness.Harness("demo", logs=OUT / "logs") as h:
        r = run(h, SCENARIOS[name](), settle=1.0, after=2.0)
    t = r["t"]
    t0 = t["migrate"]
    rel = lambda k: (t[k] - t0) * 1000  # noqa: E731
    print(f"""
Local upgrade: {name}
  guest booted in {t['booted'] - t['boot_start']:.1f} s; stream and writer running, then:
  timeline (ms from the migrate command)
    {0:8.1f}  migrate issued to the source QEMU
    {rel('source_stopped'):8.1f}  source paused (guest stopped)
    {rel('completed'):8.1f}  migration completed
    {rel('target_running'):8.1f}  target QEMU running the guest
    {rel('switched'):8.1f}  host side switched ({'new tap' if name.startswith('baseline') else 'done'})
    {rel('source_gone'):8.1f}  source QEMU exited
  QEMU downtime (query-migrate): {r['downtime_ms']} ms
  network: {r['sent']} datagrams at 1 kHz, {r['lost']} lost, longest gap between replies {r['gap_ms']:.1f} ms
           (gap began at {(r['gap_at'] - t0) * 1000:.1f} ms)
  disk:    {r['records']} records written ({r['records'] * 4096 / 2**20:.1f} MiB), {r['records_verified']} verified intact,
           {r['io_lost']} writes lost, {r['io_errors']} failed, longest I/O stall {r['io_stall_ms']:.1f} ms (guest clock)
  backend: {r['vhost_user_connections']} vhost-user connections seen by qemu-storage-daemon
  plot:    {OUT / 'arrivals.png'}""")
    plot(r, t0)
    r.pop("arrivals")
    (OUT / "result.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    left = harness.leftovers()
    if left:
        sys.exit(f"demo: left behind: {left}")


if __name__ == "__main__":
    main()
