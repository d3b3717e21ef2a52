#pragma once
/// Pins the calling thread to one CPU; returns 0 on success, an errno value otherwise.
int pt_pin_current_thread(int cpu);

/// Sets flush-to-zero and denormals-are-zero for the calling thread's SSE/AVX arithmetic.
void pt_flush_denormals(void);
