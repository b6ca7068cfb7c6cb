"""Building blocks: a network namespace with taps, qemu-storage-daemon with
vhost-user-blk exports, QEMU processes with QMP, the guest agent, the stream.

Everything registers its own teardown on a Harness (an ExitStack), so a
failing test still leaves no namespace, process, socket or /dev/shm file.
"""
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

from . import paths
from .paths import scaled
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402 (paths sets sys.path)

PREFIX = "mfds-"
GUEST_IP, HOST_IP, PREFIXLEN = "10.0.0.2", "10.0.0.1", 24
ECHO_PORT = 7777
TCP_ECHO_PORT = 7778
BOOT_TIMEOUT = 60
MAC = "52:54:00:12:34:56"


def sh(*args, check=True):
    """Run a host command; return its stdout."""
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


# Ids of the harnesses this process created: leftovers() checks only those,
# so a bench running beside a test session does not count against it.
CREATED = set()


def leftovers(ids=None):
    """Anything of ours still around: namespaces, /dev/shm files, run dirs,
    processes (matched by the run dir or shm path in their command line).
    ids: only these harness ids (default: those created by this process);
    "all": every mfds-* there is."""
    ids = CREATED if ids is None else ids
    mine = (lambda name: name.startswith(PREFIX)) if ids == "all" else (lambda name: name in ids)
    found = [f"netns {n}" for n in sh("ip", "netns", "list").split() if mine(n)]
    found += [f"file {p}" for p in Path("/dev/shm").glob(PREFIX + "*") if mine(p.name)]
    found += [f"dir {p}" for p in Path("/tmp").glob(PREFIX + "*") if mine(p.name)]
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for m in re.findall(r"/(?:tmp|dev/shm)/(" + PREFIX + r"[0-9a-f]+)", cmd):
            if mine(m):
                found.append(f"process {p.name}: {cmd[:120]}")
                break
    return found


class Proc:
    """A child process with its output in a log file; stop() is idempotent."""

    def __init__(self, name, argv, log, pass_fds=(), stdout=None):
        self.name = name
        self.log = log
        with open(log, "ab") as f:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=stdout or f, stderr=f,
                                      pass_fds=pass_fds, start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        """The exit status, or None if still running after timeout s
        (scaled: MFDS_TIMEOUT_SCALE)."""
        try:
            return self.p.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.alive():
            self.p.send_signal(sig)
            if self.wait(timeout) is None:  # scaled there
                self.p.kill()
                self.p.wait()
        if self.p.stdout:
            self.p.stdout.close()


class Monitor:
    """Synchronous QMP over a socketpair (no socket path to race for): the
    child gets one end as fd N and `-chardev socket,id=mon,fd=N`."""

    def __init__(self, name):
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fd = self.theirs.fileno()
        self.qmp = QEMUMonitorProtocol(self.ours, nickname=name)
        self.events = []

    def chardev(self, ident="mon"):
        return f"socket,id={ident},fd={self.fd}"

    def connect(self, proc):
        self.theirs.close()  # the child has its copy
        try:
            self.qmp.connect(negotiate=True)
        except Exception as e:
            proc.wait(2)
            tail = Path(proc.log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{proc.name}: no QMP ({e}); log:\n{tail}") from e
        self.qmp.settimeout(scaled(30))

    def cmd(self, name, **args):
        return self.qmp.cmd(name, **args)

    def wait_event(self, match, timeout=60):
        """Wait for an event for which match(event) is true, take it off
        the queue and return it: an event ends one wait at most.  Events
        received meanwhile that do not match stay queued, in order, for
        later waits (e.g. the STOP that came before the MIGRATION
        "completed" waited for first)."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if match(ev):
                return self.events.pop(i)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching QMP event in {timeout}s")
            try:
                ev = self.qmp.pull_event(wait=float(left))
            except TimeoutError:
                continue
            if ev:
                if match(ev):
                    return ev
                self.events.append(ev)

    def discard_events(self):
        """Drop every event QEMU sent before this call, whether a wait has
        seen it or not, so that later waits match only what happens from
        now on: the start of a step, e.g. a hop of chained upgrades, where
        the new source's queue still holds the MIGRATION "completed" of its
        own incoming migration.  A command orders it: QEMU sends the events
        it emitted before the command ahead of its reply."""
        self.cmd("query-status")
        self.qmp.clear_events()
        self.events.clear()

    def close(self):
        with contextlib.suppress(Exception):
            self.qmp.close()
        self.ours.close()
        with contextlib.suppress(OSError):
            self.theirs.close()


def event_time(ev):
    """A QMP event's timestamp on the host's time.monotonic() scale."""
    ts = ev["timestamp"]
    wall = ts["seconds"] + ts["microseconds"] / 1e6
    return wall - (time.time() - time.monotonic())


class Netns:
    """A private network namespace holding the taps and all processes."""

    def __init__(self, name):
        self.name = name
        sh("ip", "netns", "add", name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args):
        return sh("ip", "-n", self.name, *args)

    def batch(self, lines):
        """Several ip commands in one process (fewer ms during a switch)."""
        r = subprocess.run(["ip", "-n", self.name, "-batch", "-"], input="\n".join(lines) + "\n",
                           text=True, capture_output=True)
        if r.returncode:
            raise RuntimeError(f"ip -batch: {r.stderr.strip()}")

    def exec(self, *argv):
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def socket(self, family=socket.AF_INET, kind=socket.SOCK_STREAM):
        """A socket of the namespace for the test process itself: the
        calling thread enters the namespace, creates it and comes back (a
        socket belongs to the namespace it was created in, for good)."""
        libc = ctypes.CDLL(None, use_errno=True)
        clone_newnet = 0x40000000

        def setns(f):
            if libc.setns(f.fileno(), clone_newnet):
                err = ctypes.get_errno()
                raise OSError(err, f"setns {f.name}: {os.strerror(err)}")

        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as ns:
            setns(ns)
            try:
                return socket.socket(family, kind)
            finally:
                setns(home)

    def links(self):
        """Interfaces in the namespace but lo: {name: ifindex}."""
        return {l["ifname"]: l["ifindex"] for l in json.loads(self.ip("-j", "link", "show"))
                if l["ifname"] != "lo"}

    def configure(self, name, addr):
        """Give an existing interface (e.g. a tap QEMU created) an address
        and bring it up."""
        self.batch([f"addr add {addr} dev {name}", f"link set {name} up"])

    def add_tap(self, name, multi_queue=False, addr=None):
        self.ip("tuntap", "add", "dev", name, "mode", "tap",
                *(["multi_queue"] if multi_queue else []))
        if addr:
            self.ip("addr", "add", addr, "dev", name)
        self.ip("link", "set", name, "up")

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)


def tap_fds(pid):
    """The tap interfaces of the tun/tap fds process pid holds, one entry
    per fd (a multiqueue tap appears once per queue)."""
    names = []
    # Not by the fd's path: one received from a process in another mount
    # namespace (ip netns exec makes one each) reads as "/net/tun".
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            info = fd.read_text()
        except OSError:
            continue
        m = re.search(r"^iff:\s*(\S+)", info, re.M)
        if m:
            names.append(m.group(1))
    return sorted(names)


def fd_kinds(pid):
    """What process pid's fds are, sorted: "listen PATH" for a listening
    unix socket, "unix PATH" for another unix socket (PATH: its own bound
    name, if any), "socket" for other sockets, the tap's "tun IFNAME", else
    the link target without inode numbers (e.g. "anon_inode:[eventfd]")."""
    unix = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
            f = line.split()
            listening = int(f[3], 16) & 0x10000
            unix[f[6]] = ("listen " if listening else "unix ") + (f[7] if len(f) > 7 else "")
    tun = {}
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            m = re.search(r"^iff:\s*(\S+)", fd.read_text(), re.M)
            if m:
                tun[fd.name] = f"tun {m.group(1)}"
    kinds = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if fd.name in tun:
            kinds.append(tun[fd.name])
        elif m:
            kinds.append(unix.get(m.group(1), "socket").strip())
        else:
            kinds.append(re.sub(r":\[\d+\]$", "", target))
    return sorted(kinds)


def proc_usage(pid):
    """What process pid holds: its open fds and its resident memory (kB,
    from /proc/PID/status: VmRSS and its anonymous, file and shmem parts;
    guest RAM in the shared /dev/shm file counts as shmem, for the pages
    this process touched)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v) for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB",
                                           status, re.M)}
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_kb": kb["VmRSS"],
            "anon_kb": kb["RssAnon"], "file_kb": kb["RssFile"], "shmem_kb": kb["RssShmem"]}


class TcpEcho:
    """One TCP connection from the host side of the namespace to an echo
    server in the guest (busybox `nc -l -p PORT -e cat`: the accepted socket
    is cat's stdin and stdout, so every byte comes back, in order).

    exchange() sends message n (its own length, 1 to 4000 bytes, and
    content) and reads it back, raising on a reset, an end of stream, a
    timeout or a byte that differs.  start()/stop(): exchanges back to back
    in a thread, e.g. across a switchover."""

    def __init__(self, h, agent, port=TCP_ECHO_PORT, timeout=30):
        agent.run(f"nc -l -p {port} -e cat >/dev/null 2>&1 &")
        agent.run(f"for i in $(seq 100); do netstat -ltn | grep -q ':{port} ' && exit 0; "
                  f"sleep 0.1; done; netstat -ltn; exit 1")
        self.port = port
        self.sock = h.ns.socket()
        h.stack.callback(self.close)
        self.sock.settimeout(scaled(timeout))
        self.sock.connect((GUEST_IP, port))
        self.local_port = self.sock.getsockname()[1]
        self.n = 0            # exchanges completed
        self.bytes = 0        # bytes echoed back and checked
        self.error = None     # what ended the background exchanges
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def message(n):
        size = 1 + (n * 797) % 4000
        seed = hashlib.sha256(n.to_bytes(8, "big")).digest()
        return (seed * (size // len(seed) + 1))[:size]

    def exchange(self):
        msg = self.message(self.n)
        self.sock.sendall(msg)
        got = b""
        while len(got) < len(msg):
            data = self.sock.recv(len(msg) - len(got))
            if not data:
                raise ConnectionError(f"end of stream in exchange {self.n}")
            got += data
        if got != msg:
            raise AssertionError(f"exchange {self.n}: echo differs from what was sent")
        self.n += 1
        self.bytes += len(msg)

    def _loop(self):
        try:
            while not self._stop.is_set():
                self.exchange()
        except Exception as e:  # reported by stop()
            self.error = e

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def wait_more(self, count, timeout=60):
        """Wait until count more exchanges completed in the background;
        False if the thread ended or the time ran out first."""
        target = self.n + count
        deadline = time.monotonic() + scaled(timeout)
        while self.n < target:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self):
        """Stop the background exchanges; return what ended them (None:
        the stop)."""
        self._stop.set()
        self._thread.join(scaled(60))
        return self.error

    def tcp_state(self):
        """The host socket's TCP state (tcpi_state: 1 is ESTABLISHED)."""
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]

    def close(self):
        if self._thread and self._thread.is_alive():
            self._stop.set()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes its recv()
            self._thread.join(scaled(5))
        self.sock.close()


def vu_panics(log):
    """The vu_panic lines of a libvhost-user backend's log file."""
    p = Path(log)
    return [ln for ln in p.read_text(errors="replace").splitlines() if "vu_panic" in ln] \
        if p.exists() else []


class Storage:
    """qemu-storage-daemon serving a raw image over vhost-user-blk exports.

    Connections the daemon saw: every vhost-user client arrives through an
    accept() on an export's listening socket, and the daemon's only other
    socket, its QMP monitor, is a pre-connected socketpair (no accept).  So
    the count of the `qio_channel_socket_accept_complete` trace event in its
    log is the number of vhost-user connections.
    """

    def __init__(self, h, image, iops_limit=None, queues=1):
        """queues: the virtqueues each export offers (its num-queues)."""
        self.h = h
        self.node = "disk0"
        self.queues = queues
        self.trace = h.dir / "qsd-trace.log"
        self.mon = Monitor("qsd")
        blockdev = ["--blockdev", f"driver=file,node-name=file0,filename={image}"]
        if iops_limit:
            # Keeps requests inside the daemon for a while (a slow backend).
            blockdev = ["--object", f"throttle-group,id=tg0,x-iops-total={iops_limit}",
                        *blockdev, "--blockdev",
                        f"driver=throttle,node-name={self.node},file=file0,throttle-group=tg0"]
        else:
            blockdev[1] = blockdev[1].replace("node-name=file0", f"node-name={self.node}")
        argv = h.ns.exec(paths.QSD,
                         "--chardev", self.mon.chardev(), "--monitor", "chardev=mon",
                         "--trace", f"enable=qio_channel_socket_accept_complete,file={self.trace}",
                         *blockdev)
        self.proc = Proc("qsd", argv, h.dir / "qsd.log", pass_fds=[self.mon.fd])
        h.stack.callback(self.close)
        self.mon.connect(self.proc)

    def add_export(self, ident, sock):
        self.mon.cmd("block-export-add", type="vhost-user-blk", id=ident,
                     **{"node-name": self.node, "num-queues": self.queues}, writable=True,
                     addr={"type": "unix", "path": str(sock)})

    def connections(self):
        if not self.trace.exists():
            return 0
        return self.trace.read_text().count("qio_channel_socket_accept_complete")

    def panics(self):
        """The lines of the daemon's log in which libvhost-user gave up on
        a connection (vu_panic, e.g. "Error writing eventfd")."""
        return vu_panics(self.proc.log)

    def close(self):
        with contextlib.suppress(Exception):
            if self.proc.alive():
                self.mon.cmd("quit")
        self.proc.wait(5)
        self.proc.stop()
        self.mon.close()


class ContribBlk:
    """contrib/vhost-user-blk serving the image on one socket.  It accepts one
    connection, serves it and exits when it closes: still running at the end
    with the guest's writes done means the one connection lived through
    everything.  It offers inflight tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD),
    which qemu-storage-daemon does not."""

    def __init__(self, h, image, sock):
        argv = h.ns.exec(paths.CONTRIB_VUB, "-s", str(sock), "-b", str(image))
        self.proc = Proc("contrib-vub", argv, h.dir / "contrib-vub.log")
        h.stack.callback(self.close)
        deadline = time.monotonic() + scaled(10)
        while not os.path.exists(sock):
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError("contrib vhost-user-blk did not listen")
            time.sleep(0.01)

    def connections(self):
        return 1 if self.proc.alive() else 0

    def panics(self):
        """As Storage.panics()."""
        return vu_panics(self.proc.log)

    def close(self):
        self.proc.stop()


class Agent:
    """Client of the guest agent (tests/e2e/guest/mfds-agent) on the VM's
    second serial port, a unix socket QEMU listens on."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = None
        self.buf = b""
        self.n = 0

    def _connect(self, timeout):
        deadline = time.monotonic() + scaled(timeout)
        while self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.path)
                self.sock = s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _send(self, cmd):
        self.n += 1
        ident = f"c{self.n}"
        self.sock.sendall(f"\n{ident} {cmd}\n".encode())
        return ident

    def _wait(self, ident, timeout):
        """Output and exit code of command ident, or None on timeout
        (seconds as given: its callers scale their limits)."""
        pat = re.compile(rb"@@MFDS-END " + ident.encode() + rb" (\d+)\n")
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.buf)
            if m:
                out = self.buf[:m.start()]
                self.buf = self.buf[m.end():]
                # Drop the end markers of other (stale) commands.
                out = re.sub(rb"@@MFDS-END \S+ \d+\n", b"", out)
                return int(m.group(1)), out.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], min(left, 1.0))
            if r:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("agent socket closed")
                self.buf += data

    def wait_boot(self, timeout=BOOT_TIMEOUT):
        """Ping until the agent answers.  Pings sent while the port was not
        yet open may be cut or replayed later: each has its own id."""
        deadline = time.monotonic() + scaled(timeout)
        self._connect(timeout)  # scaled there
        while time.monotonic() < deadline:
            if self._wait(self._send("echo pong"), 1.0):  # a ping's, not scaled
                return
        raise TimeoutError(f"guest agent did not answer in {scaled(timeout)}s")

    def run(self, cmd, timeout=30, check=True):
        self._connect(5)  # scaled there
        r = self._wait(self._send(cmd), scaled(timeout))
        if r is None:
            raise TimeoutError(f"guest command timed out ({scaled(timeout)}s): {cmd}")
        rc, out = r
        if check and rc:
            raise RuntimeError(f"guest command failed ({rc}): {cmd}\n{out}")
        return out

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


class Vm:
    """One QEMU process of the VM: role "src" or "dst".  Guest RAM lives in a
    shared file on /dev/shm that both processes map (x-ignore-shared)."""

    def __init__(self, h, role, netdev, disk_sock, incoming=(), machine="",
                 extra=(), connect=True, nic_queues=None, disk_chardev_opts="",
                 disk_device_opts="", qemu=None):
        """incoming: the -incoming values (e.g. ["defer"]); machine: extra
        -machine options; connect=False leaves QMP to a later connect()
        (a cpr-transfer target opens its monitor only after the source's
        migrate); nic_queues: the queue pairs the virtio-net device is
        sized for (default: the netdev's queues=), so that a target can
        keep the source's PCI device with a different tap;
        disk_chardev_opts, disk_device_opts: appended to the disk's
        -chardev socket and -device vhost-user-blk-pci options (e.g.
        ",migrate-fds=on"); qemu: another QEMU binary than the build's
        (e.g. paths.BASE_QEMU)."""
        self.h = h
        self.role = role
        self.mon = Monitor(role)
        self.agent = Agent(h.dir / f"agent-{role}.sock")
        m = re.search(r"(?:^|,)queues=(\d+)", netdev)
        queues = nic_queues or (int(m.group(1)) if m else 1)
        argv = [
            qemu or paths.QEMU, "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", "tcg", "-machine", f"pc,memory-backend=ram0{machine}", "-smp", "1",
            "-m", f"{h.ram_mb}M" + (f",slots={h.mem_slots},maxmem={h.ram_mb + 256 * h.mem_slots}M"
                                    if h.mem_slots else ""),
            "-object", f"memory-backend-file,id=ram0,size={h.ram_mb}M,mem-path={h.shm},share=on",
            "-kernel", paths.KERNEL, "-initrd", paths.INITRD, "-no-reboot",
            "-append", f"console=ttyS0 quiet panic=-1 mfds.ip={GUEST_IP}/{PREFIXLEN}",
            "-chardev", f"file,id=con,path={h.dir}/console-{role}.log",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=agent,path={self.agent.path},server=on,wait=off",
            "-serial", "chardev:agent",
            "-netdev", netdev,
            # romfile=: no iPXE ROM, the guest boots with -kernel.
            # A vector per rx and tx queue, one for config, one for control.
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=" +
            (f",mq=on,vectors={2 * queues + 2}" if queues > 1 else ""),
            "-chardev", f"socket,id=vub0,path={disk_sock}{disk_chardev_opts}",
            "-device", f"vhost-user-blk-pci,chardev=vub0,id=disk0{disk_device_opts}",
            "-chardev", self.mon.chardev(), "-mon", "chardev=mon,mode=control",
            *[a for i in incoming for a in ("-incoming", i)], *extra,
            # Debugging aid, e.g. MFDS_QEMU_ARGS="-L /some/firmware".
            *shlex.split(os.environ.get("MFDS_QEMU_ARGS", "")),
        ]
        self.proc = Proc(f"qemu-{role}", h.ns.exec(*argv), h.dir / f"qemu-{role}.log",
                         pass_fds=[self.mon.fd])
        h.stack.callback(self.close)
        if connect:
            self.connect()

    def connect(self):
        self.mon.connect(self.proc)

    def pid(self):
        """QEMU's pid (ip netns exec execs it in place)."""
        return self.proc.p.pid

    def hmp(self, line):
        return self.mon.cmd("human-monitor-command", **{"command-line": line})

    def set_migration(self, caps, params):
        self.mon.cmd("migrate-set-capabilities",
                     capabilities=[{"capability": k, "state": v} for k, v in caps.items()])
        if params:
            self.mon.cmd("migrate-set-parameters", **params)

    def quit(self, timeout=15):
        """`quit`, and wait for QEMU to exit.  Returns its exit status (0:
        a clean exit; negative: the signal that ended it, e.g. -6 for an
        abort on the way out), or None if it did not exit by itself within
        timeout (it is then stopped: SIGTERM, after which a QEMU exits 0,
        or SIGKILL; that status is not the quit's)."""
        with contextlib.suppress(Exception):
            self.mon.cmd("quit")
        rc = self.proc.wait(timeout)  # scaled there
        self.close()
        return rc

    def close(self):
        self.agent.close()
        self.proc.stop()
        self.mon.close()


class Stream:
    """The 1 kHz UDP stream (stream.py) from the host side of the namespace."""

    def __init__(self, h, rate=1000):
        self.out = h.dir / "stream.json"
        argv = h.ns.exec(paths.PYTHON, paths.STREAM, GUEST_IP, ECHO_PORT, self.out, rate)
        self.proc = Proc("stream", argv, h.dir / "stream.log", stdout=subprocess.PIPE)
        h.stack.callback(self.proc.stop)

    def wait_ready(self, timeout=20):
        r, _, _ = select.select([self.proc.p.stdout], [], [], scaled(timeout))
        line = self.proc.p.stdout.readline() if r else b""
        if line.strip() != b"ready":
            raise TimeoutError("no reply from the guest echo")

    def stop(self):
        self.proc.stop(signal.SIGTERM, timeout=10)
        data = json.loads(self.out.read_text())
        sent = data["sent"]
        recv = {int(k): v for k, v in data["recv"].items()}
        return {"sent_t": sent, "recv": recv, "send_errors": data["send_errors"],
                "rcvbuf_errors": data["rcvbuf_errors"]}


def accept_until_stopped(listener, stop):
    """One connection accepted on listener, or None once the event stop is
    set (checked every 0.1 s, so that a teardown never waits on accept)."""
    listener.settimeout(0.1)
    while not stop.is_set():
        try:
            return listener.accept()[0]
        except socket.timeout:
            continue
    return None


class Proxy:
    """A relay between the source's `migrate` (to uri) and the target's
    listening socket (target), which forwards the stream with its fds: each
    chunk goes on with the SCM_RIGHTS it came with, so every fd keeps its
    place in the stream.  It stands for the migration socket where a test
    must close that socket from outside (cut()) or hold the stream at a
    point of the handover, which no signal reaches deterministically.
    hold: None relays everything; "sent" holds everything from the first
    chunk that carries fds (the source has sent its fds, the target has
    none of them); "load" relays, once the source has sent everything,
    up to and including the last chunk that carries fds (the target has
    every fd, its load waits for the rest).  held is set once the stream
    waits at that point; release() lets the rest go on."""

    def __init__(self, h, target, hold=None):
        assert hold in (None, "sent", "load"), hold
        self.path = h.sock("proxy")
        self.uri = f"unix:{self.path}"
        self.target = str(target)
        self.hold = hold
        self.chunks = []          # (data, fds) held back
        self.fds_sent = 0         # fds the source sent
        self.fds_forwarded = 0    # fds passed on to the target
        self.bytes_forwarded = 0  # bytes passed on to the target
        self.held = threading.Event()
        self.error = None
        self._lock = threading.Lock()
        self._holding = False
        self._eof = False
        self._stop = threading.Event()
        self.src = self.dst = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        h.stack.callback(self.close)

    def _send(self, data, fds):
        self.bytes_forwarded += len(data)
        if fds:
            n = socket.send_fds(self.dst, [data], fds)
            self.dst.sendall(data[n:])
            self.fds_forwarded += len(fds)
            for fd in fds:
                os.close(fd)
        else:
            self.dst.sendall(data)

    def _forward_held(self, upto):
        """Forward the first upto held chunks."""
        for data, fds in self.chunks[:upto]:
            self._send(data, fds)
        del self.chunks[:upto]

    def _source_eof(self):
        self._eof = True
        if self.hold == "load":
            last = max((i for i, (_, fds) in enumerate(self.chunks) if fds), default=-1)
            self._forward_held(last + 1)
        if self._holding:
            self.held.set()
        else:
            self.dst.shutdown(socket.SHUT_WR)

    def _run(self):
        try:
            self.src = accept_until_stopped(self.listener, self._stop)
            if self.src is None:
                return
            self.dst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.dst.connect(self.target)
            while not self._stop.is_set():
                socks = [self.dst] if self._eof else [self.src, self.dst]
                r, _, _ = select.select(socks, [], [], 0.1)
                with self._lock:
                    if self._stop.is_set():
                        break
                    if self.src in r:
                        data, fds, flags, _ = socket.recv_fds(self.src, 65536, 64)
                        if flags & socket.MSG_CTRUNC:
                            raise RuntimeError("the proxy could not take the fds sent")
                        self.fds_sent += len(fds)
                        if not data:
                            self._source_eof()
                        elif self._holding or (self.hold and fds):
                            self._holding = True
                            self.chunks.append((data, fds))
                        else:
                            self._send(data, fds)
                    if self.dst in r:
                        data = self.dst.recv(65536)
                        if not data:
                            # The target went: so does the socket, for the source.
                            self._close_sockets()
                            return
                        self.src.sendall(data)
        except (OSError, ValueError) as e:
            if not self._stop.is_set():
                self.error = e

    def wait_held(self, timeout=30):
        """Wait until the stream is held, and the target has read all that
        was passed on (the fds in it are the target's now)."""
        timeout = scaled(timeout)
        if not self.held.wait(timeout):
            raise TimeoutError(f"the stream did not reach the hold point ({self.hold}): "
                               f"{self.fds_sent} fds sent, error {self.error!r}")
        deadline = time.monotonic() + timeout
        buf = bytearray(4)
        while True:
            # What the target has not read yet (SIOCOUTQ: a unix socket's
            # unread bytes count against its sender).
            fcntl.ioctl(self.dst.fileno(), termios.TIOCOUTQ, buf)
            if int.from_bytes(buf, "little") == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the target does not read the stream")
            time.sleep(0.01)

    def wait_forwarded(self, timeout=10):
        """Wait until the proxy has passed on at least the stream's first 4
        bytes and all else the source sent so far, and the target has read
        it: a cut after that breaks a load that has begun.  (A cut before
        the target read those 4 bytes would fail QEMU's peek at the
        channel's magic, after which QEMU 10.2.2 marks the migration failed
        and keeps listening.)"""
        deadline = time.monotonic() + scaled(timeout)
        buf = bytearray(4)
        while True:
            with self._lock:
                if self.error or not self._thread.is_alive():
                    raise RuntimeError(f"the proxy stopped: {self.error!r}")
                waiting = None   # unread: bytes at the proxy, socket memory at the target
                if self.bytes_forwarded >= 4:
                    fcntl.ioctl(self.src.fileno(), termios.FIONREAD, buf)
                    waiting = int.from_bytes(buf, "little")
                    fcntl.ioctl(self.dst.fileno(), termios.TIOCOUTQ, buf)
                    waiting += int.from_bytes(buf, "little")
            if waiting == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream is not passed on ({self.bytes_forwarded} bytes "
                                   f"forwarded, {waiting} unread)")
            time.sleep(0.01)

    def release(self):
        """Let the held stream go on to the target, to its end."""
        with self._lock:
            self._holding = False
            self._forward_held(len(self.chunks))
            if self._eof:
                self.dst.shutdown(socket.SHUT_WR)

    def _close_sockets(self):
        for s in (self.src, self.dst):
            if s:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for _, fds in self.chunks:
            for fd in fds:
                os.close(fd)
        self.chunks = []

    def cut(self):
        """Close the migration socket, for both ends, and drop what is held."""
        with self._lock:
            self._stop.set()
            self._close_sockets()
        self._thread.join(scaled(5))

    def close(self):
        self.cut()
        self.listener.close()


class Harness:
    """One VM's world: namespace, run dir, shared RAM file, image, daemon.
    Use as a context manager; teardown runs in reverse order of set-up."""

    def __init__(self, name="run", ram_mb=256, image_mb=1024, logs=None):
        self.id = PREFIX + secrets.token_hex(4)
        CREATED.add(self.id)
        self.name = name
        self.ram_mb = ram_mb
        # Memory hotplug slots (of up to 256 MiB each) of every QEMU of the
        # VM: a test sets it before the first boots.
        self.mem_slots = 0
        self.logs = logs
        self.stack = contextlib.ExitStack()
        self.dir = Path("/tmp") / self.id
        self.shm = Path("/dev/shm") / self.id
        self.image = self.dir / "disk.img"
        self.image_mb = image_mb

    def __enter__(self):
        self.stack.__enter__()
        try:
            self.dir.mkdir()
            self.stack.callback(self._remove_dir)
            self.stack.callback(lambda: self.shm.unlink(missing_ok=True))
            with open(self.image, "wb") as f:
                f.truncate(self.image_mb << 20)
            self.ns = Netns(self.id)
            self.stack.callback(self.ns.delete)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)

    def _remove_dir(self):
        if self.logs:
            dest = Path(self.logs)
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True, exist_ok=True)
            for p in self.dir.iterdir():
                if p.suffix in (".log", ".json"):
                    shutil.copy(p, dest / p.name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def sock(self, name):
        return self.dir / f"{name}.sock"
