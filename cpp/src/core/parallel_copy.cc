// ParallelMemcpy and ParallelPopulateWrite; see parallel_copy.h.
#include "core/parallel_copy.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

namespace fleet {

namespace {

constexpr size_t kPage = 4096;

// Runs fn(begin, end) over [0, n) in page-aligned slices, one per core.
void Split(size_t n, const std::function<void(size_t, size_t)>& fn) {
  size_t cores = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
  size_t slices = n < kParallelCopyMin ? 1 : std::min(cores, n / (kParallelCopyMin / 2));
  if (slices <= 1) {
    fn(0, n);
    return;
  }
  size_t step = (n / slices + kPage - 1) / kPage * kPage;
  std::vector<std::thread> threads;
  for (size_t begin = step; begin < n; begin += step) {
    threads.emplace_back(fn, begin, std::min(n, begin + step));
  }
  fn(0, std::min(n, step));
  for (auto& t : threads) t.join();
}

}  // namespace

void ParallelMemcpy(void* dst, const void* src, size_t n) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  if (n < kParallelCopyMin) {
    std::memcpy(d, s, n);
    return;
  }
  Split(n, [d, s](size_t a, size_t b) {
    // Map the source's pages in one walk first: a source never written
    // (np.zeros) otherwise takes one read fault per page inside memcpy
    // (measured: 2 GiB copies in 0.08 s after a 0.43 s populate, against
    // 0.61 s of faulting copy). Cheap where the pages are already mapped.
    auto first = reinterpret_cast<uintptr_t>(s + a) & ~(uintptr_t{kPage} - 1);
    ::madvise(reinterpret_cast<void*>(first), reinterpret_cast<uintptr_t>(s + b) - first,
              MADV_POPULATE_READ);
    std::memcpy(d + a, s + a, b - a);
  });
}

void ParallelPopulateWrite(void* addr, size_t n) {
  auto* p = static_cast<uint8_t*>(addr);
  Split(n, [p](size_t a, size_t b) { ::madvise(p + a, b - a, MADV_POPULATE_WRITE); });
}

}  // namespace fleet
