"""Host-side checks: the records tests/e2e/guest/writer.c wrote, and what
the guest saw across a local upgrade.

Record layout: b"MFDSREC1", u64 seq, u64 runid, u32 crc32 (zlib's, over the
record with this field zero), u32 0, payload.  Record seq lives at seq * 4096.
"""
import re
import struct
import zlib

REC = 4096


class KnownDefect(Exception):
    """A known defect of QEMU 10.2.2 itself (not of the series) showed; its
    text says which.  The e2e tests' conftest.py reports it as an expected
    failure (pytest.xfail with this text); elsewhere it is an error."""


def check_image(path, count, run=1):
    """Check records 0..count-1 of the raw image at path.

    Returns (good, bad_seqs): good counts records with the right magic, seq,
    run id and checksum; bad_seqs lists the others (at most 20 shown).
    """
    good, bad = 0, []
    with open(path, "rb") as f:
        for seq in range(count):
            rec = f.read(REC)
            ok = len(rec) == REC and rec[:8] == b"MFDSREC1"
            if ok:
                s, r, crc = struct.unpack_from("<QQI", rec, 8)
                ok = (s == seq and r == run and
                      zlib.crc32(rec[:24] + b"\0\0\0\0" + rec[28:]) == crc)
            if ok:
                good += 1
            elif len(bad) < 20:
                bad.append(seq)
    return good, bad


def check_second_export_disk(r):
    """The disk of a run of code this series adds (a tap handover, the
    vhost-user-blk property on one side only) whose disk took today's path,
    a second export: the daemon saw two connections, one per QEMU, and
    never gave one up (no vu_panic in its log); every record reads back
    intact, and every write the guest submitted completed, without an
    error, the writer going on on the target and draining to the end.  No
    known defect excuses a loss here: only the baseline, which runs no code
    of the series, may report one (known_second_export_defect)."""
    msg = io_summary(r)
    assert r.vhost_user_connections == 2, msg
    assert r.backend_panics == [], msg
    assert_records_intact(r, msg)
    assert r.writes_after > r.writes_at_switch, msg


def known_second_export_defect(r, depth):
    """The disk of the baseline (QEMU 10.2.2's local upgrade, no code of
    the series: r.scenario must be a baseline), a second export.  The
    source's stop of the vrings (GET_VRING_BASE) while the daemon still
    holds requests can lose their completions; the daemon may then also
    panic on the old connection writing the call eventfd it closed
    ("vu_panic: Error writing eventfd"), and the used ring entry it wrote
    breaks the guest's disk ("id N is not a head"): every later write
    fails.  The vhost-user-blk handover removes both (issue 6).

    Returns that known defect as text when the run lost writes in just
    that way, or lost none but the daemon panicked, None when neither
    happened; fails on anything else.  Always: two
    connections (the second export was used), the writer not stuck.  Lost
    writes: the writer's log lists them (lost_seqs), at most depth (the
    writer's queue depth) of them, each submitted before the target ran
    (its record lies below the records written when the target ran alone,
    records_at_switch, plus depth).  Failed writes: only after the daemon's
    panic (its log says so), and every record but the failed and lost ones
    reads back intact, none before the first lost one bad.  Without
    either, as check_second_export_disk."""
    assert r.scenario.startswith("baseline"), \
        f"{r.scenario}: only the baseline may report the known defect of today's path"
    msg = io_summary(r)
    assert r.vhost_user_connections == 2, msg
    assert r.records > 0, msg
    assert not r.writer_stuck, msg
    if not r.io_lost and not r.io_errors:
        assert r.bad_records == [], msg
        assert r.records_verified == r.records, msg
        assert r.writes_after > r.writes_at_switch, msg
        if not r.backend_panics:
            return None
        # The same defect, caught after the completions it could lose had
        # all come: the daemon panicked on the old connection only.
        return (f"second export: no write lost, but the daemon's "
                f"{r.backend_panics[0].strip()!r} on the source's connection: the known "
                f"defect of today's path (issue 6)")
    lost = r.lost_seqs
    assert len(lost) == r.io_lost, f"the writer's log lists {lost} as lost: {msg}"
    assert r.io_lost <= depth, f"more writes lost than were in flight: {msg}"
    bound = r.records_at_switch + depth
    late = [s for s in lost if s >= bound]
    assert not late, (f"writes {late} were lost, submitted after the switchover "
                      f"(records {bound} on): {msg}")
    defect = f"{r.io_lost} completions lost at the switchover (records {lost})"
    if r.io_errors:
        assert r.backend_panics, f"writes failed, the daemon did not panic: {msg}"
        assert r.records - r.records_verified <= r.io_errors + r.io_lost, msg
        assert not lost or min(r.bad_records, default=r.records) >= min(lost), msg
        defect += (f", then the daemon's {r.backend_panics[0].strip()!r} and "
                   f"{r.io_errors} writes failed after it")
    else:
        assert r.bad_records == [], msg
        assert r.records_verified == r.records, msg
    return (f"second export: {defect}; {r.records_at_switch} records written when the "
            f"target ran: the known defect of today's path (issue 6)")


def xfail_on_known_second_export_defect(r, depth):
    """known_second_export_defect(r, depth), reporting the known defect as
    an expected failure (KnownDefect, an xfail in the tests) rather than
    hiding it."""
    defect = known_second_export_defect(r, depth)
    if defect:
        raise KnownDefect(defect)


def assert_guest_answers_after(r, event):
    """The guest's network came back: a reply arrived after the time
    r.t[event], and the guest agent answered at the end of the run."""
    last_reply = max(t for _, _, t in r.arrivals if t is not None)
    assert last_reply > r.t[event]
    assert r.guest_alive_after


def io_summary(r):
    """What the guest's writer saw, in one line (for logs and assertion
    messages)."""
    w = r.writer
    return (f"{r.records} records, {r.records_verified} verified intact "
            f"(bad: {r.bad_records}), {r.io_lost} completions lost"
            f"{' (records ' + str(r.lost_seqs) + ')' if r.lost_seqs else ''}, "
            f"{r.io_errors} writes failed, "
            f"writer {'stuck' if r.writer_stuck else 'done'}; "
            f"longest I/O stall {r.io_stall_ms:.1f} ms at {w['stall_at_ms']} ms, "
            f"stalls over 20 ms (at ms, ms): {r.io_stalls}")


def assert_every_write_completed(r):
    """The disk of a run whose vhost-user-blk connection stayed the same
    (handed over, or kept by a source that runs again): every record the
    guest wrote reads back intact, and every write it submitted completed,
    without an error, the writer draining to the end.  No known defect
    excuses a loss here: on a connection that is never closed, the
    requests the daemon holds at the switchover complete into the shared
    guest RAM like any other."""
    assert_records_intact(r, io_summary(r))


def assert_records_intact(r, msg):
    """Every record the guest wrote reads back intact, none lost or failed,
    and the writer did not get stuck."""
    assert r.records > 0, msg
    assert r.bad_records == [], msg
    assert r.records_verified == r.records, msg
    assert r.io_lost == 0, msg
    assert r.io_errors == 0, msg
    assert not r.writer_stuck, msg


def make_downscript(h, role):
    """A downscript for role's tap that records the interface it was run for
    in h.dir/downscript-<role>.ran; returns its path and that file's."""
    ran = h.dir / f"downscript-{role}.ran"
    script = h.dir / f"downscript-{role}.sh"
    script.write_text(f"#!/bin/sh\necho \"$1\" >>{ran}\n")
    script.chmod(0o755)
    return script, ran


def tap_info(info_network, netdev="n0"):
    """What HMP `info network` says of the tap netdev, one entry per queue
    (the line under each queue of the NIC: " \\ n0: index=Q,type=tap,INFO"):
    the INFO strings, e.g. "ifname=tap0,script=no,downscript=no", or
    "ifname=tap0,downscript=no,migrate-fds=on (handed over)" on a target that took the
    fds over."""
    return re.findall(r"^ \\ " + re.escape(netdev) + r": index=\d+,type=tap,(.*?)\s*$",
                      info_network, re.M)


def tap_ifname(info):
    """The ifname= of one tap_info() entry (None if it has none)."""
    m = re.match(r"ifname=([^,]*)", info)
    return m.group(1) if m else None
