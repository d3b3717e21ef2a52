// glibc hides the affinity calls behind _GNU_SOURCE, which Swift's Glibc module does not set.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include "pt_affinity.h"

int pt_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}
