"""Test backends written in C for the e2e tests (tests/e2e/backends/), built
by the harness itself on first use, and the classes that run them.

A backend is compiled with cc into work/e2e-backends/ when its binary is
missing or older than its source or the libraries it links (the build's
libvhost-user and glib, which building QEMU needs too).  A backend that
cannot be built fails the test that needs it, with the compiler's output:
never a skip.
"""
import os
import re
import shlex
import signal
import subprocess
import time

from . import paths
from .harness import Proc
from .paths import scaled

SRC = paths.ROOT / "tests/e2e/backends"
OUT = paths.ROOT / "work/e2e-backends"


def _libvhost_user():
    """The include dir and the static libraries of the build's
    libvhost-user (its headers live in the QEMU source tree)."""
    libdir = paths.BUILD / "subprojects/libvhost-user"
    libs = [libdir / "libvhost-user-glib.a", libdir / "libvhost-user.a"]
    # The build dir is <source>/build (MFDS_BUILD may be a dir of links in it).
    for src in (libdir.resolve().parents[2], paths.ROOT / "work/qemu"):
        inc = src / "subprojects/libvhost-user"
        if (inc / "libvhost-user-glib.h").exists():
            return inc, libs
    raise RuntimeError(f"no libvhost-user headers for {libdir} (run make tree)")


def build(name):
    """Path of the binary of tests/e2e/backends/NAME.c, compiled if needed."""
    src = SRC / f"{name}.c"
    out = OUT / name
    inc, libs = _libvhost_user()
    if not src.exists():
        raise RuntimeError(f"cannot build {name}: no {src}")
    missing = [str(p) for p in libs if not p.exists()]
    if missing:
        raise RuntimeError(f"cannot build {name}: missing {', '.join(missing)} (run make build)")
    newest = max(p.stat().st_mtime for p in (src, *libs))
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    glib = subprocess.run(["pkg-config", "--cflags", "--libs", "glib-2.0"],
                          capture_output=True, text=True)
    if glib.returncode:
        raise RuntimeError(f"cannot build {name}: pkg-config glib-2.0: {glib.stderr.strip()}")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.{os.getpid()}")  # a concurrent build never sees half a binary
    argv = ["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-I", str(inc), "-o", str(tmp), str(src),
            *map(str, libs), *shlex.split(glib.stdout), "-pthread"]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {name} failed:\n{shlex.join(argv)}\n{r.stderr}")
    os.replace(tmp, out)
    return out


def parse_log(text):
    """The lines of a backend log as (wall time, kind, {key: value}) (see the
    comment at the top of the backend's source): e.g. (1764620000.123456,
    "complete", {"q": "0", "inflight": "3", ...}).  A line still being
    written (no newline yet) is left out."""
    events = []
    for line in text.splitlines(keepends=True):
        m = re.match(r"(\d+\.\d+) (\S+)(.*)\n$", line)
        if m:
            fields = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", m.group(3)))
            events.append((float(m.group(1)), m.group(2), fields))
    return events


class LateCompletionBlk:
    """tests/e2e/backends/vub-late-completion.c serving the image on one
    socket: each request completes delay_ms after the backend took it from
    the ring, and a new call fd is installed without being signalled (unlike
    libvhost-user, which writes every new call fd once).  hold() holds the
    completions back and lets them go.  It serves one vhost-user connection
    and logs every connection it saw; it stops at the harness's teardown
    (or when its connection ends)."""

    NAME = "vub-late-completion"

    def __init__(self, h, image, sock, delay_ms=30):
        binary = build(self.NAME)
        self.log = h.dir / f"{self.NAME}.log"
        argv = h.ns.exec(binary, "--socket", sock, "--image", image, "--delay-ms", delay_ms)
        self.proc = Proc(self.NAME, argv, self.log)
        h.stack.callback(self.close)
        deadline = time.monotonic() + scaled(10)
        while not any(kind == "listening" for _, kind, _ in self.events()):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.NAME} did not listen; log:\n{self.tail()}")
            time.sleep(0.01)

    def events(self):
        return parse_log(self.log.read_text(errors="replace")) if self.log.exists() else []

    def tail(self, n=3000):
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def hold(self, on, timeout=5):
        """Hold every completion back (on), or do the held ones at once
        (off, which then logs them as completions); returns once the
        backend logged that it did (a "hold" line)."""
        before = sum(1 for _, kind, _ in self.events() if kind == "hold")
        os.kill(self.proc.p.pid, signal.SIGUSR1 if on else signal.SIGUSR2)  # ip netns exec execs it
        deadline = time.monotonic() + scaled(timeout)
        while sum(1 for _, kind, _ in self.events() if kind == "hold") <= before:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.NAME} did not take the hold; log:\n{self.tail()}")
            time.sleep(0.005)

    def connections(self):
        """vhost-user connections it saw, served or refused."""
        return sum(1 for _, kind, _ in self.events() if kind == "connection")

    def alive(self):
        return self.proc.alive()

    def close(self):
        self.proc.stop()
