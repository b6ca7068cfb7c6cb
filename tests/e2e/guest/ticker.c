/*
 * Guest-side ticker: a control for the network gap of a local upgrade that
 * needs no network.  It writes one short record per tick to an
 * isa-debugcon I/O port, whose chardev is the host's (mfds/ticker.py):
 *
 *   ticker [PERIOD_US [COUNT [IOBASE [RTPRIO]]]]
 *       PERIOD_US  tick period, microseconds (default 1000: 1 kHz)
 *       COUNT      ticks to write, 0 for no end (default 0)
 *       IOBASE     the debugcon's port (default 0xe9)
 *       RTPRIO     run SCHED_FIFO at this priority (default 0: as any
 *                  process), so that other guest processes cannot delay a
 *                  tick: what is left is the guest kernel and QEMU
 *
 * Slot k is due at t0 + k * PERIOD_US (CLOCK_MONOTONIC, absolute sleeps, so
 * a late wakeup never shifts the slots after it).  Its record is "t<k>\n";
 * a tick that wakes a whole period late or more does not catch up in a
 * burst: it skips to the slot now due and says how many it skipped,
 * "t<k> <skipped>\n", so the host tells the guest's skips from records lost
 * on the way.  Records are short ASCII (8 bytes for the first 10^6 slots):
 * each byte is one port write, and one chardev write in QEMU.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/io.h>
#include <time.h>

#define NSEC 1000000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * NSEC + ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = { .tv_sec = t / NSEC, .tv_nsec = t % NSEC };
    /* EINTR (a stop/cont of the process): the loop checks the time anyway. */
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void put_record(unsigned short port, uint64_t seq, uint64_t skipped)
{
    char buf[48];
    int n = skipped ? snprintf(buf, sizeof(buf), "t%llu %llu\n", (unsigned long long)seq,
                               (unsigned long long)skipped)
                    : snprintf(buf, sizeof(buf), "t%llu\n", (unsigned long long)seq);
    for (int i = 0; i < n; i++)
        outb(buf[i], port);
}

int main(int argc, char **argv)
{
    uint64_t period = (argc > 1 ? strtoull(argv[1], NULL, 0) : 1000) * 1000;
    uint64_t count = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
    unsigned long port = argc > 3 ? strtoul(argv[3], NULL, 0) : 0xe9;
    int rtprio = argc > 4 ? atoi(argv[4]) : 0;

    if (!period || port > 0xffff || rtprio < 0 || rtprio > 99) {
        fprintf(stderr, "usage: ticker [PERIOD_US [COUNT [IOBASE [RTPRIO]]]]\n");
        return 2;
    }
    if (rtprio) {
        struct sched_param sp = { .sched_priority = rtprio };
        if (sched_setscheduler(0, SCHED_FIFO, &sp)) {
            perror("sched_setscheduler");
            return 1;
        }
    }
    if (ioperm(port, 1, 1)) {
        perror("ioperm");
        return 1;
    }
    uint64_t t0 = now_ns(), seq = 0, skipped = 0, written = 0;
    while (!count || written < count) {
        sleep_until(t0 + seq * period);
        uint64_t due = (now_ns() - t0) / period;
        if (due > seq) {
            /* A period late or more: slots seq..due-1 are skipped. */
            skipped = due - seq;
            seq = due;
        }
        put_record(port, seq, skipped);
        skipped = 0;
        seq++;
        written++;
    }
    return 0;
}
