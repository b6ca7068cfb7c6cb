"""What the new QEMU does while the guest warms up on it: a CPU profile of
its vCPU thread between the target starting to run and the guest's first
reply (make bench runs it after bench.bench).

    /usr/bin/python3 -m bench.warmup [SCENARIO ...]   (default: baseline tap-migrate-fds)

One run of each scenario with `perf record` (4 kHz, CLOCK_MONOTONIC, the
harness's clock) on the target QEMU from before the migration.  The
samples of the busiest thread (the vCPU) are sorted into: translating guest
code (TCG's front and back end), looking translated blocks up, the softmmu
TLB and guest memory accesses, running translated code, the kernel, and
the rest; in three windows: target running -> the guest's first tick (its
timer path), first tick -> first reply (its network path), and the run's
last second (steady state).  A new process has no translated code: the
first two windows show how much of the warm-up is TCG translating the
guest's code afresh, with or without a handover.  Shares of samples, not
timings; printed and written to work/bench/warmup.json.
"""
import collections
import json
import re
import subprocess
import sys
import time

from mfds import harness, paths
from mfds.scenario import run, scenario

DEFAULT = ("baseline", "tap-migrate-fds")
RATE_HZ = 4000

CLASSES = (
    ("translate", re.compile(
        r"^(tcg_|tb_gen_code|liveness_pass|init_ts_info|reachable_code|temp_|la_|reset_ts|"
        r"opcode_args_ct|i386_tr_|gen_|disas_|decode_|translator_|x86_ld[ubwlq]+_code|"
        r"setjmp_gen_code|tb_link_page|tb_page_add|page_find_alloc|record_mem_copy)")),
    ("tb lookup", re.compile(r"^(qht_|helper_lookup_tb_ptr|tb_lookup|tb_htable_lookup|"
                             r"tb_tc_cmp|tb_cmp|x86_get_tb_cpu_state)")),
    ("softmmu", re.compile(r"^(tlb_|mmu_|probe_access|address_space_translate|"
                           r"get_physical_address|x86_cpu_tlb_fill|victim_tlb|do_ld|do_st|"
                           r"helper_ld|helper_st|cpu_ld|cpu_st|prepare_host_addr|flatview)")),
)


def kind(sym, dso):
    if sym == "[unknown]" or dso in ("[unknown]", "//anon"):
        return "translated code"
    if "kernel" in dso:
        return "kernel"
    return next((name for name, rx in CLASSES if rx.match(sym)), "other")


def samples(data):
    """(tid, time, symbol, dso) of each sample in perf data file data."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,time,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+\S+\s+(\S+)\s+\((.*)\)", line)
        if m:
            yield int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)


def profile(all_samples, start, end):
    """Shares (%) per kind of the busiest thread's samples in [start, end],
    and how many of the window's possible samples it had (on CPU %)."""
    sel = [s for s in all_samples if start <= s[1] <= end]
    if not sel or end <= start:
        return None
    tid = collections.Counter(s[0] for s in sel).most_common(1)[0][0]
    mine = [s for s in sel if s[0] == tid]
    count = collections.Counter(kind(s[2], s[3]) for s in mine)
    return {"ms": (end - start) * 1000, "samples": len(mine),
            "on_cpu_pct": 100 * len(mine) / ((end - start) * RATE_HZ),
            "pct": {k: 100 * v / len(mine) for k, v in count.most_common()}}


def measure(name, out_dir):
    sc = scenario(name)
    data = out_dir / f"warmup-{name}.perf"
    perf = []
    started = sc.target_started

    def target_started(h, dst):
        started(h, dst)
        perf.append(subprocess.Popen(
            ["perf", "record", "-q", "-F", str(RATE_HZ), "-k", "CLOCK_MONOTONIC",
             "-p", str(dst.pid()), "-o", str(data), "--", "sleep", "12"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(2)   # perf attaches; the target only waits meanwhile

    sc.target_started = target_started
    with harness.Harness(f"warmup-{name}", logs=out_dir / "logs" / f"warmup-{name}") as h:
        r = run(h, sc, measure=True)
        _, err = perf[0].communicate(timeout=60)
        if perf[0].returncode:
            raise RuntimeError(f"perf record failed: {err.decode(errors='replace')}")
    s = list(samples(data))
    running = r.t["target_running"]
    tick = running + r.first_tick_ms / 1000 if r.first_tick_ms is not None else None
    reply = running + r.first_reply_ms / 1000 if r.first_reply_ms is not None else None
    last = max(t for _, t, _, _ in s)
    return {"scenario": name, "first_tick_ms": r.first_tick_ms,
            "first_reply_ms": r.first_reply_ms,
            "to_first_tick": profile(s, running, tick) if tick else None,
            "to_first_reply": profile(s, tick, reply) if tick and reply else None,
            "steady": profile(s, last - 1.0, last)}


def line(p):
    if not p:
        return "-"
    return (f"{p['ms']:.0f} ms, on CPU {p['on_cpu_pct']:.0f}%: " +
            ", ".join(f"{k} {v:.0f}%" for k, v in p["pct"].items()))


def main():
    names = sys.argv[1:] or list(DEFAULT)
    out_dir = paths.ROOT / "work/bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [measure(n, out_dir) for n in names]
    print("what the new QEMU's vCPU thread does while the guest warms up (perf, one run each; "
          "shares of its samples)")
    for x in results:
        print(f"{x['scenario']}:")
        print(f"  target running -> 1st tick    {line(x['to_first_tick'])}")
        print(f"  1st tick -> 1st reply         {line(x['to_first_reply'])}")
        print(f"  steady state (last second)    {line(x['steady'])}")
    print("translate: TCG translating guest code (a new process has none translated); tb lookup: "
          "finding translated blocks; softmmu: the TLB and guest memory accesses; translated "
          "code: running it; on CPU: the thread's samples over the window's possible ones")
    (out_dir / "warmup.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out_dir / 'warmup.json'}")
    left = harness.leftovers()
    if left:
        sys.exit(f"warmup: left behind: {left}")


if __name__ == "__main__":
    main()
