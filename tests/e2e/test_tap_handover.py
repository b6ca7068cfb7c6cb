"""The tap handover (-netdev tap,...,migrate-fds=on and the migrate-fds
migration parameter): the target QEMU takes over the open fds of the tap the
source QEMU created, every queue, and nothing is switched on the host.  The
guest, receiving the 1 kHz stream, loses not one datagram across the local
upgrade; the interface is the same (same ifindex) and outlives the source,
held by the target.  The disk is as in the baseline (second vhost-user-blk
export) and must come through just as intact.  A target that does not take
over (its load fails, or it is killed after the fds were sent) leaves the
source serving the guest's network.  Behaviour only: the timings are for
`make bench`."""
import pytest

from mfds.scenario import TapHandover, run, run_failed_target
from mfds.verify import check_second_export_disk


@pytest.mark.parametrize("queues", [1, 2, 4], ids=["tap", "tap-queues-2", "tap-queues-4"])
def test_tap_handover_local_upgrade(h, queues):
    r = run(h, TapHandover(queues=queues))

    # Migration: completed, QEMU's own downtime figure, target running, source gone.
    assert r["migration"]["status"] == "completed"
    assert isinstance(r["downtime_ms"], int) and r["downtime_ms"] >= 0
    assert r["target_status"] == "running"
    assert r["source_exit"] is not None

    # The tap: the source held one fd per queue; after the source quit the
    # very same interface (a non-persistent tap QEMU created: it would have
    # gone with its last fd) is there with the same ifindex, no other
    # interface appeared, and the target holds it, every queue, handed over.
    assert r["source_tap_fds"] == ["tap0"] * queues
    assert r["links_after"] == r["links_before"]
    assert list(r["links_after"]) == ["tap0"]
    assert r["target_tap_fds"] == ["tap0"] * queues
    assert "handed over" in r["target_network"]

    # Network: the guest answers on the target, and no datagram is lost but,
    # a known gap (issue 5), one the source had already read from the tap
    # and queued for its NIC when it stopped: at most one per queue, sent
    # before the target ran.  Anything else is a failure.
    assert r["sent"] > 0
    lost = [ts for _, ts, tr in r["arrivals"] if tr is None]
    assert len(lost) == r["lost"]
    assert len(lost) <= queues and all(ts < r["t"]["target_running"] for ts in lost), \
        f"{r['lost']} of {r['sent']} datagrams lost"
    last_reply = max(t for _, _, t in r["arrivals"] if t is not None)
    assert last_reply > r["t"]["source_gone"]
    assert r["guest_alive_after"]

    # Disk, as in the baseline (second export).
    known = []
    if lost:
        known.append(f"{len(lost)} datagram(s) the source had queued for its "
                     "NIC when it stopped were not handed over (issue 5)")
    defect = check_second_export_disk(r)
    if defect:
        known.append(defect)
    if known:
        pytest.xfail("; ".join(known))


# load-fails: 4 queues handed to a target whose tap has 2 (same virtio-net
# device): its load fails and it exits.  killed: a single-queue handover
# completes into a paused (-S) target, which is then SIGKILLed.  Either way
# the source (which saw the migration complete: no return path) is told to
# `cont`, as management does when it loses the target.
@pytest.mark.parametrize("how,queues", [("load-fails", 4), ("killed", 1)],
                         ids=["load-fails", "target-killed"])
def test_tap_handover_target_lost(h, how, queues):
    r = run_failed_target(h, TapHandover(queues=queues), how)

    if how == "load-fails":
        assert r["target_exit"] not in (None, 0)
    else:
        # The target did take the fds before it was killed.
        assert r["migration_status"] == "completed"
        assert r["target_tap_fds"] == ["tap0"] * queues

    # The source runs again on its own fds: same interface, same ifindex,
    # still all its queues, and the guest's network serves the stream.
    assert r["links_after"] == r["links_before"] == {"tap0": r["links_before"]["tap0"]}
    assert r["source_tap_fds_after"] == r["source_tap_fds_before"] == ["tap0"] * queues
    assert "tap0" in r["source_network"]
    assert r["replies_after_recovery"] > 0
    # Every datagram sent from half a second after the source resumed got
    # its reply.
    tail = [tr for _, ts, tr in r["arrivals"] if ts > r["t"]["source_running"] + 0.5]
    assert tail and all(tr is not None for tr in tail)
    assert r["guest_alive_after"]

    # Issue 5: every received fd owned or closed, without "never claimed"
    # warnings.  Today the failed load closes them in qemu_fclose() with
    # that warning: flagged here, not failed, until the series fixes it.
    if how == "load-fails" and "never claimed" in r["target_log"]:
        pytest.xfail("target warns: received fd ... was never claimed")
