"""Host-side checks: the records tests/e2e/guest/writer.c wrote, and what
the guest saw across a local upgrade.

Record layout: b"MFDSREC1", u64 seq, u64 runid, u32 crc32 (zlib's, over the
record with this field zero), u32 0, payload.  Record seq lives at seq * 4096.
"""
import struct
import zlib

import pytest

REC = 4096


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
    """The disk of a run whose target took today's path (a second
    vhost-user-blk export): every record the guest saw complete reads back
    intact and each QEMU had its own connection.  That path can lose, or
    fail, the completions of writes the backend still held at the
    switchover: the defect the vhost-user-blk handover (issue 6) removes.
    Returns that known defect as text, or None when the writer also went on
    unhurt across the switchover."""
    assert r["records"] > 0
    assert r["bad_records"] == []
    assert r["records_verified"] == r["records"]
    assert r["vhost_user_connections"] == 2
    if r["io_lost"] or r["io_errors"]:
        return (f"second export: {r['io_lost']} completions lost, "
                f"{r['io_errors']} writes failed at the switchover (issue 6)")
    assert not r["writer_stuck"]
    assert r["writes_after"] > r["writes_at_switch"]
    return None


def xfail_on_second_export_defect(r):
    """check_second_export_disk(r), reporting its known defect as an
    expected failure (pytest.xfail) rather than hiding it."""
    defect = check_second_export_disk(r)
    if defect:
        pytest.xfail(defect)


def assert_guest_answers_after(r, event):
    """The guest's network came back: a reply arrived after the time
    r["t"][event], and the guest agent answered at the end of the run."""
    last_reply = max(t for _, _, t in r["arrivals"] if t is not None)
    assert last_reply > r["t"][event]
    assert r["guest_alive_after"]
