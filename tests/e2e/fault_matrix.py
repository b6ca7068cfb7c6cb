#!/usr/bin/env python3
"""Print the fault matrix's table (markdown) from the last run of
tests/e2e/test_fault_matrix.py: one JSON file per cell in
work/e2e/fault-matrix/ (or $MFDS_LOGS/fault-matrix/).  The test writes the
same table to work/e2e/fault-matrix.md when it ends.

    python3 tests/e2e/fault_matrix.py [DIR]
"""
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_DIR = Path(os.environ.get("MFDS_LOGS", ROOT / "work/e2e")) / "fault-matrix"

# (scenario, point, fault) -> the outcome that must be: who runs the guest.
CELLS = {
    ("vub", "before-send", "target-kill"): "source",
    ("vub", "before-send", "cancel"): "source",
    ("vub", "before-send", "socket-closed"): "source",
    ("vub", "sent", "target-kill"): "source",
    ("vub", "sent", "source-kill"): "target",
    ("vub", "sent", "cancel"): "target",
    ("vub", "sent", "socket-closed"): "source",
    ("vub", "load", "target-kill"): "source",
    ("vub", "load", "source-kill"): "target",
    ("vub", "load", "socket-closed"): "source",
    ("vub", "load", "load-fails"): "source",
    ("vub", "load", "out-of-fds"): "source",
    ("vub", "loaded", "target-kill"): "source",
    ("vub", "loaded", "source-kill"): "target",
    ("vub", "loaded", "cancel"): "target",
    ("vub", "running", "target-kill"): "none",
    ("vub", "running", "source-kill"): "target",
    ("tap", "before-send", "target-kill"): "source",
    ("tap", "sent", "source-kill"): "target",
    ("tap", "load", "socket-closed"): "source",
    ("tap", "load", "load-fails"): "source",
    ("tap", "load", "out-of-fds"): "source",
    ("tap", "loaded", "source-kill"): "target",
}

# Cells not run, and why (they are in the table all the same).
NOT_RUN = {
    ("*", "before-send", "source-kill"):
        "both gone: the target has no device state, its load fails at the end of the stream",
    ("*", "before-send", "load-fails / out-of-fds"):
        "no device state or fd is sent before this point: these strike at load",
    ("*", "sent", "load-fails / out-of-fds"):
        "strike when the target reads the stream: the load row",
    ("*", "loaded / running", "socket-closed / load-fails / out-of-fds"):
        "the stream has ended and every fd is taken: nothing left to strike",
    ("*", "load (target executing a device's load)", "any signal"):
        "not deterministic: a signal cannot be aimed at it; the load row holds the stream "
        "right after the fds instead, and load-fails fails the load past them",
    ("vub", "load / running", "cancel"):
        "as at sent and loaded: the migration has completed on the source, where "
        "migrate_cancel is a no-op (it answers {}, query-migrate says completed)",
    ("tap", "other cells", "any"):
        "the tap's failure paths are those of vub's tap (run above); the tap rows add the "
        "2-queue tap (out-of-fds leaves room for one of its 2 fds) and the second export",
}


def cell_id(cell):
    return "-".join(cell)


POINT_ORDER = ("before-send", "sent", "load", "loaded", "running")
LEGEND = """Points: *before-send*: the source stopped the VM and waits before sending any
device state (`pause-before-switchover`); *sent*: the source sent everything, fds
included, and completed, the stream held by a proxy on the migration socket before
the first fd reaches the target; *load*: the target took every fd and its load waits
for the rest of the stream (same proxy), or the load fails by itself (*load-fails*:
a device the target lacks, after the NIC and the disk in the stream; *out-of-fds*:
the target's RLIMIT_NOFILE leaves room for one handed-over fd, MSG_CTRUNC);
*loaded*: a `-S` target loaded the state, took the fds, does not run; *running*:
right after `cont` on that target. *socket-closed*: the proxy closes both ends.
*must*/*outcome*: who runs the guest afterwards (management: the target if it
loaded and lives, else the source; nobody if the guest already ran on a target that
is gone). Every passed cell also asserted: exactly that QEMU runs the guest, the
guest answers and loses no datagram once it does, every completed write reads back
intact and writes go on, the same tap (name, ifindex, every queue) held by the
survivor, one vhost-user connection (vub; tap: its own second export), the
survivor's fd count equal to the source's before the attempt, clean exits.
*datagrams*: of the 1 kHz stream, from its start to the end of the cell; *lost* may
only be datagrams sent during the outage (asserted), which the tap's queue holds
(1000 packets) until a QEMU reads it again. *failed target holds*: a target whose
load failed, kept alive (`exit-on-error: false`) to see what it holds: its fds (count
at its start) and what it did not hold then. It must hold no tap fd and nothing
else it did not hold then: none of the vhost-user-blk session's sockets and eventfds
either. *exit*: 0 a clean quit, -9 SIGKILLed, empty: it ran on."""


def short(text, n=70):
    if not text:
        return ""
    text = str(text).replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[:n - 3] + "..."


def cell_row(c):
    kind, point, fault = c["cell"]
    res = c["result"]
    if res != "passed":
        res = short(res, 90)
    lost = f"{c.get('sent', '')}/{c.get('lost', '')}" if c.get("sent") is not None else ""
    writes = f"{c.get('records_verified')}/{c.get('records')}" if c.get("records") else ""
    fds = (f"{c.get('source_fds_before')} → {c.get('survivor_fds')}"
           if c.get("survivor_fds") is not None else "")
    kept = ""
    if c.get("target_fate") == "failed":
        kept = f"{c.get('failed_target_fds')} fds (had {c.get('target_fds_at_start')})"
        if c.get("failed_target_kept"):
            kept += ": " + ", ".join(short(k, 40) for k in c["failed_target_kept"])
    exits = f"{c.get('source_exit')}/{c.get('target_exit')}"
    err = c.get("target_error") or ""
    err = err.replace("load of migration failed: ", "")
    return (f"| {kind} | {point} | {fault} | {c['expected']} | {c.get('outcome', '')} | {res} "
            f"| {','.join(c.get('running') or []) or '-'} | {lost} | {writes} "
            f"| {c.get('vhost_user_connections', '')} | {fds} | {kept} | {exits} "
            f"| {short(err, 60)} |")


def render(directory=DEFAULT_DIR):
    cells = []
    for cell in CELLS:
        p = Path(directory) / f"{cell_id(cell)}.json"
        cells.append(json.loads(p.read_text()) if p.exists() else
                     {"cell": list(cell), "expected": CELLS[cell], "result": "not run yet"})
    cells.sort(key=lambda c: (c["cell"][0] != "vub", POINT_ORDER.index(c["cell"][1])))
    out = ["| scenario | point | fault | must | outcome | result | running | datagrams sent/lost "
           "| writes intact | vhost-user conns | survivor fds (source before → after) "
           "| failed target holds | exit src/dst | target's error |",
           "|" + "---|" * 14]
    out += [cell_row(c) for c in cells]
    out += ["", "Not run:", "", "| scenario | point | fault | why |", "|---|---|---|---|"]
    out += [f"| {k} | {p} | {f} | {why} |" for (k, p, f), why in NOT_RUN.items()]
    out += ["", LEGEND]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR), end="")
