// Copies into, and prefaulting of, large buffers split over a few threads.
//
// Writing a large value into the node's shared memory is bound by first-touch
// page faults (about 1.5 µs per 4 KiB page here: 1.4 GB/s), on the source too
// when it was never written (np.zeros), and faults on different cores run in
// parallel. Below kParallelCopyMin bytes everything runs on the calling
// thread; above it, one slice per core (at most 8) runs on short-lived
// threads (~50 µs to start, against tens of ms of copying).
// Thread-safe: no shared state; the caller owns both buffers for the call.
#pragma once

#include <cstddef>

namespace fleet {

constexpr size_t kParallelCopyMin = 64ull << 20;

// memcpy(dst, src, n); large sources are populated (MADV_POPULATE_READ)
// before they are read.
void ParallelMemcpy(void* dst, const void* src, size_t n);
// madvise(addr, n, MADV_POPULATE_WRITE) (best effort: a kernel without it
// leaves the faults to the copy). `addr` must be page-aligned.
void ParallelPopulateWrite(void* addr, size_t n);

}  // namespace fleet
