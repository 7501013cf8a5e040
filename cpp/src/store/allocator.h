// Allocator: places byte ranges in one fixed-size arena (the node's shared
// memory), best fit, coalescing neighbours on free.
//
// Invariants: every allocation starts at a multiple of kAlignment and takes
// a multiple of it; free ranges never touch (a freed range merges with free
// neighbours at once); allocated bytes + free bytes == capacity. Best fit
// (smallest free range that fits, lowest offset among equals) keeps large
// ranges whole and hands a freed range back to the next object of the same
// size, whose pages are then already faulted in. All operations are
// O(log n) in the number of ranges. Not thread-safe: one owner thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

namespace fleet::store {

class Allocator {
 public:
  static constexpr uint64_t kAlignment = 64;

  explicit Allocator(uint64_t capacity);

  // The offset of a new range of at least `size` bytes (0 counts as one
  // byte), or nullopt if no free range is large enough.
  std::optional<uint64_t> Allocate(uint64_t size);
  // Frees the range at `offset`; false (and no change) if no allocation
  // starts there.
  bool Free(uint64_t offset);
  // Bytes taken by the allocation at `offset` (0 if none).
  uint64_t SizeOf(uint64_t offset) const;

  uint64_t capacity() const { return capacity_; }
  uint64_t allocated() const { return allocated_bytes_; }
  uint64_t free_bytes() const { return capacity_ - allocated_bytes_; }
  // The largest single allocation that would succeed now.
  uint64_t largest_free() const;
  size_t num_allocations() const { return allocated_.size(); }
  size_t num_free_ranges() const { return free_by_offset_.size(); }

 private:
  static uint64_t RoundUp(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }
  void AddFree(uint64_t offset, uint64_t size);
  void RemoveFree(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t capacity_;
  uint64_t allocated_bytes_ = 0;
  std::map<uint64_t, uint64_t> free_by_offset_;        // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> free_by_size_;  // (size, offset)
  std::unordered_map<uint64_t, uint64_t> allocated_;   // offset -> size
};

}  // namespace fleet::store
