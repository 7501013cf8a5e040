// Framing of the wire protocol: [u32 little-endian length][Envelope bytes].
// A frame may also carry a raw payload after its Envelope (object transfer
// chunks, copied once on each side instead of through a bytes field):
// [u32 length | kPayloadFlag][u32 envelope length][Envelope][payload].
//
// FrameDecoder accumulates bytes read from a socket and yields whole frames; it
// rejects frames above kMaxFrameBytes (a corrupt or hostile peer) with a Status.
// Not thread-safe: one decoder per connection, used by its reading thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "fleet.pb.h"

namespace fleet::rpc {

constexpr uint32_t kMaxFrameBytes = 1u << 30;                // 1 GiB
constexpr uint32_t kMaxUnauthenticatedFrameBytes = 64 * 1024;  // before Hello

constexpr uint32_t kPayloadFlag = 0x80000000u;  // frames are < 2 GiB: the top bit is free

// Appends the frame for `msg` to `out`.
void EncodeFrame(const Envelope& msg, std::string* out);
// Appends a frame of `msg` followed by `len` raw bytes from `payload`.
// With `header_only`, everything but the payload bytes (the caller sends them).
void EncodeFrameWithPayload(const Envelope& msg, const char* payload, size_t len, std::string* out,
                            bool header_only = false);

class FrameDecoder {
 public:
  // Space to read into: at least `min_free` bytes (grows the buffer).
  char* WritePtr(size_t min_free = 64 * 1024);
  size_t WritableBytes() const { return buf_.size() - tail_; }
  void Commit(size_t n) { tail_ += n; }
  // Parses the next whole frame into `msg`. Returns true if one was parsed,
  // false if more bytes are needed; a non-OK status on a corrupt stream.
  // `payload` (if given) views the frame's raw payload (empty if none),
  // valid until the next call.
  Result<bool> Next(Envelope* msg, std::string_view* payload = nullptr);
  void set_max_frame(uint32_t bytes) { max_frame_ = bytes; }

 private:
  std::vector<char> buf_;
  size_t head_ = 0;
  size_t tail_ = 0;
  uint32_t max_frame_ = kMaxFrameBytes;
};

}  // namespace fleet::rpc
