// Framed value layout; see value_format.h.
#include "core/value_format.h"

#include "core/parallel_copy.h"

#include <cstring>

namespace fleet {

namespace {
constexpr uint64_t Align(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

uint64_t HeaderSize(size_t nbuf) { return 4 + 4 + 8 + 8 + 16 * nbuf; }

void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
}  // namespace

constexpr uint64_t kPageMatchMin = 64 * 1024;
constexpr uint64_t kPage = 4096;

uint64_t FramedSize(uint64_t inband_len, const std::vector<ByteSpan>& buffers) {
  uint64_t end = Align(HeaderSize(buffers.size()), 8) + inband_len;
  for (const auto& b : buffers) {
    end = Align(end, 64) + (b.size >= kPageMatchMin ? kPage : 0) + b.size;
  }
  return end;
}

void WriteFramed(uint8_t* dst, std::string_view inband, const std::vector<ByteSpan>& buffers) {
  std::memcpy(dst, "FL5\0", 4);
  uint32_t n = static_cast<uint32_t>(buffers.size());
  for (int i = 0; i < 4; i++) dst[4 + i] = static_cast<uint8_t>(n >> (8 * i));
  uint64_t off = Align(HeaderSize(buffers.size()), 8);
  std::memset(dst + HeaderSize(buffers.size()), 0, off - HeaderSize(buffers.size()));
  Put64(dst + 8, off);
  Put64(dst + 16, inband.size());
  std::memcpy(dst + off, inband.data(), inband.size());
  off += inband.size();
  for (size_t i = 0; i < buffers.size(); i++) {
    uint64_t start = Align(off, 64);
    if (buffers[i].size >= kPageMatchMin) {  // same offset within a page as the source
      uint64_t want = reinterpret_cast<uintptr_t>(buffers[i].data) % kPage;
      uint64_t have = (reinterpret_cast<uintptr_t>(dst) + start) % kPage;
      start += (want + kPage - have) % kPage;
    }
    std::memset(dst + off, 0, start - off);
    Put64(dst + 24 + 16 * i, start);
    Put64(dst + 32 + 16 * i, buffers[i].size);
    if (buffers[i].size > 0) ParallelMemcpy(dst + start, buffers[i].data, buffers[i].size);
    off = start + buffers[i].size;
  }
}

std::string StoreDescriptorNode(std::string_view descriptor) {
  return descriptor.size() > 8 ? std::string(descriptor.substr(8)) : std::string();
}

std::string StoreDescriptor(uint64_t size, const std::string& node_id) {
  std::string d(8, '\0');
  Put64(reinterpret_cast<uint8_t*>(d.data()), size);
  return d + node_id;
}

}  // namespace fleet
