// Tests of Allocator: alignment, exact fit, failure without side effects,
// coalescing, best fit, reuse of freed ranges, and a randomized stress test
// against a shadow model of the arena.
#include "store/allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <vector>

namespace fleet::store {
namespace {

constexpr uint64_t kA = Allocator::kAlignment;
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

uint64_t RoundUp(uint64_t n) { return (n + kA - 1) / kA * kA; }

// Everything observable about an allocator, to check that a failed call
// changed nothing.
struct Snapshot {
  uint64_t allocated, free_bytes, largest_free;
  size_t num_allocations, num_free_ranges;
  bool operator==(const Snapshot&) const = default;
};
Snapshot Snap(const Allocator& a) {
  return {a.allocated(), a.free_bytes(), a.largest_free(), a.num_allocations(), a.num_free_ranges()};
}

// Allocates and asserts success.
uint64_t MustAllocate(Allocator& a, uint64_t size) {
  std::optional<uint64_t> off = a.Allocate(size);
  EXPECT_TRUE(off.has_value()) << "Allocate(" << size << ") failed";
  return off.value_or(std::numeric_limits<uint64_t>::max());
}

TEST(AllocatorTest, EmptyArena) {
  Allocator a(64 * kKiB);
  EXPECT_EQ(a.capacity(), 64 * kKiB);
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.free_bytes(), 64 * kKiB);
  EXPECT_EQ(a.largest_free(), 64 * kKiB);
  EXPECT_EQ(a.num_allocations(), 0u);
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.SizeOf(0), 0u);
}

TEST(AllocatorTest, CapacityRoundsDownToAlignment) {
  Allocator a(1000);  // 15 * 64 = 960
  EXPECT_EQ(a.capacity(), 960u);
  EXPECT_EQ(a.largest_free(), 960u);
  EXPECT_EQ(a.Allocate(961), std::nullopt);
  EXPECT_EQ(a.Allocate(1000), std::nullopt);
  EXPECT_EQ(a.Allocate(960), 0u);
  EXPECT_EQ(a.free_bytes(), 0u);

  Allocator tiny(63);  // rounds to nothing: no allocation can succeed
  EXPECT_EQ(tiny.capacity(), 0u);
  EXPECT_EQ(tiny.num_free_ranges(), 0u);
  EXPECT_EQ(tiny.largest_free(), 0u);
  EXPECT_EQ(tiny.Allocate(0), std::nullopt);
  EXPECT_EQ(tiny.Allocate(1), std::nullopt);
  EXPECT_EQ(tiny.num_allocations(), 0u);
}

TEST(AllocatorTest, OffsetsAndSizesAreAligned) {
  Allocator a(4 * kMiB);
  const uint64_t sizes[] = {1, 2, 63, 64, 65, 100, 127, 128, 129, 1000, 4095, 4096, 4097, 65537, 1 * kMiB + 1};
  uint64_t total = 0;
  std::vector<uint64_t> offsets;
  for (uint64_t s : sizes) {
    uint64_t off = MustAllocate(a, s);
    EXPECT_EQ(off % kA, 0u) << "size " << s;
    EXPECT_EQ(a.SizeOf(off), RoundUp(s)) << "size " << s;
    EXPECT_GE(a.SizeOf(off), s);
    total += RoundUp(s);
    offsets.push_back(off);
  }
  EXPECT_EQ(a.allocated(), total);
  EXPECT_EQ(a.num_allocations(), std::size(sizes));
  EXPECT_EQ(a.allocated() + a.free_bytes(), a.capacity());
  // Every remaining free range is aligned too: what is left is still usable
  // down to the last 64-byte block.
  EXPECT_EQ(a.free_bytes() % kA, 0u);
  EXPECT_EQ(a.largest_free() % kA, 0u);
  while (a.free_bytes() > 0) {
    uint64_t off = MustAllocate(a, kA);
    if (off == std::numeric_limits<uint64_t>::max()) break;
    EXPECT_EQ(off % kA, 0u);
  }
  EXPECT_EQ(a.free_bytes(), 0u);
}

TEST(AllocatorTest, ZeroSizeTakesOneBlock) {
  Allocator a(4 * kA);
  uint64_t x = MustAllocate(a, 0);
  uint64_t y = MustAllocate(a, 0);
  EXPECT_NE(x, y);  // distinct objects get distinct offsets
  EXPECT_EQ(x % kA, 0u);
  EXPECT_EQ(y % kA, 0u);
  EXPECT_EQ(a.SizeOf(x), kA);
  EXPECT_EQ(a.SizeOf(y), kA);
  EXPECT_EQ(a.allocated(), 2 * kA);
  EXPECT_EQ(a.num_allocations(), 2u);
  EXPECT_TRUE(a.Free(x));
  EXPECT_TRUE(a.Free(y));
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 4 * kA);
}

TEST(AllocatorTest, ZeroSizeFailsWhenFull) {
  Allocator a(kA);
  EXPECT_EQ(a.Allocate(0), 0u);
  EXPECT_EQ(a.Allocate(0), std::nullopt);
}

TEST(AllocatorTest, ExactFitFillsWholeArena) {
  Allocator a(1 * kMiB);
  EXPECT_EQ(a.Allocate(1 * kMiB), 0u);
  EXPECT_EQ(a.allocated(), 1 * kMiB);
  EXPECT_EQ(a.free_bytes(), 0u);
  EXPECT_EQ(a.largest_free(), 0u);
  EXPECT_EQ(a.num_free_ranges(), 0u);
  EXPECT_EQ(a.Allocate(0), std::nullopt);
  EXPECT_EQ(a.Allocate(1), std::nullopt);
  EXPECT_TRUE(a.Free(0));
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 1 * kMiB);
}

TEST(AllocatorTest, ManySmallAllocationsFillArenaExactly) {
  constexpr uint64_t kBlocks = 256;
  Allocator a(kBlocks * kA);
  std::vector<uint64_t> offs;
  for (uint64_t i = 0; i < kBlocks; ++i) offs.push_back(MustAllocate(a, 1 + i % kA));  // 1..64 bytes
  EXPECT_EQ(a.free_bytes(), 0u);
  EXPECT_EQ(a.num_free_ranges(), 0u);
  EXPECT_EQ(a.Allocate(1), std::nullopt);
  std::vector<uint64_t> sorted = offs;
  std::sort(sorted.begin(), sorted.end());
  for (uint64_t i = 0; i < kBlocks; ++i) EXPECT_EQ(sorted[i], i * kA);  // each block used once

  // Free every other block: that many separate ranges, none mergeable.
  for (uint64_t i = 0; i < kBlocks; i += 2) EXPECT_TRUE(a.Free(i * kA));
  EXPECT_EQ(a.num_free_ranges(), kBlocks / 2);
  EXPECT_EQ(a.largest_free(), kA);
  EXPECT_EQ(a.Allocate(kA + 1), std::nullopt);  // plenty of free bytes, no range fits
  // Free the rest: everything merges back into one range.
  for (uint64_t i = 1; i < kBlocks; i += 2) EXPECT_TRUE(a.Free(i * kA));
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), kBlocks * kA);
  EXPECT_EQ(a.allocated(), 0u);
}

TEST(AllocatorTest, TooLargeFailsAndChangesNothing) {
  Allocator a(1 * kMiB);
  Snapshot empty = Snap(a);
  EXPECT_EQ(a.Allocate(1 * kMiB + 1), std::nullopt);
  EXPECT_EQ(a.Allocate(2 * kMiB), std::nullopt);
  EXPECT_EQ(a.Allocate(std::numeric_limits<uint64_t>::max()), std::nullopt);
  EXPECT_EQ(a.Allocate(std::numeric_limits<uint64_t>::max() - kA + 2), std::nullopt);  // overflows a naive round-up
  EXPECT_EQ(Snap(a), empty);

  uint64_t x = MustAllocate(a, 300 * kKiB);
  Snapshot partial = Snap(a);
  EXPECT_EQ(a.Allocate(a.free_bytes() + 1), std::nullopt);  // more than is free
  EXPECT_EQ(a.Allocate(1 * kMiB), std::nullopt);            // fits capacity, not free space
  EXPECT_EQ(Snap(a), partial);
  EXPECT_EQ(a.SizeOf(x), 300 * kKiB);
  // The free space is still fully usable afterwards.
  EXPECT_TRUE(a.Allocate(a.free_bytes()).has_value());
  EXPECT_EQ(a.free_bytes(), 0u);
}

TEST(AllocatorTest, FragmentedFreeSpaceFailsAndChangesNothing) {
  // [A 1K][pin][B 1K][pin][C 1K][pin]: 3K free after freeing A, B, C, but no
  // range larger than 1K.
  Allocator a(3 * kKiB + 3 * kA);
  uint64_t A = MustAllocate(a, 1 * kKiB);
  MustAllocate(a, kA);
  uint64_t B = MustAllocate(a, 1 * kKiB);
  MustAllocate(a, kA);
  uint64_t C = MustAllocate(a, 1 * kKiB);
  MustAllocate(a, kA);
  ASSERT_EQ(a.free_bytes(), 0u);
  EXPECT_TRUE(a.Free(A));
  EXPECT_TRUE(a.Free(B));
  EXPECT_TRUE(a.Free(C));
  EXPECT_EQ(a.free_bytes(), 3 * kKiB);
  EXPECT_EQ(a.num_free_ranges(), 3u);
  EXPECT_EQ(a.largest_free(), 1 * kKiB);
  Snapshot before = Snap(a);
  EXPECT_EQ(a.Allocate(1 * kKiB + 1), std::nullopt);
  EXPECT_EQ(a.Allocate(2 * kKiB), std::nullopt);
  EXPECT_EQ(Snap(a), before);
  EXPECT_EQ(a.Allocate(1 * kKiB), A);  // an exact fit still succeeds
}

TEST(AllocatorTest, FreeUnknownOffsetReturnsFalse) {
  Allocator a(1 * kMiB);
  EXPECT_FALSE(a.Free(0));  // nothing allocated yet
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 1 * kMiB);

  uint64_t x = MustAllocate(a, 4 * kKiB);
  uint64_t y = MustAllocate(a, 4 * kKiB);
  Snapshot before = Snap(a);
  EXPECT_FALSE(a.Free(x + kA));       // inside an allocation, not its start
  EXPECT_FALSE(a.Free(x + 1));        // unaligned
  EXPECT_FALSE(a.Free(y + 4 * kKiB)); // start of the free tail
  EXPECT_FALSE(a.Free(1 * kMiB));     // end of the arena
  EXPECT_FALSE(a.Free(std::numeric_limits<uint64_t>::max()));
  EXPECT_EQ(Snap(a), before);
  EXPECT_EQ(a.SizeOf(x + kA), 0u);

  EXPECT_TRUE(a.Free(x));
  EXPECT_FALSE(a.Free(x));  // double free
  EXPECT_EQ(a.SizeOf(x), 0u);
  EXPECT_EQ(a.allocated(), 4 * kKiB);
  EXPECT_EQ(a.num_allocations(), 1u);
  EXPECT_EQ(a.SizeOf(y), 4 * kKiB);
}

// Four 1 KiB blocks that fill a 4 KiB arena exactly, so that every free range
// is made only of freed blocks.
class CoalesceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint64_t& b : blk_) b = MustAllocate(a_, 1 * kKiB);
    ASSERT_EQ(blk_[0], 0u);
    ASSERT_EQ(blk_[1], 1 * kKiB);
    ASSERT_EQ(blk_[2], 2 * kKiB);
    ASSERT_EQ(blk_[3], 3 * kKiB);
    ASSERT_EQ(a_.num_free_ranges(), 0u);
  }
  Allocator a_{4 * kKiB};
  uint64_t blk_[4] = {};
};

TEST_F(CoalesceTest, NonAdjacentFreesStaySeparate) {
  EXPECT_TRUE(a_.Free(blk_[0]));
  EXPECT_TRUE(a_.Free(blk_[2]));
  EXPECT_EQ(a_.num_free_ranges(), 2u);
  EXPECT_EQ(a_.largest_free(), 1 * kKiB);
  EXPECT_EQ(a_.Allocate(1 * kKiB + 1), std::nullopt);
}

TEST_F(CoalesceTest, MergesWithPrevious) {
  EXPECT_TRUE(a_.Free(blk_[1]));
  EXPECT_TRUE(a_.Free(blk_[2]));  // previous (blk 1) is free
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 2 * kKiB);
  EXPECT_EQ(a_.Allocate(2 * kKiB), blk_[1]);  // the merged range starts at blk 1
  EXPECT_EQ(a_.num_free_ranges(), 0u);
}

TEST_F(CoalesceTest, MergesWithNext) {
  EXPECT_TRUE(a_.Free(blk_[2]));
  EXPECT_TRUE(a_.Free(blk_[1]));  // next (blk 2) is free
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 2 * kKiB);
  EXPECT_EQ(a_.Allocate(2 * kKiB), blk_[1]);
  EXPECT_EQ(a_.num_free_ranges(), 0u);
}

TEST_F(CoalesceTest, MergesWithBothNeighbours) {
  EXPECT_TRUE(a_.Free(blk_[0]));
  EXPECT_TRUE(a_.Free(blk_[2]));
  ASSERT_EQ(a_.num_free_ranges(), 2u);
  EXPECT_TRUE(a_.Free(blk_[1]));  // both neighbours free
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 3 * kKiB);
  EXPECT_TRUE(a_.Free(blk_[3]));  // previous free, at the end of the arena
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 4 * kKiB);
  EXPECT_EQ(a_.Allocate(4 * kKiB), 0u);
}

TEST_F(CoalesceTest, MergesAtArenaEdges) {
  EXPECT_TRUE(a_.Free(blk_[1]));
  EXPECT_TRUE(a_.Free(blk_[0]));  // first block: only a next neighbour
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 2 * kKiB);
  EXPECT_TRUE(a_.Free(blk_[3]));  // last block: previous (blk 2) still taken
  EXPECT_EQ(a_.num_free_ranges(), 2u);
  EXPECT_EQ(a_.largest_free(), 2 * kKiB);
  EXPECT_TRUE(a_.Free(blk_[2]));  // joins [0, 2K) and [3K, 4K)
  EXPECT_EQ(a_.num_free_ranges(), 1u);
  EXPECT_EQ(a_.largest_free(), 4 * kKiB);
}

TEST(AllocatorTest, CoalescesInAnyFreeOrder) {
  // All 24 orders of freeing the four blocks end in one range of 4 KiB, and
  // the number of free ranges after each step is the number of runs of freed
  // blocks.
  int order[4] = {0, 1, 2, 3};
  do {
    Allocator a(4 * kKiB);
    for (int i = 0; i < 4; ++i) ASSERT_EQ(a.Allocate(1 * kKiB), static_cast<uint64_t>(i) * kKiB);
    bool freed[4] = {};
    for (int i : order) {
      ASSERT_TRUE(a.Free(static_cast<uint64_t>(i) * kKiB));
      freed[i] = true;
      size_t runs = 0;
      uint64_t longest = 0, cur = 0;
      for (int j = 0; j < 4; ++j) {
        if (freed[j] && (j == 0 || !freed[j - 1])) ++runs;
        cur = freed[j] ? cur + kKiB : 0;
        longest = std::max(longest, cur);
      }
      EXPECT_EQ(a.num_free_ranges(), runs);
      EXPECT_EQ(a.largest_free(), longest);
    }
    EXPECT_EQ(a.num_free_ranges(), 1u);
    EXPECT_EQ(a.largest_free(), 4 * kKiB);
  } while (std::next_permutation(order, order + 4));
}

TEST(AllocatorTest, MergesWithFreeTail) {
  Allocator a(1 * kMiB);
  uint64_t x = MustAllocate(a, 4 * kKiB);
  uint64_t y = MustAllocate(a, 4 * kKiB);
  EXPECT_EQ(a.num_free_ranges(), 1u);  // the tail
  EXPECT_TRUE(a.Free(y));              // merges with the tail after it
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 1 * kMiB - 4 * kKiB);
  EXPECT_TRUE(a.Free(x));
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), 1 * kMiB);
}

// Lays out holes of the given sizes, each followed by a 64-byte pin that
// stays allocated, then frees the holes. Returns the holes' offsets; the rest
// of the arena (a large free tail) follows the last pin.
std::vector<uint64_t> MakeHoles(Allocator& a, const std::vector<uint64_t>& sizes) {
  std::vector<uint64_t> holes;
  for (uint64_t s : sizes) {
    holes.push_back(MustAllocate(a, s));
    MustAllocate(a, kA);
  }
  for (uint64_t h : holes) EXPECT_TRUE(a.Free(h));
  EXPECT_EQ(a.num_free_ranges(), sizes.size() + 1);
  return holes;
}

TEST(AllocatorTest, BestFitChoosesSmallestFittingRange) {
  Allocator a(1 * kMiB);
  //                                    0      1       2      3       4
  std::vector<uint64_t> h = MakeHoles(a, {512 * kA, 8 * kA, 32 * kA, 4 * kA, 16 * kA});
  // Each request goes to the smallest hole that holds it, not the first one
  // (hole 0) nor the large tail.
  EXPECT_EQ(a.Allocate(3 * kA + 1), h[3]);   // 4 blocks: exact fit in hole 3
  EXPECT_EQ(a.Allocate(16 * kA), h[4]);      // exact fit in hole 4, not hole 2 (32)
  EXPECT_EQ(a.Allocate(5 * kA), h[1]);       // 8 is the smallest >= 5
  EXPECT_EQ(a.SizeOf(h[1]), 5 * kA);
  // Hole 1 now has 3 blocks left at h[1] + 5 blocks: the best fit for 2.
  EXPECT_EQ(a.Allocate(2 * kA), h[1] + 5 * kA);
  EXPECT_EQ(a.Allocate(100 * kA), h[0]);     // only hole 0 (and the tail) holds 100
  EXPECT_EQ(a.Allocate(17 * kA), h[2]);      // 32 beats hole 0's remaining 412
  EXPECT_EQ(a.Allocate(412 * kA), h[0] + 100 * kA);  // exact fit of hole 0's rest
  // Larger than every hole: from the tail.
  uint64_t tail = h.back() + 16 * kA + kA;
  EXPECT_EQ(a.Allocate(1000 * kA), tail);
}

TEST(AllocatorTest, BestFitPrefersLowestOffsetAmongEqualSizes) {
  Allocator a(1 * kMiB);
  std::vector<uint64_t> h = MakeHoles(a, {64 * kA, 16 * kA, 64 * kA, 16 * kA, 16 * kA});
  EXPECT_EQ(a.Allocate(16 * kA), h[1]);
  EXPECT_EQ(a.Allocate(10 * kA), h[3]);
  EXPECT_EQ(a.Allocate(16 * kA), h[4]);
  // Hole 3's leftover (6 blocks) is now the smallest range.
  EXPECT_EQ(a.Allocate(1), h[3] + 10 * kA);
  EXPECT_EQ(a.Allocate(40 * kA), h[0]);
  // Hole 0's leftover (24) is smaller than hole 2 (64).
  EXPECT_EQ(a.Allocate(20 * kA), h[0] + 40 * kA);
  EXPECT_EQ(a.Allocate(64 * kA), h[2]);
}

TEST(AllocatorTest, FreedRangeIsReusedBySameSize) {
  Allocator a(64 * kMiB);
  // A large free range at a lower offset than the object to be freed, so a
  // first-fit allocator would pick that one instead.
  uint64_t big = MustAllocate(a, 8 * kMiB);
  MustAllocate(a, kA);
  uint64_t obj = MustAllocate(a, 300 * kKiB + 7);
  MustAllocate(a, kA);
  EXPECT_TRUE(a.Free(big));
  for (int round = 0; round < 5; ++round) {
    EXPECT_TRUE(a.Free(obj));
    EXPECT_EQ(a.Allocate(300 * kKiB + 7), obj) << "round " << round;
    EXPECT_EQ(a.Allocate(300 * kKiB), big) << "round " << round;  // no exact hole: smallest larger
    EXPECT_TRUE(a.Free(big));
  }
  // A same-size object after rounding (any size in the same 64-byte block)
  // also reuses it.
  EXPECT_TRUE(a.Free(obj));
  EXPECT_EQ(a.Allocate(300 * kKiB + 1), obj);
}

// Reference model: the live allocations, offset -> size taken (rounded).
using Shadow = std::map<uint64_t, uint64_t>;

// The free ranges the shadow implies (the gaps between live allocations), in
// one pass: how many, the largest, and where best fit must put `need` bytes
// (the smallest gap that holds them, lowest offset among equals).
struct Gaps {
  size_t count = 0;
  uint64_t largest = 0;
  std::optional<uint64_t> best_fit;
};
Gaps ScanGaps(const Shadow& live, uint64_t capacity, uint64_t need) {
  Gaps g;
  uint64_t best_size = 0;
  auto visit = [&](uint64_t off, uint64_t size) {
    ++g.count;
    g.largest = std::max(g.largest, size);
    if (size >= need && (!g.best_fit || size < best_size)) {  // strict: keeps the lowest offset
      g.best_fit = off;
      best_size = size;
    }
  };
  uint64_t pos = 0;
  for (const auto& [off, size] : live) {
    if (off > pos) visit(pos, off - pos);
    pos = off + size;
  }
  if (capacity > pos) visit(pos, capacity - pos);
  return g;
}

// Checks that the allocation at `off` (in the shadow) overlaps neither of
// its neighbours and lies inside the arena. Checked for every new
// allocation, this keeps every pair of live allocations disjoint.
void CheckNoOverlap(const Allocator& a, const Shadow& live, uint64_t off, int op) {
  auto it = live.find(off);
  ASSERT_NE(it, live.end());
  ASSERT_EQ(off % kA, 0u) << "op " << op;
  ASSERT_LE(off + it->second, a.capacity()) << "op " << op << ": allocation at " << off << " past the arena's end";
  if (it != live.begin()) {
    auto prev = std::prev(it);
    ASSERT_LE(prev->first + prev->second, off)
        << "op " << op << ": allocation at " << off << " overlaps the one at " << prev->first;
  }
  if (auto next = std::next(it); next != live.end()) {
    ASSERT_LE(off + it->second, next->first)
        << "op " << op << ": allocation at " << off << " overlaps the one at " << next->first;
  }
}

// Checks the allocator's counters against the shadow, and its free ranges
// against the shadow's gaps (so that they are fully coalesced).
void CheckCounters(const Allocator& a, const Shadow& live, uint64_t live_bytes, int op) {
  ASSERT_EQ(a.allocated(), live_bytes) << "op " << op;
  ASSERT_EQ(a.allocated() + a.free_bytes(), a.capacity()) << "op " << op;
  ASSERT_EQ(a.num_allocations(), live.size()) << "op " << op;
  Gaps g = ScanGaps(live, a.capacity(), 0);
  ASSERT_EQ(a.num_free_ranges(), g.count) << "op " << op << ": free ranges not coalesced";
  ASSERT_EQ(a.largest_free(), g.largest) << "op " << op;
}

// The full sweep: every pair of live allocations disjoint and every size as
// the shadow says.
void CheckAll(const Allocator& a, const Shadow& live, int op) {
  uint64_t pos = 0;
  for (const auto& [off, size] : live) {
    ASSERT_GE(off, pos) << "op " << op << ": allocation at " << off << " overlaps the previous one";
    ASSERT_EQ(a.SizeOf(off), size) << "op " << op << ": offset " << off;
    pos = off + size;
  }
  ASSERT_LE(pos, a.capacity()) << "op " << op;
}

TEST(AllocatorTest, RandomizedStress) {
  constexpr uint64_t kCapacity = 64 * kMiB;
  constexpr int kOps = 20000;
  Allocator a(kCapacity);
  Shadow live;
  uint64_t live_bytes = 0;
  std::vector<uint64_t> live_offsets;  // for picking a random victim
  std::mt19937_64 rng(20240607);
  std::uniform_real_distribution<double> log_size(0.0, std::log(static_cast<double>(kMiB)));
  std::uniform_int_distribution<int> percent(0, 99);
  int allocs = 0, failures = 0, frees = 0;
  size_t max_live = 0;

  auto random_size = [&]() -> uint64_t {
    int kind = percent(rng);
    if (kind < 2) return 0;
    if (kind < 12) return kA * (1 + rng() % 64);  // exact multiples of the alignment
    // Log-uniform in [1, 1 MiB].
    return std::clamp<uint64_t>(static_cast<uint64_t>(std::exp(log_size(rng))), 1, kMiB);
  };

  for (int op = 0; op < kOps; ++op) {
    // Allocations outnumber frees, so the arena fills up and both failures
    // and frees into a fragmented arena happen.
    int p = percent(rng);
    if (live.empty() || p < 55) {
      uint64_t size = random_size();
      uint64_t need = RoundUp(size == 0 ? 1 : size);
      std::optional<uint64_t> expect = ScanGaps(live, kCapacity, need).best_fit;
      Snapshot before = Snap(a);
      std::optional<uint64_t> off = a.Allocate(size);
      ASSERT_EQ(off, expect) << "op " << op << ": Allocate(" << size << ") is not the best fit";
      if (off) {
        live.emplace(*off, need);
        live_bytes += need;
        live_offsets.push_back(*off);
        ASSERT_EQ(a.SizeOf(*off), need) << "op " << op;
        CheckNoOverlap(a, live, *off, op);
        if (HasFatalFailure()) return;
        ++allocs;
      } else {
        ASSERT_EQ(Snap(a), before) << "op " << op << ": a failed Allocate changed the allocator";
        ++failures;
      }
    } else if (p < 97) {
      size_t i = rng() % live_offsets.size();
      uint64_t off = live_offsets[i];
      live_offsets[i] = live_offsets.back();
      live_offsets.pop_back();
      ASSERT_TRUE(a.Free(off)) << "op " << op;
      ASSERT_EQ(a.SizeOf(off), 0u) << "op " << op;
      live_bytes -= live.at(off);
      live.erase(off);
      ++frees;
    } else {
      // Free of an offset that is not an allocation's start.
      uint64_t off = live_offsets[rng() % live_offsets.size()];
      uint64_t bad = off + kA * (1 + rng() % 4);
      if (live.count(bad) == 0) {
        Snapshot before = Snap(a);
        ASSERT_FALSE(a.Free(bad)) << "op " << op;
        ASSERT_FALSE(a.Free(off + 1)) << "op " << op;
        ASSERT_EQ(Snap(a), before) << "op " << op;
      }
    }
    max_live = std::max(max_live, live.size());
    CheckCounters(a, live, live_bytes, op);
    if (op % 256 == 0) CheckAll(a, live, op);
    if (HasFatalFailure()) return;
  }
  CheckAll(a, live, kOps);
  // The workload must have exercised what it is meant to: a full arena
  // (failed allocations) with hundreds of live objects.
  EXPECT_GT(allocs, 5000);
  EXPECT_GT(frees, 5000);
  EXPECT_GT(failures, 100);
  EXPECT_GT(max_live, 500u);

  // Free everything in random order: one free range of the whole arena.
  std::shuffle(live_offsets.begin(), live_offsets.end(), rng);
  for (uint64_t off : live_offsets) {
    ASSERT_TRUE(a.Free(off));
    live_bytes -= live.at(off);
    live.erase(off);
    CheckCounters(a, live, live_bytes, kOps);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(a.num_allocations(), 0u);
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.free_bytes(), kCapacity);
  EXPECT_EQ(a.num_free_ranges(), 1u);
  EXPECT_EQ(a.largest_free(), kCapacity);
  EXPECT_EQ(a.Allocate(kCapacity), 0u);
}

}  // namespace
}  // namespace fleet::store
