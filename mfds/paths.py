"""Locations of the build, the guest and QEMU's own python package."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("MFDS_BUILD", ROOT / "work/qemu/build"))
QEMU = BUILD / "qemu-system-x86_64"
# The unpatched QEMU 10.2.2 (scripts/build-base.sh): what the series must not slow down
BASE_BUILD = Path(os.environ.get("MFDS_BASE_BUILD", ROOT / "work/qemu-base/build"))
BASE_QEMU = BASE_BUILD / "qemu-system-x86_64"
QSD = BUILD / "storage-daemon/qemu-storage-daemon"
# contrib/vhost-user-blk: a backend with inflight tracking (F_INFLIGHT_SHMFD)
CONTRIB_VUB = BUILD / "contrib/vhost-user-blk/vhost-user-blk"
GUEST = ROOT / "work/guest"
KERNEL = GUEST / "vmlinuz"
INITRD = GUEST / "initrd.img"
STREAM = Path(__file__).with_name("stream.py")
PYTHON = "/usr/bin/python3"


def _positive_float(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r}: must be a number greater than 0")
    return value


# One multiplier for every limit the harness puts on a wait (QMP, the guest
# agent, process exits, deadlines...), e.g. MFDS_TIMEOUT_SCALE=3 on a slow
# or busy machine.  Pacing sleeps, rates and measured durations keep theirs.
TIMEOUT_SCALE = _positive_float("MFDS_TIMEOUT_SCALE", 1)


def scaled(seconds):
    """A wait limit of seconds on this machine (None: no limit)."""
    return None if seconds is None else seconds * TIMEOUT_SCALE

# QMP through the tree's own python/qemu package (the tree the build came from).
_qemu_python = BUILD.parent / "python"
if not (_qemu_python / "qemu/qmp").is_dir():
    _qemu_python = ROOT / "work/qemu/python"
if str(_qemu_python) not in sys.path:
    sys.path.insert(0, str(_qemu_python))


def missing():
    """Files the harness needs that are not there, as a list of strings."""
    return [str(p) for p in (QEMU, QSD, KERNEL, INITRD) if not p.exists()]
