// Framing of the wire protocol: [u32 little-endian length][Envelope bytes].
//
// FrameDecoder accumulates bytes read from a socket and yields whole frames; it
// rejects frames above kMaxFrameBytes (a corrupt or hostile peer) with a Status.
// Not thread-safe: one decoder per connection, used by its reading thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "fleet.pb.h"

namespace fleet::rpc {

constexpr uint32_t kMaxFrameBytes = 1u << 30;                // 1 GiB
constexpr uint32_t kMaxUnauthenticatedFrameBytes = 64 * 1024;  // before Hello

// Appends the frame for `msg` to `out`.
void EncodeFrame(const Envelope& msg, std::string* out);

class FrameDecoder {
 public:
  // Space to read into: at least `min_free` bytes (grows the buffer).
  char* WritePtr(size_t min_free = 64 * 1024);
  size_t WritableBytes() const { return buf_.size() - tail_; }
  void Commit(size_t n) { tail_ += n; }
  // Parses the next whole frame into `msg`. Returns true if one was parsed,
  // false if more bytes are needed; a non-OK status on a corrupt stream.
  Result<bool> Next(Envelope* msg);
  void set_max_frame(uint32_t bytes) { max_frame_ = bytes; }

 private:
  std::vector<char> buf_;
  size_t head_ = 0;
  size_t tail_ = 0;
  uint32_t max_frame_ = kMaxFrameBytes;
};

}  // namespace fleet::rpc
