"""Fixed-rate UDP stream to the guest's echo, run inside the test namespace.

    python3 stream.py HOST PORT OUT.json [RATE_HZ]

Sends datagram k at t0 + k / RATE on an absolute schedule: a late or failed
send never shifts the ones after it, and missing replies never slow it down
(iputils ping backs off to ~100 Hz during an outage, which hides losses).
Prints "ready" once the first reply is back; on SIGTERM stops sending, waits
for the replies still on their way (until none came for GRACE_S, at most
DRAIN_MAX_S: a guest behind the stream, on a slow or busy host, still
answers what it was sent) and writes per-sequence send and receive times
(time.monotonic(), comparable with the test process) to OUT.json.
Stdlib only: it runs as a separate process under `ip netns exec`.

Its socket has a 4 MiB receive buffer: a guest that ran late (a new TCG
QEMU, a busy host) answers the datagrams it was sent meanwhile in one
burst, which the default ~200 KiB cannot hold while this process waits
for a CPU.  What the buffer still drops is counted (the namespace's UDP
RcvbufErrors, this socket being the only UDP receiver there) and written
as rcvbuf_errors: a reply lost on the host's side, not in the path under
test.
"""
import json
import select
import signal
import socket
import struct
import sys
import time

GRACE_S = 0.5
RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33  # Linux's; Python's socket module does not name it
DRAIN_MAX_S = 5.0
stop = False


def on_term(_sig, _frame):
    global stop
    stop = True


def udp_rcvbuf_errors():
    """The namespace's UDP RcvbufErrors (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:]))["RcvbufErrors"])


def main():
    host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    period = 1.0 / (float(sys.argv[4]) if len(sys.argv) > 4 else 1000.0)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except PermissionError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.setblocking(False)
    rcvbuf_errors = udp_rcvbuf_errors()
    sent, recv, send_errors = [], {}, 0
    ready = False
    t0 = time.monotonic()
    end = drain_end = None
    while True:
        now = time.monotonic()
        if stop and end is None:
            end = now + GRACE_S
            drain_end = now + DRAIN_MAX_S
        if end is not None and now >= end:
            break
        nxt = t0 + len(sent) * period
        if end is None and now >= nxt:
            seq = len(sent)
            sent.append(now)
            try:
                s.sendto(struct.pack("!Q", seq), (host, port))
            except OSError:
                # No route or no neighbour while the host side switches taps:
                # the datagram is lost like any other.
                send_errors += 1
            continue
        timeout = max(0.0, (end if end is not None else nxt) - now)
        try:
            r, _, _ = select.select([s], [], [], timeout)
        except InterruptedError:
            continue
        if not r:
            continue
        while True:
            try:
                data = s.recv(64)
            except (BlockingIOError, ConnectionRefusedError):
                break
            t = time.monotonic()
            if end is not None:
                # Replies still coming: wait GRACE_S after this one
                end = min(t + GRACE_S, drain_end)
            if len(data) == 8:
                recv.setdefault(struct.unpack("!Q", data)[0], t)
                if not ready:
                    ready = True
                    print("ready", flush=True)
    with open(out, "w") as f:
        json.dump({"period": period, "sent": sent, "send_errors": send_errors,
                   "rcvbuf_errors": udp_rcvbuf_errors() - rcvbuf_errors,
                   "recv": {str(k): v for k, v in recv.items()}}, f)


if __name__ == "__main__":
    main()
