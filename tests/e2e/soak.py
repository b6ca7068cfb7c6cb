"""`make soak`: a VM's life across many local upgrades (not in `make check`).

SOAK_HOPS (100) handovers in a row under the vhost-user-blk-migrate-fds
scenario (the tap and the vhost-user-blk session both handed over;
qemu-storage-daemon throttled to 1000 IOPS, the guest writer keeping 32
writes in flight), the 1 kHz UDP stream and the writer running across
them.  Every SOAK_EVERY (10) hops, on the QEMU of that hop: a stop/cont
with the stream running (the writer paused and drained, see quiesced()),
then the segment ends (the stream's losses and every record of the
writer's run checked), then a guest reboot, and a new writer run and
stream start on the rebooted guest.

Asserted: every hop completes and its source quits cleanly; the tap is
the same interface, held once; the daemon sees the first QEMU's one
connection to the end; no datagram lost in any segment; every write of
every run completed and reads back intact; each new QEMU holds as many
fds as the first target and the last one's RSS stays within 20% of the
first targets'.  The series (fds, RSS, per-segment figures) is printed
and written to work/e2e/test_soak/soak.json."""
import json
import os
import statistics
import time

import pytest

from mfds import harness as hn
from mfds.result import RunResult
from mfds.scenario import boot_source, scenario, start_echo, start_writer, stream_figures
from test_vub_lifecycle import disk_works, finish, hand_over, qmp, quiesced, reboot, wait_running

HOPS = int(os.environ.get("SOAK_HOPS", "100"))
EVERY = int(os.environ.get("SOAK_EVERY", "10"))


def start_stream(h):
    stream = hn.Stream(h)
    stream.wait_ready()
    return stream


def lost_ranges(s, events):
    """The runs of lost datagrams, each with its first send time relative
    to the latest event (name, time) before it, for the failure message."""
    sent = {seq: t for seq, t, _ in s.arrivals}
    runs = []
    for seq in (seq for seq, _, tr in s.arrivals if tr is None):
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    out = []
    for a, b in runs:
        before = [(n, t) for n, t in events if t <= sent[a]]
        name, t = before[-1] if before else ("start", sent[0])
        out.append(f"{b - a + 1} from #{a}, {(sent[a] - t) * 1000:.0f} ms after {name}")
    return out


# Its own per-test timeout (conftest.py: MFDS_TEST_TIMEOUT is for one
# ordinary test): generous per hop, times MFDS_TIMEOUT_SCALE.
@pytest.mark.timeout_s(600 + 30 * HOPS)
def test_soak(h):
    sc = scenario("vhost-user-blk-migrate-fds")
    sc.setup(h)
    r = RunResult()
    vm = boot_source(h, sc, r)
    links = h.ns.links()
    run = 1
    start_writer(vm, run)
    stream = start_stream(h)
    usage = [hn.proc_usage(vm.pid())]
    segments = []
    started = time.monotonic()
    events = []
    for hop in range(1, HOPS + 1):
        vm, figures = hand_over(h, sc, vm, role=f"dst{hop}")
        events += [(f"hop {hop} migrate", figures.t["migrate"]),
                   (f"hop {hop} target running", figures.t["target_running"])]
        assert h.ns.links() == links, f"hop {hop}"
        assert hn.tap_fds(vm.pid()) == ["tap0"], f"hop {hop}"
        usage.append(hn.proc_usage(vm.pid()))
        if hop % EVERY and hop != HOPS:
            continue
        # A stop/cont with the stream running: the tap is not read while
        # the VM is stopped, so what arrives meanwhile waits in its queue.
        with quiesced(vm):
            events.append((f"stop at hop {hop}", time.monotonic()))
            qmp(vm, "stop")
            time.sleep(0.2)
            qmp(vm, "cont")
            wait_running(vm)
        disk_works(h, vm, f"stop/cont at hop {hop}")
        s = stream_figures(stream.stop())
        finish(h, vm, r, run=run)
        seg = {"hop": hop, "run": run, "datagrams_sent": s.sent, "datagrams_lost": s.lost,
               "gap_ms": round(s.gap_ms, 1), "records": r.records,
               "records_verified": r.records_verified, "io_lost": r.io_lost}
        segments.append(seg)
        print("segment:", seg)
        lost = [seq for seq, _, tr in s.arrivals if tr is None]
        assert s.sent > 0
        assert lost == [], (f"hops up to {hop}: {len(lost)} of {s.sent} datagrams lost ({s.host_drops} by the host's socket): "
                            f"{lost_ranges(s, events)}")
        if hop == HOPS:
            break
        reboot(h, vm)
        start_echo(vm)
        run += 1
        r = RunResult()
        start_writer(vm, run)
        disk_works(h, vm, f"the reboot at hop {hop}")
        stream = start_stream(h)

    fds = [u["fds"] for u in usage]
    rss = [u["rss_kb"] for u in usage]
    result = {"hops": HOPS, "every": EVERY, "seconds": round(time.monotonic() - started),
              "fds": fds, "rss_kb": rss, "segments": segments,
              "vhost_user_connections": h.qsd.connections()}
    (h.dir / "soak.json").write_text(json.dumps(result))
    print("fds:", fds)
    print("rss_kb:", rss)
    print(f"soak: {HOPS} hops in {result['seconds']} s, "
          f"{sum(x['datagrams_sent'] for x in segments)} datagrams and "
          f"{sum(x['records_verified'] or 0 for x in segments)} records verified, "
          f"{sum(x['datagrams_lost'] for x in segments)} datagrams lost")

    assert result["vhost_user_connections"] == 1
    assert fds[1:] == [fds[1]] * HOPS, fds
    base = statistics.median(rss[1:4])
    assert rss[-1] <= base * 1.2, rss
