/*
 * vub-late-completion: a vhost-user-blk backend for the e2e tests.
 *
 *   vub-late-completion --socket PATH --image FILE [--delay-ms N]
 *
 * Serves the raw image FILE to one vhost-user connection on the unix
 * socket PATH (later connections are logged and closed).  Two things set
 * it apart from qemu-storage-daemon and contrib/vhost-user-blk:
 *  - each request completes N ms (default 30) after the backend took it
 *    from the ring, from a glib timer: requests are inside the backend
 *    when the VM moves to a new QEMU, and complete while it moves;
 *  - a new call fd (VHOST_USER_SET_VRING_CALL) is installed without
 *    being signalled.  libvhost-user signals every new call fd, which
 *    hides a completion that was signalled to the previous QEMU; the
 *    vhost-user spec does not ask a backend to do that.
 * SIGUSR1 holds every completion back, SIGUSR2 does the held ones at once
 * (a storage hiccup): a test makes the guest idle before a switchover, and
 * the backend complete its requests inside the switchover.
 *
 * Log (stderr), one line per event, each starting with CLOCK_REALTIME
 * "seconds.microseconds" (the clock of QMP event timestamps):
 *   listening path=P | connection n=N accepted|refused | msg req=NAME |
 *   SET_VRING_CALL q=Q fd=F inflight=I completed=C |
 *   took q=Q n=K inflight=I | complete q=Q inflight=I completed=C call_fd=F |
 *   queue q=Q started|stopped | hold state=on|off held=H inflight=I |
 *   ended reason=...
 * inflight: requests taken from the rings and not completed yet.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <glib-unix.h>
#include "libvhost-user-glib.h"
#include <linux/virtio_blk.h>

#define SECTOR 512
#define SEG_MAX 64

typedef struct Req {
    VuVirtqElement elem;    /* first: vu_queue_pop() allocates the Req */
    int qidx;
} Req;

static struct {
    VugDev vug;
    int img;
    uint64_t sectors;
    unsigned delay_ms;
    unsigned inflight;
    unsigned long completed;
    unsigned connections;
    bool hold;
    GQueue held;            /* requests due while held, in order */
    GMainLoop *loop;
} B;

/* One log line, written at once, stamped with the wall clock. */
static void G_GNUC_PRINTF(1, 2) say(const char *fmt, ...)
{
    struct timespec ts;
    va_list ap;
    char *msg;

    clock_gettime(CLOCK_REALTIME, &ts);
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%lld.%06ld %s\n", (long long)ts.tv_sec, ts.tv_nsec / 1000,
            msg);
    g_free(msg);
}

static size_t iov_len(const struct iovec *iov, unsigned n)
{
    size_t len = 0;

    while (n--) {
        len += iov[n].iov_len;
    }
    return len;
}

/* Carry out request r; the bytes written into its in buffers in *in_len. */
static uint8_t do_request(Req *r, size_t *in_len)
{
    VuVirtqElement *e = &r->elem;
    struct virtio_blk_outhdr hdr;
    size_t len;
    off_t off;
    ssize_t n;

    *in_len = 0;
    if (e->out_num < 1 || e->out_sg[0].iov_len != sizeof(hdr)) {
        return VIRTIO_BLK_S_IOERR;  /* Linux gives the header its own buffer */
    }
    memcpy(&hdr, e->out_sg[0].iov_base, sizeof(hdr));
    off = le64toh(hdr.sector) * SECTOR;

    switch (le32toh(hdr.type)) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool in = le32toh(hdr.type) == VIRTIO_BLK_T_IN;
        struct iovec *iov = in ? e->in_sg : e->out_sg + 1;
        unsigned cnt = in ? e->in_num : e->out_num - 1;

        len = iov_len(iov, cnt);
        if (off + len > B.sectors * SECTOR) {
            return VIRTIO_BLK_S_IOERR;
        }
        n = in ? preadv(B.img, iov, cnt, off) : pwritev(B.img, iov, cnt, off);
        if (n != (ssize_t)len) {
            return VIRTIO_BLK_S_IOERR;
        }
        *in_len = in ? len : 0;
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_FLUSH:
        return fdatasync(B.img) ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_GET_ID:
        len = MIN(e->in_sg[0].iov_len, VIRTIO_BLK_ID_BYTES);
        memset(e->in_sg[0].iov_base, 0, len);
        memcpy(e->in_sg[0].iov_base, "vub-late-completion",
               MIN(len, strlen("vub-late-completion")));
        *in_len = len;
        return VIRTIO_BLK_S_OK;
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* Request r is due: do it, complete it, signal the call fd (unless held) */
static gboolean complete(gpointer opaque)
{
    Req *r = opaque;
    VuDev *dev = &B.vug.parent;
    VuVirtq *vq;
    struct iovec *last;
    uint8_t *status;
    size_t in_len;

    if (B.hold) {
        g_queue_push_tail(&B.held, r);
        return G_SOURCE_REMOVE;
    }
    B.inflight--;
    vq = vu_get_queue(dev, r->qidx);
    /* A ring stopped meanwhile (GET_VRING_BASE) is no longer ours to fill */
    if (!vu_queue_started(dev, vq) || r->elem.in_num < 1 ||
        r->elem.in_sg[r->elem.in_num - 1].iov_len < 1) {
        say("dropped q=%d inflight=%u", r->qidx, B.inflight);
        free(r);
        return G_SOURCE_REMOVE;
    }
    /* The status byte ends the last in buffer: keep it out of the data */
    last = &r->elem.in_sg[r->elem.in_num - 1];
    last->iov_len--;
    status = (uint8_t *)last->iov_base + last->iov_len;
    *status = do_request(r, &in_len);

    vu_queue_push(dev, vq, &r->elem, in_len + 1);
    vu_queue_notify(dev, vq);
    B.completed++;
    say("complete q=%d inflight=%u completed=%lu call_fd=%d", r->qidx,
        B.inflight, B.completed, vq->call_fd);
    free(r);
    return G_SOURCE_REMOVE;
}

/* A kick: take every request available and start its timer. */
static void on_kick(VuDev *dev, int qidx)
{
    VuVirtq *vq = vu_get_queue(dev, qidx);
    unsigned n = 0;
    Req *r;

    while ((r = vu_queue_pop(dev, vq, sizeof(Req)))) {
        r->qidx = qidx;
        B.inflight++;
        n++;
        g_timeout_add(B.delay_ms, complete, r);
    }
    if (n) {
        say("took q=%d n=%u inflight=%u", qidx, n, B.inflight);
    }
}

/* SIGUSR1: hold completions back; SIGUSR2: do the held ones now */
static gboolean on_hold_signal(gpointer hold)
{
    B.hold = GPOINTER_TO_INT(hold);
    say("hold state=%s held=%u inflight=%u", B.hold ? "on" : "off",
        g_queue_get_length(&B.held), B.inflight);
    while (!B.hold && !g_queue_is_empty(&B.held)) {
        complete(g_queue_pop_head(&B.held));
    }
    return G_SOURCE_CONTINUE;
}

static void on_queue_started(VuDev *dev, int qidx, bool started)
{
    say("queue q=%d %s", qidx, started ? "started" : "stopped");
    vu_set_queue_handler(dev, vu_get_queue(dev, qidx),
                         started ? on_kick : NULL);
}

static void on_panic(VuDev *dev, const char *err)
{
    say("ended reason=\"%s\"", err);
    g_main_loop_quit(B.loop);
}

/*
 * SET_VRING_CALL as the spec has it, unlike libvhost-user: the new call fd
 * replaces the old one and is NOT signalled.  Every other message goes to
 * libvhost-user.
 */
static int on_msg(VuDev *dev, VhostUserMsg *msg, int *do_reply)
{
    unsigned q = msg->payload.u64 & VHOST_USER_VRING_IDX_MASK;
    bool nofd = msg->payload.u64 & VHOST_USER_VRING_NOFD_MASK;
    VuVirtq *vq;
    int i;

    *do_reply = 0;  /* vu_dispatch() acks it if asked to (REPLY_ACK) */
    if (msg->request == VHOST_USER_NONE) {
        on_panic(dev, "connection closed");  /* what reading EOF gives */
        return 1;
    }
    if (msg->request != VHOST_USER_SET_VRING_CALL) {
        say("msg req=%s", vu_request_to_string(msg->request));
        return 0;
    }
    if (q >= dev->max_queues || msg->fd_num != (nofd ? 0 : 1)) {
        for (i = 0; i < msg->fd_num; i++) {
            close(msg->fds[i]);
        }
        on_panic(dev, "invalid SET_VRING_CALL");
        return 1;
    }
    vq = &dev->vq[q];
    if (vq->call_fd >= 0) {
        close(vq->call_fd);
    }
    vq->call_fd = nofd ? -1 : msg->fds[0];
    say("SET_VRING_CALL q=%u fd=%d inflight=%u completed=%lu", q,
        vq->call_fd, B.inflight, B.completed);
    return 1;
}

static uint64_t on_get_features(VuDev *dev)
{
    return 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_BLK_F_SEG_MAX |
           1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_RING_F_INDIRECT_DESC |
           1ULL << VIRTIO_RING_F_EVENT_IDX;
}

static int on_get_config(VuDev *dev, uint8_t *config, uint32_t len)
{
    struct virtio_blk_config c = {
        .capacity = htole64(B.sectors),
        .seg_max = htole32(SEG_MAX),
        .num_queues = htole16(1),
    };

    memset(config, 0, len);
    memcpy(config, &c, MIN(len, sizeof(c)));
    return 0;
}

/* Nothing in the config is writable (no VIRTIO_BLK_F_CONFIG_WCE) */
static int on_set_config(VuDev *dev, const uint8_t *data, uint32_t offset,
                         uint32_t size, uint32_t flags)
{
    return 0;
}

static const VuDevIface iface = {
    .get_features = on_get_features,
    .process_msg = on_msg,
    .queue_set_started = on_queue_started,
    .get_config = on_get_config,     /* with set_config: F_CONFIG */
    .set_config = on_set_config,
};

/* One connection for the life of the backend: a second one is a failure */
static gboolean on_accept(gint lfd, GIOCondition cond, gpointer data)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        return G_SOURCE_CONTINUE;
    }
    B.connections++;
    if (B.connections > 1) {
        say("connection n=%u refused", B.connections);
        close(fd);
        return G_SOURCE_CONTINUE;
    }
    say("connection n=%u accepted", B.connections);
    if (!vug_init(&B.vug, 1, fd, on_panic, &iface)) {
        say("ended reason=\"vug_init failed\"");
        exit(1);
    }
    return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "image", required_argument, NULL, 'i' },
        { "delay-ms", required_argument, NULL, 'd' },
        { NULL },
    };
    const char *path = NULL, *image = NULL;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int c, lfd;

    B.delay_ms = 30;
    while ((c = getopt_long(argc, argv, "s:i:d:", opts, NULL)) != -1) {
        switch (c) {
        case 's': path = optarg; break;
        case 'i': image = optarg; break;
        case 'd': B.delay_ms = strtoul(optarg, NULL, 0); break;
        default: path = NULL; image = NULL; optind = argc; break;
        }
    }
    if (!path || !image || strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "usage: %s --socket PATH --image FILE [--delay-ms N]\n",
                argv[0]);
        return 2;
    }
    B.img = open(image, O_RDWR | O_CLOEXEC);
    if (B.img < 0 || fstat(B.img, &st)) {
        fprintf(stderr, "%s: %s\n", image, strerror(errno));
        return 1;
    }
    B.sectors = st.st_size / SECTOR;

    strcpy(sa.sun_path, path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(lfd, 4)) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    B.loop = g_main_loop_new(NULL, FALSE);
    g_unix_fd_add(lfd, G_IO_IN, on_accept, NULL);
    g_unix_signal_add(SIGUSR1, on_hold_signal, GINT_TO_POINTER(1));
    g_unix_signal_add(SIGUSR2, on_hold_signal, GINT_TO_POINTER(0));
    say("listening path=%s delay_ms=%u sectors=%llu", path, B.delay_ms,
        (unsigned long long)B.sectors);
    g_main_loop_run(B.loop);
    return 0;
}
