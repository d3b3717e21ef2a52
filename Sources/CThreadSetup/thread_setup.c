// Per-thread CPU settings Swift cannot reach: affinity (glibc hides it behind _GNU_SOURCE,
// which Swift's Glibc module does not set) and the MXCSR denormal flags.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include "pt_thread_setup.h"
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

int pt_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Adam's first moment decays by beta1 every step where a parameter's gradient is zero (a dead
// ReLU unit) and reaches the denormal range after ~800 steps; each denormal operation then
// costs ~100 cycles. Flushing them to zero keeps a step's time flat over a run.
void pt_flush_denormals(void) {
#if defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
#endif
}

int pt_allowed_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[n++] = cpu;
    }
    return n;
}
