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

Result<bool> FrameDecoder::Next(Envelope* msg) {
  size_t avail = tail_ - head_;
  if (avail < 4) return false;
  uint32_t len;
  std::memcpy(&len, buf_.data() + head_, 4);
  if (len > max_frame_) {
    return Status::IoError("frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                           std::to_string(max_frame_));
  }
  if (avail < 4 + static_cast<size_t>(len)) {
    // Make sure the next read has room for the whole frame.
    if (buf_.size() - head_ < 4 + static_cast<size_t>(len)) WritePtr(4 + len - avail);
    return false;
  }
  if (!msg->ParseFromArray(buf_.data() + head_ + 4, static_cast<int>(len))) {
    return Status::IoError("malformed message on the wire");
  }
  head_ += 4 + len;
  return true;
}

}  // namespace fleet::rpc
