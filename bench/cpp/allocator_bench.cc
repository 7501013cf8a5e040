// Micro-benchmarks of the object store's Allocator (cpp/src/store/allocator.h).
// Run with bench/allocator.sh. items/s counts one allocate + one free per
// item. All random numbers are drawn from fixed seeds before the timed loop.
//
// Keep() instead of benchmark::DoNotOptimize(lvalue): with GCC 12, libbenchmark
// 1.7.1's non-const overload (asm "+m,r") can drop a store to the variable
// (here: the new offset written into `live`, which then leaks objects until
// the arena is full); the const overload has no output operand.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "store/allocator.h"

namespace fleet::store {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr size_t kPool = 1 << 16;  // precomputed random values, cycled through

// kPool sizes drawn log-uniformly from [lo, hi].
std::vector<uint64_t> LogUniformSizes(uint64_t lo, uint64_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(std::log(static_cast<double>(lo)), std::log(static_cast<double>(hi)));
  std::vector<uint64_t> sizes(kPool);
  for (uint64_t& s : sizes) s = std::clamp<uint64_t>(static_cast<uint64_t>(std::exp(d(rng))), lo, hi);
  return sizes;
}

template <class T>
void Keep(const T& value) {
  benchmark::DoNotOptimize(value);
}

std::vector<uint32_t> RandomIndices(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> v(kPool);
  for (uint32_t& x : v) x = static_cast<uint32_t>(rng());
  return v;
}

// Steady state of a busy store: a 1 GiB arena holding range(0) live objects
// of 64 B..4 MiB (log-uniform); each item frees a random live object and
// allocates a new one in its place.
void BM_SteadyState(benchmark::State& state) {
  const size_t live_count = static_cast<size_t>(state.range(0));
  const std::vector<uint64_t> sizes = LogUniformSizes(64, 4 * kMiB, 1);
  const std::vector<uint32_t> victims = RandomIndices(2);
  Allocator a(kGiB);
  std::vector<uint64_t> live;
  size_t next = 0;
  for (size_t i = 0; i < live_count; ++i) {
    auto off = a.Allocate(sizes[next++ % kPool]);
    if (!off) {
      state.SkipWithError("arena full while filling");
      return;
    }
    live.push_back(*off);
  }
  size_t n = 0;
  for (auto _ : state) {
    uint64_t& slot = live[victims[n++ % kPool] % live_count];
    if (!a.Free(slot)) {
      state.SkipWithError("Free failed");
      break;
    }
    auto off = a.Allocate(sizes[next++ % kPool]);
    if (!off) {
      state.SkipWithError("arena full");
      break;
    }
    slot = *off;
    Keep(slot);
  }
  if (a.num_allocations() != live_count) state.SkipWithError("live objects lost");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["free_ranges"] = static_cast<double>(a.num_free_ranges());
  state.counters["used_MiB"] = static_cast<double>(a.allocated()) / kMiB;
}
BENCHMARK(BM_SteadyState)->Arg(100)->Arg(1000);

// Allocate and immediately free one object of range(0) bytes in an otherwise
// empty 1 GiB arena: the cost of the bookkeeping alone (split, then merge
// back into the single free range).
void BM_AllocFreeFixed(benchmark::State& state) {
  const uint64_t size = static_cast<uint64_t>(state.range(0));
  Allocator a(kGiB);
  for (auto _ : state) {
    auto off = a.Allocate(size);
    Keep(off);
    a.Free(*off);
  }
  if (a.num_allocations() != 0 || a.num_free_ranges() != 1) state.SkipWithError("arena not empty");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_AllocFreeFixed)->Arg(64)->Arg(64 * kKiB)->Arg(4 * kMiB);

// Under fragmentation: range(0) free holes of 64 B..16 KiB (log-uniform),
// each pinned between live 64-byte objects, before a large free tail. Each
// item allocates a size from the same distribution (best fit searches among
// all the holes) and frees it again, which merges it back into its hole, so
// the layout is the same for every item.
void BM_Fragmented(benchmark::State& state) {
  const size_t holes = static_cast<size_t>(state.range(0));
  const std::vector<uint64_t> sizes = LogUniformSizes(64, 16 * kKiB, 3);
  Allocator a(kGiB);
  std::vector<uint64_t> hole_offsets;
  for (size_t i = 0; i < holes; ++i) {
    auto hole = a.Allocate(sizes[(i * 7919) % kPool]);
    auto pin = a.Allocate(64);
    if (!hole || !pin) {
      state.SkipWithError("arena full while fragmenting");
      return;
    }
    hole_offsets.push_back(*hole);
  }
  for (uint64_t h : hole_offsets) a.Free(h);
  size_t n = 0;
  for (auto _ : state) {
    auto off = a.Allocate(sizes[n++ % kPool]);
    Keep(off);
    a.Free(*off);
  }
  if (a.num_free_ranges() != holes + 1) state.SkipWithError("layout changed");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["free_ranges"] = static_cast<double>(a.num_free_ranges());
}
BENCHMARK(BM_Fragmented)->Arg(1000)->Arg(100000);

}  // namespace
}  // namespace fleet::store
