#pragma once
/// Pins the calling thread to one CPU; returns 0 on success, an errno value otherwise.
int pt_pin_current_thread(int cpu);

/// Sets flush-to-zero and denormals-are-zero for the calling thread's SSE/AVX arithmetic.
void pt_flush_denormals(void);

/// Writes the CPUs this process may run on (its affinity mask) into `cpus`, up to `capacity`;
/// returns how many, or -1 when the mask cannot be read.
int pt_allowed_cpus(int *cpus, int capacity);
