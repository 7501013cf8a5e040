// Allocator implementation; see allocator.h.
#include "store/allocator.h"

namespace fleet::store {

Allocator::Allocator(uint64_t capacity) : capacity_(capacity / kAlignment * kAlignment) {
  if (capacity_ > 0) AddFree(0, capacity_);
}

void Allocator::AddFree(uint64_t offset, uint64_t size) {
  free_by_offset_.emplace(offset, size);
  free_by_size_.emplace(size, offset);
}

void Allocator::RemoveFree(std::map<uint64_t, uint64_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_by_offset_.erase(it);
}

std::optional<uint64_t> Allocator::Allocate(uint64_t size) {
  if (size > capacity_) return std::nullopt;
  uint64_t need = RoundUp(size == 0 ? 1 : size);
  auto best = free_by_size_.lower_bound({need, 0});
  if (best == free_by_size_.end()) return std::nullopt;
  auto [range_size, offset] = *best;
  RemoveFree(free_by_offset_.find(offset));
  if (range_size > need) AddFree(offset + need, range_size - need);
  allocated_.emplace(offset, need);
  allocated_bytes_ += need;
  return offset;
}

bool Allocator::Free(uint64_t offset) {
  auto a = allocated_.find(offset);
  if (a == allocated_.end()) return false;
  uint64_t size = a->second;
  allocated_.erase(a);
  allocated_bytes_ -= size;
  // Merge with the free neighbours on both sides.
  auto next = free_by_offset_.lower_bound(offset);
  if (next != free_by_offset_.end() && next->first == offset + size) {
    size += next->second;
    next = std::next(next);
    RemoveFree(std::prev(next));
  }
  if (next != free_by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      RemoveFree(prev);
    }
  }
  AddFree(offset, size);
  return true;
}

uint64_t Allocator::SizeOf(uint64_t offset) const {
  auto a = allocated_.find(offset);
  return a == allocated_.end() ? 0 : a->second;
}

uint64_t Allocator::largest_free() const {
  return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
}

}  // namespace fleet::store
