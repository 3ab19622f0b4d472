/*
 * The monotonic clock and the spin-loop pause, shared by every C extension of ampipc (the C core's
 * parts through common.h, and _vring.c, _waitv.c, _dma.c). Header-only: static inline functions.
 */
#ifndef AMPIPC_NATIVE_CLOCK_H
#define AMPIPC_NATIVE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
