"""What the new QEMU does while the guest warms up on it: a CPU profile of
its vCPU thread between the target starting to run and the guest's first
reply (make bench runs it after bench.bench).

    /usr/bin/python3 -m bench.warmup [SCENARIO ...]   (default: baseline tap-migrate-fds)

One run of each scenario with `perf record` (cpu-clock, a sample per 250 µs
of a thread's CPU time, CLOCK_MONOTONIC: the harness's clock) on the target
QEMU from before the migration to the end of the run.  The samples of the
vCPU thread (query-cpus-fast), and apart those of the main thread, are
sorted into: translating guest code (TCG's front and back end), looking
translated blocks up, the softmmu TLB and guest memory accesses, running
translated code, the kernel, and the rest; in three windows: target
running -> the guest's first tick (its timer path), first tick -> first
reply (its network path), and the stream's last second (steady state).  A new process has no translated code: the
first two windows show how much of the warm-up is TCG translating the
guest's code afresh, with or without a handover.  Shares of samples, not
timings; printed and written to work/bench/warmup.json.
"""
import collections
import json
import re
import signal
import subprocess
import sys
import time

from mfds import harness, paths
from mfds.scenario import run, scenario

DEFAULT = ("baseline", "tap-migrate-fds")
PERIOD_NS = 250_000   # a cpu-clock sample every 250 µs of a thread's CPU time: 4 kHz

# By symbol, in this order (QEMU 10.2, TCG, x86 guest on an x86 host).
# tcg_ names are translation (tcg/) but for those of accel/tcg and
# system/ that run with the guest, sorted before.
CLASSES = (
    ("tb lookup", re.compile(r"^(qht_|helper_lookup_tb_ptr|tb_lookup|tb_htable_lookup|tb_tc_cmp|"
                             r"tb_cmp|tcg_tb_lookup|x86_get_tb_cpu_state|"
                             r"get_page_addr_code_hostp|curr_cflags)")),
    ("softmmu", re.compile(r"^(tlb_|mmu_|probe_access|address_space_translate|ptw_translate|"
                           r"get_pg_mode|get_physical_address|x86_cpu_tlb_fill|victim_tlb|"
                           r"do_ld|do_st|helper_ld|helper_st|cpu_ld|cpu_st|load_atom_|store_atom_|"
                           r"physical_memory_|qemu_ram_|flatview|tcg_flush_jmp_cache)")),
    ("other", re.compile(r"^tcg_(cpu_exec|handle_interrupt|kick_vcpu_thread|commit|cflags|"
                         r"iommu|log_|get_thread|set_thread|vm_change_state)")),
    ("translate", re.compile(
        r"^(tcg_|tb_gen_code|x86_translate_code|liveness_pass|init_ts_info|reachable_code|"
        r"temp_|la_|reset_ts|opcode_args_ct|fold_|do_constant_folding|swap_commutative|tgen_|"
        r"i386_tr_|gen_|disas_|decode_|translator_|x86_ld[ubwlq]+_code|advance_pc|set_cc_op|"
        r"setjmp_gen_code|tb_link_page|tb_page_add|tb_lock_page|tb_unlock_page|"
        r"page_find_alloc|record_mem_copy|prepare_host_addr)")),
)


def kind(sym, dso):
    """The kind of work of one sample: by its object first (the kernel; code
    TCG generated, which perf knows by no file: [unknown], //anon, or the
    /tmp/perf-PID.map it reads), then by its symbol."""
    if "kernel" in dso:
        return "kernel"
    if dso in ("[unknown]", "//anon") or dso.startswith("/tmp/perf-"):
        return "translated code"
    if sym == "[unknown]":
        return "other"
    return next((name for name, rx in CLASSES if rx.match(sym)), "other")


def samples(data):
    """(tid, time, symbol, dso) of each sample in perf data file data."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,time,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+\S+\s+(\S+)\s+\((.*)\)", line)
        if m:
            yield int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)


def profile(all_samples, tids, start, end):
    """Shares (%) per kind of the samples of threads tids in [start, end],
    and how many of the window's possible samples they had (on CPU %)."""
    if end is None or end <= start:
        return None
    mine = [s for s in all_samples if s[0] in tids and start <= s[1] <= end]
    if not mine:
        return {"ms": (end - start) * 1000, "samples": 0, "on_cpu_pct": 0.0, "pct": {}}
    count = collections.Counter(kind(s[2], s[3]) for s in mine)
    possible = (end - start) * 1e9 / PERIOD_NS * len(tids)
    return {"ms": (end - start) * 1000, "samples": len(mine),
            "on_cpu_pct": 100 * len(mine) / possible,
            "pct": {k: 100 * v / len(mine) for k, v in count.most_common()}}


def measure(name, out_dir):
    sc = scenario(name)
    data = out_dir / f"warmup-{name}.perf"
    perf = []
    vcpus = set()
    started = sc.target_started

    def target_started(h, dst):
        started(h, dst)
        vcpus.update(c["thread-id"] for c in dst.mon.cmd("query-cpus-fast"))
        p = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS),
             "-k", "CLOCK_MONOTONIC", "-p", str(dst.pid()), "-o", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        perf.append((p, dst.pid()))
        time.sleep(2)   # perf attaches; the target only waits meanwhile
        if p.poll() is not None:
            raise RuntimeError(f"perf record failed: {p.stderr.read().decode(errors='replace')}")

    sc.target_started = target_started
    try:
        with harness.Harness(f"warmup-{name}", logs=out_dir / "logs" / f"warmup-{name}") as h:
            r = run(h, sc, measure=True)
    finally:
        for p, _ in perf:
            p.send_signal(signal.SIGINT)   # perf writes its data and exits
            p.wait(60)
    if not perf or perf[0][0].returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"perf record failed ({perf and perf[0][0].returncode})")
    s = list(samples(data))
    t = r.t
    if not s or min(x[1] for x in s) > t["source_stopped"]:
        raise RuntimeError("perf was not recording before the source stopped")
    running = t["target_running"]
    tick = running + r.first_tick_ms / 1000 if r.first_tick_ms is not None else None
    reply = running + r.first_reply_ms / 1000 if r.first_reply_ms is not None else None
    # Steady state: the stream's last second, the guest long warmed up.
    steady = (t["stream_stopping"] - 1.0, t["stream_stopping"])
    main_thread = {perf[0][1]}
    windows = {"to_first_tick": (running, tick), "to_first_reply": (tick, reply),
               "steady": steady}
    return {"scenario": name, "first_tick_ms": r.first_tick_ms,
            "first_reply_ms": r.first_reply_ms, "t": t, "windows": windows,
            "vcpu_threads": sorted(vcpus),
            **{w: profile(s, vcpus, a, b) if a else None for w, (a, b) in windows.items()},
            **{f"main_{w}": profile(s, main_thread, a, b) if a else None
               for w, (a, b) in windows.items()}}


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
        print(f"{x['scenario']}: vCPU thread")
        print(f"  target running -> 1st tick    {line(x['to_first_tick'])}")
        print(f"  1st tick -> 1st reply         {line(x['to_first_reply'])}")
        print(f"  steady (stream's last second) {line(x['steady'])}")
        print(f"{x['scenario']}: main thread (I/O: tap, virtio-net's bottom halves)")
        print(f"  target running -> 1st tick    {line(x['main_to_first_tick'])}")
        print(f"  1st tick -> 1st reply         {line(x['main_to_first_reply'])}")
        print(f"  steady (stream's last second) {line(x['main_steady'])}")
    print("translate: TCG translating guest code (a new process has none translated); tb lookup: "
          "finding translated blocks; softmmu: the TLB and guest memory accesses; translated "
          "code: running it; on CPU: the thread's samples over the window's possible ones "
          "(the rest of the window it waited or was not scheduled)")
    (out_dir / "warmup.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out_dir / 'warmup.json'}")
    left = harness.leftovers()
    if left:
        sys.exit(f"warmup: left behind: {left}")


if __name__ == "__main__":
    main()
