#pragma once
/// Pins the calling thread to one CPU; returns 0 on success, an errno value otherwise.
int pt_pin_current_thread(int cpu);
