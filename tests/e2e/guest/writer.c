/*
 * Guest-side block writer for the migrate-fds end-to-end tests.
 *
 *   writer write DEV [-q DEPTH] [-l LOG] [-s STATUS] [-r RUNID]
 *       Writes 4 KiB records 0, 1, 2, ... at offset seq * 4096 with O_DIRECT
 *       and Linux AIO (raw syscalls: no libaio in the guest), keeping DEPTH
 *       writes in flight (default 32).  On SIGTERM/SIGINT it stops submitting,
 *       drains what is in flight (at most DRAIN_S seconds), writes one
 *       "seq t_us" line per completion to LOG and prints a summary line:
 *         records=N completions=C lost=L errors=E max_stall_ms=X stall_at_ms=Y state=final
 *       Records 0..N-1 were all submitted; lost counts submitted writes that
 *       never completed.  The longest stall is the longest interval between
 *       two consecutive completions (guest clock).  STATUS holds the same
 *       line, rewritten every 100 ms with state=running (lost = in flight),
 *       so a writer stuck in the kernel on writes that never complete still
 *       tells what it saw.
 *
 *   writer verify DEV N [-r RUNID]
 *       Reads records 0..N-1 back (O_DIRECT) and checks them; prints
 *       "verified=K bad=B first_bad=S".
 *
 * Record layout (little endian): "MFDSREC1", u64 seq, u64 runid, u32 crc32
 * (zlib's, over the whole record with this field zero), u32 0, then a payload
 * derived from seq.  The host verifier (mfds/verify.py) reads the
 * same layout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define REC 4096
#define DRAIN_S 20
#define MAXQ 256

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static uint32_t crc_table[256];
static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}
static uint32_t crc32(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void fill(unsigned char *buf, uint64_t seq, uint64_t run)
{
    uint64_t *w = (uint64_t *)buf;
    memcpy(buf, "MFDSREC1", 8);
    w[1] = seq;
    w[2] = run;
    w[3] = 0;
    for (size_t i = 4; i < REC / 8; i++)
        w[i] = (seq * 0x9e3779b97f4a7c15ull) ^ i;
    uint32_t c = crc32(buf, REC);
    memcpy(buf + 24, &c, 4);
}

/* 0 when buf holds a good record seq of run. */
static int check(unsigned char *buf, uint64_t seq, uint64_t run)
{
    uint64_t *w = (uint64_t *)buf;
    uint32_t c;
    if (memcmp(buf, "MFDSREC1", 8) || w[1] != seq || w[2] != run)
        return -1;
    memcpy(&c, buf + 24, 4);
    memset(buf + 24, 0, 4);
    return crc32(buf, REC) == c ? 0 : -1;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000ull + ts.tv_nsec / 1000;
}

static int open_dev(const char *dev, int flags, uint64_t *nrec)
{
    int fd = open(dev, flags | O_DIRECT);
    uint64_t size = 0;
    if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0) {
        perror(dev);
        exit(2);
    }
    *nrec = size / REC;
    return fd;
}

struct stats {
    uint64_t next, completions, errors, max_stall, stall_at;
    int inflight;
};

static void put_status(FILE *f, const struct stats *st, const char *state)
{
    fprintf(f, "records=%llu completions=%llu lost=%d errors=%llu "
            "max_stall_ms=%.3f stall_at_ms=%.3f state=%s\n",
            (unsigned long long)st->next, (unsigned long long)st->completions,
            st->inflight, (unsigned long long)st->errors, st->max_stall / 1000.0,
            st->stall_at / 1000.0, state);
}

/* Rewrite the status file in place (one short line). */
static void save_status(int fd, const struct stats *st, const char *state)
{
    char buf[256];
    FILE *m;
    if (fd < 0 || !(m = fmemopen(buf, sizeof(buf), "w")))
        return;
    put_status(m, st, state);
    long n = ftell(m);
    fclose(m);
    if (pwrite(fd, buf, n, 0) == n)
        ftruncate(fd, n);
}

static int do_write(const char *dev, int depth, const char *logpath,
                    const char *statpath, uint64_t run)
{
    uint64_t nrec, last = 0, start, saved = 0;
    struct stats st = { 0 };
    int fd = open_dev(dev, O_RDWR, &nrec);
    int sfd = statpath ? open(statpath, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    aio_context_t ctx = 0;
    struct iocb iocbs[MAXQ];
    struct io_event ev[MAXQ];
    unsigned char *buf[MAXQ];
    size_t logcap = 1 << 16, logn = 0;
    uint64_t (*log)[2] = malloc(logcap * sizeof(*log));

    if (syscall(SYS_io_setup, depth, &ctx) < 0) {
        perror("io_setup");
        return 2;
    }
    for (int i = 0; i < depth; i++) {
        if (posix_memalign((void **)&buf[i], REC, REC))
            return 2;
    }
    start = last = now_us();

    /* Slots 0..depth-1; a slot is resubmitted as soon as it completes. */
    for (int i = 0; i < depth && st.next < nrec; i++) {
        struct iocb *cb = &iocbs[i];
        fill(buf[i], st.next, run);
        memset(cb, 0, sizeof(*cb));
        cb->aio_fildes = fd;
        cb->aio_lio_opcode = IOCB_CMD_PWRITE;
        cb->aio_buf = (uintptr_t)buf[i];
        cb->aio_nbytes = REC;
        cb->aio_offset = st.next * REC;
        cb->aio_data = i;
        if (syscall(SYS_io_submit, ctx, 1, (struct iocb *[]){ cb }) != 1) {
            perror("io_submit");
            return 2;
        }
        st.next++;
        st.inflight++;
    }
    printf("started depth=%d records=%llu\n", depth, (unsigned long long)nrec);
    fflush(stdout);

    uint64_t drain_until = 0;
    while (st.inflight > 0) {
        if (stop && !drain_until)
            drain_until = now_us() + DRAIN_S * 1000000ull;
        if (drain_until && now_us() > drain_until)
            break;
        struct timespec to = { 0, 100 * 1000 * 1000 };
        long n = syscall(SYS_io_getevents, ctx, 1, st.inflight, ev, &to);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("io_getevents");
            return 2;
        }
        uint64_t t = now_us();
        if (t - saved > 100000) {
            save_status(sfd, &st, "running");
            saved = t;
        }
        for (long k = 0; k < n; k++) {
            int i = ev[k].data;
            struct iocb *cb = &iocbs[i];
            st.inflight--;
            st.completions++;
            if (ev[k].res != REC)
                st.errors++;
            if (!stop && t - last > st.max_stall) {
                st.max_stall = t - last;
                st.stall_at = last - start;
            }
            last = t;
            if (logn == logcap) {
                logcap *= 2;
                log = realloc(log, logcap * sizeof(*log));
            }
            log[logn][0] = cb->aio_offset / REC;
            log[logn][1] = t - start;
            logn++;
            if (stop || st.next >= nrec)
                continue;
            fill(buf[i], st.next, run);
            cb->aio_offset = st.next * REC;
            if (syscall(SYS_io_submit, ctx, 1, (struct iocb *[]){ cb }) != 1) {
                perror("io_submit");
                st.errors++;
                continue;
            }
            st.next++;
            st.inflight++;
        }
    }
    if (logpath) {
        FILE *f = fopen(logpath, "w");
        for (size_t i = 0; f && i < logn; i++)
            fprintf(f, "%llu %llu\n", (unsigned long long)log[i][0],
                    (unsigned long long)log[i][1]);
        if (f)
            fclose(f);
    }
    save_status(sfd, &st, "final");
    put_status(stdout, &st, "final");
    return st.inflight || st.errors ? 1 : 0;
}

static int do_verify(const char *dev, uint64_t n, uint64_t run)
{
    uint64_t nrec, bad = 0, first_bad = UINT64_MAX;
    int fd = open_dev(dev, O_RDONLY, &nrec);
    unsigned char *b;
    if (posix_memalign((void **)&b, REC, REC))
        return 2;
    for (uint64_t s = 0; s < n; s++) {
        if (pread(fd, b, REC, s * REC) != REC || check(b, s, run)) {
            bad++;
            if (first_bad == UINT64_MAX)
                first_bad = s;
        }
    }
    printf("verified=%llu bad=%llu first_bad=%lld\n",
           (unsigned long long)(n - bad), (unsigned long long)bad,
           first_bad == UINT64_MAX ? -1LL : (long long)first_bad);
    return bad ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: writer write DEV [-q DEPTH] [-l LOG] [-s STATUS] [-r RUNID]\n"
                    "       writer verify DEV N [-r RUNID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int depth = 32;
    const char *logpath = NULL, *statpath = NULL;
    uint64_t run = 1, n = 0;
    int pos = 0;
    const char *mode = NULL, *dev = NULL;

    crc_init();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q") && i + 1 < argc)
            depth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-l") && i + 1 < argc)
            logpath = argv[++i];
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            statpath = argv[++i];
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            run = strtoull(argv[++i], NULL, 0);
        else if (pos == 0)
            mode = argv[i], pos++;
        else if (pos == 1)
            dev = argv[i], pos++;
        else if (pos == 2)
            n = strtoull(argv[i], NULL, 0), pos++;
        else
            usage();
    }
    if (!mode || !dev || depth < 1 || depth > MAXQ)
        usage();
    if (!strcmp(mode, "write")) {
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        setvbuf(stdout, NULL, _IOLBF, 0);
        return do_write(dev, depth, logpath, statpath, run);
    }
    if (!strcmp(mode, "verify") && pos == 3)
        return do_verify(dev, n, run);
    usage();
    return 2;
}
