// Frame encoding/decoding; see frame.h.
#include "rpc/frame.h"

#include <cstring>

namespace fleet::rpc {

void EncodeFrame(const Envelope& msg, std::string* out) {
  size_t size = msg.ByteSizeLong();
  size_t start = out->size();
  out->resize(start + 4 + size);
  uint32_t len = static_cast<uint32_t>(size);
  std::memcpy(out->data() + start, &len, 4);  // x86/arm little-endian hosts only
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out->data() + start + 4));
}

void EncodeFrameWithPayload(const Envelope& msg, const char* payload, size_t len, std::string* out,
                            bool header_only) {
  size_t size = msg.ByteSizeLong();
  uint32_t header[2] = {static_cast<uint32_t>(4 + size + len) | kPayloadFlag, static_cast<uint32_t>(size)};
  out->reserve(out->size() + 8 + size + (header_only ? 0 : len));
  out->append(reinterpret_cast<const char*>(header), 8);  // little-endian hosts only
  size_t start = out->size();
  out->resize(start + size);
  msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out->data() + start));
  if (!header_only) out->append(payload, len);
}

char* FrameDecoder::WritePtr(size_t min_free) {
  if (head_ == tail_) head_ = tail_ = 0;
  if (buf_.size() - tail_ < min_free) {
    if (head_ > 0) {  // compact first; O(live bytes)
      std::memmove(buf_.data(), buf_.data() + head_, tail_ - head_);
      tail_ -= head_;
      head_ = 0;
    }
    if (buf_.size() - tail_ < min_free) buf_.resize(tail_ + min_free);
  }
  return buf_.data() + tail_;
}

Result<bool> FrameDecoder::Next(Envelope* msg, std::string_view* payload) {
  size_t avail = tail_ - head_;
  if (avail < 4) return false;
  uint32_t word;
  std::memcpy(&word, buf_.data() + head_, 4);
  bool has_payload = (word & kPayloadFlag) != 0;
  uint32_t len = word & ~kPayloadFlag;
  if (len > max_frame_) {
    return Status::IoError("frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                           std::to_string(max_frame_));
  }
  if (avail < 4 + static_cast<size_t>(len)) {
    // Make sure the next read has room for the whole frame.
    if (buf_.size() - head_ < 4 + static_cast<size_t>(len)) WritePtr(4 + len - avail);
    return false;
  }
  const char* body = buf_.data() + head_ + 4;
  uint32_t env_len = len;
  if (has_payload) {
    if (len < 4) return Status::IoError("malformed payload frame on the wire");
    std::memcpy(&env_len, body, 4);
    if (env_len > len - 4) return Status::IoError("malformed payload frame on the wire");
    body += 4;
  }
  if (!msg->ParseFromArray(body, static_cast<int>(env_len))) {
    return Status::IoError("malformed message on the wire");
  }
  if (payload) {
    *payload = has_payload ? std::string_view(body + env_len, len - 4 - env_len) : std::string_view();
  }
  head_ += 4 + len;
  return true;
}

}  // namespace fleet::rpc
