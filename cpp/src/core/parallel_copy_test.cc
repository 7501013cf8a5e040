// Tests of ParallelMemcpy/ParallelPopulateWrite: the bytes arrive intact
// whatever the size, alignment and slicing.
#include "core/parallel_copy.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace fleet {
namespace {

void CheckCopy(size_t n, size_t src_offset) {
  std::vector<uint8_t> src(n + src_offset);
  std::mt19937_64 rng(n);
  for (size_t i = 0; i < src.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(src.data() + i, &v, std::min<size_t>(8, src.size() - i));
  }
  void* dst = ::mmap(nullptr, n + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(dst, MAP_FAILED);
  ParallelPopulateWrite(dst, n);
  ParallelMemcpy(static_cast<uint8_t*>(dst) + 64, src.data() + src_offset, n);
  EXPECT_EQ(std::memcmp(static_cast<uint8_t*>(dst) + 64, src.data() + src_offset, n), 0) << n;
  ::munmap(dst, n + 4096);
}

TEST(ParallelCopyTest, SmallCopiesRunInPlace) { CheckCopy(1000, 3); }

TEST(ParallelCopyTest, LargeUnalignedCopiesAreExact) {
  CheckCopy(kParallelCopyMin + 12345, 7);
  CheckCopy(3 * kParallelCopyMin + 1, 4095);
}

TEST(ParallelCopyTest, NeverWrittenSourceCopiesAsZeros) {
  size_t n = kParallelCopyMin * 2;
  void* src = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(src, MAP_FAILED);
  std::vector<uint8_t> dst(n, 0xab);
  ParallelMemcpy(dst.data(), src, n);
  EXPECT_EQ(dst.front(), 0);
  EXPECT_EQ(dst[n / 2], 0);
  EXPECT_EQ(dst.back(), 0);
  ::munmap(src, n);
}

}  // namespace
}  // namespace fleet
