// The byte layout of a value that has out-of-band buffers (pickle protocol 5
// with buffer_callback: numpy arrays, bytes-like objects). Written here, read
// by fleet/_private/serialization.py (loads_framed):
//
//   "FL5\0" | u32 nbuf | u64 inband_offset | u64 inband_len |
//   nbuf x (u64 offset, u64 len) | pickle bytes | buffers, each 64-byte aligned
//
// A buffer of 64 KiB or more starts at the same offset within a 4 KiB page
// as its source, so the copy runs at full speed: glibc's memmove runs ~4x
// slower when the destination sits a few hundred bytes past the source
// within a page (measured here). FramedSize reserves the padding that may
// take; the header's offsets say where each buffer landed.
//
// All integers little-endian; offsets from the start of the value. A value
// without out-of-band buffers that travels inline is plain pickle bytes
// (first byte 0x80), so the two never mix up. Objects in the shared-memory
// store always use this layout, so a reader can hand out views of the buffers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fleet {

struct ByteSpan {
  const uint8_t* data;
  uint64_t size;
};

uint64_t FramedSize(uint64_t inband_len, const std::vector<ByteSpan>& buffers);
// Writes the value into `dst`, which holds FramedSize(...) bytes.
void WriteFramed(uint8_t* dst, std::string_view inband, const std::vector<ByteSpan>& buffers);

// What the owner's memory store keeps for an object in a node's store.
std::string StoreDescriptor(uint64_t size, const std::string& node_id);
// The node holding the primary copy, from a StoreDescriptor ("" if it is
// too short to name one: the local node).
std::string StoreDescriptorNode(std::string_view descriptor);

}  // namespace fleet
