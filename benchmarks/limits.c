/* Physical limits of this machine, measured in the same run as the benchmarks (benchmarks/bench_limits.py).
 *
 * Theory of operation: two measurements, each printed as one JSON object on stdout.
 *   limits memcpy SIZE ITERATIONS   memcpy of SIZE bytes between two private buffers, ITERATIONS times:
 *                                   "hot" reuses one source and one destination (they stay in cache when
 *                                   they fit), "cold" walks through 64 MiB in SIZE steps (memory bound).
 *   limits futex ITERATIONS         ping-pong between two processes (fork) over one shared word: each
 *                                   side flips the word and wakes the other with FUTEX_WAKE, then sleeps
 *                                   with FUTEX_WAIT until the word flips back (no spinning): the kernel's
 *                                   round trip, what any blocking IPC pays at least. "spin" is the same
 *                                   ping-pong busy-waiting on the word (a cache line's round trip between
 *                                   cores; it yields the CPU after a while so one CPU still progresses).
 *   limits futex|spin ITERATIONS CPU_A CPU_B   the same with the parent pinned to CPU_A, the child to CPU_B.
 * The parent writes the word's even values, the child the odd ones; nothing else is shared.
 * Compiled at run time with `cc -O2`; never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int measure_memcpy(size_t size, long iterations) {
    const size_t cold_span = (size_t)64 << 20;
    size_t span = size > cold_span ? size : cold_span;
    unsigned char *src = aligned_alloc(64, size), *dst = aligned_alloc(64, size);
    unsigned char *big_src = aligned_alloc(64, span), *big_dst = aligned_alloc(64, span);
    if (!src || !dst || !big_src || !big_dst) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    memset(src, 1, size), memset(dst, 2, size), memset(big_src, 3, span), memset(big_dst, 4, span);
    volatile unsigned char sink = 0;
    for (int i = 0; i < 3; i++) memcpy(dst, src, size);
    double t0 = now_ns();
    for (long i = 0; i < iterations; i++) {
        memcpy(dst, src, size);
        sink ^= dst[(size_t)i % size];
    }
    double hot = now_ns() - t0;
    size_t steps = span / size;
    t0 = now_ns();
    for (long i = 0; i < iterations; i++) {
        size_t at = ((size_t)i % steps) * size;
        memcpy(big_dst + at, big_src + at, size);
        sink ^= big_dst[at];
    }
    double cold = now_ns() - t0;
    printf("{\"size\": %zu, \"iterations\": %ld, \"hot_mb_per_s\": %.1f, \"cold_mb_per_s\": %.1f}\n", size,
           iterations, (double)size * iterations / 1e6 / (hot / 1e9), (double)size * iterations / 1e6 / (cold / 1e9));
    (void)sink;
    free(src), free(dst), free(big_src), free(big_dst);
    return 0;
}

static long futex(atomic_uint *word, int op, unsigned value) {
    return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

/* Wait until *word != seen; spin_limit busy-wait rounds first (0: straight to the futex). */
static void wait_change(atomic_uint *word, unsigned seen, long spin_limit) {
    for (long i = 0; i < spin_limit; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen) return;
        if ((i & 1023) == 1023) sched_yield();
    }
    while (atomic_load_explicit(word, memory_order_acquire) == seen) {
        if (futex(word, FUTEX_WAIT, seen) == -1 && errno != EAGAIN && errno != EINTR) {
            perror("futex wait");
            exit(1);
        }
    }
}

static void flip(atomic_uint *word, unsigned value, int wake) {
    atomic_store_explicit(word, value, memory_order_release);
    if (wake) futex(word, FUTEX_WAKE, 1);
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static int pingpong(const char *label, long iterations, long spin_limit, int wake, int cpu_a, int cpu_b) {
    atomic_uint *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    atomic_store(word, 0);
    long warmup = iterations / 10 + 10, total = warmup + iterations;
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        pin(cpu_b);
        for (long i = 0; i < total; i++) {
            unsigned even = (unsigned)(2 * i);
            wait_change(word, even, spin_limit);  /* the parent wrote 2i + 1 */
            flip(word, even + 2, wake);
        }
        _exit(0);
    }
    pin(cpu_a);
    double *samples = malloc(sizeof(double) * (size_t)iterations);
    if (!samples) return 1;
    for (long i = 0; i < total; i++) {
        unsigned odd = (unsigned)(2 * i + 1);
        double t0 = now_ns();
        flip(word, odd, wake);
        wait_change(word, odd, spin_limit);
        if (i >= warmup) samples[i - warmup] = now_ns() - t0;
    }
    int status = 0;
    waitpid(child, &status, 0);
    qsort(samples, (size_t)iterations, sizeof(double), cmp_double);
    printf("{\"mode\": \"%s\", \"iterations\": %ld, \"rtt_median_us\": %.3f, \"rtt_p99_us\": %.3f}\n", label,
           iterations, samples[iterations / 2] / 1e3, samples[(iterations * 99) / 100] / 1e3);
    free(samples);
    munmap(word, 4096);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "memcpy") == 0) return measure_memcpy(strtoul(argv[2], NULL, 10), atol(argv[3]));
    int cpu_a = argc == 5 ? atoi(argv[3]) : -1, cpu_b = argc == 5 ? atoi(argv[4]) : -1;
    if ((argc == 3 || argc == 5) && strcmp(argv[1], "futex") == 0)
        return pingpong("futex", atol(argv[2]), 0, 1, cpu_a, cpu_b);
    if ((argc == 3 || argc == 5) && strcmp(argv[1], "spin") == 0)
        return pingpong("spin", atol(argv[2]), 1L << 40, 0, cpu_a, cpu_b);
    fprintf(stderr, "usage: limits memcpy SIZE ITERATIONS | futex|spin ITERATIONS [CPU_A CPU_B]\n");
    return 2;
}
