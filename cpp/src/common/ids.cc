// Id helpers: random ids from /dev/urandom (getrandom), hex, derived ids.
#include "common/ids.h"

#include <sys/random.h>

#include <cstring>

#include "common/logging.h"

namespace fleet {

std::string RandomId() {
  std::string id(kUniqueIdSize, '\0');
  ssize_t n = getrandom(id.data(), id.size(), 0);
  FLEET_CHECK(n == static_cast<ssize_t>(id.size())) << "getrandom failed";
  return id;
}

std::string ToHex(const std::string& bin) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(bin.size() * 2, '0');
  for (size_t i = 0; i < bin.size(); ++i) {
    auto c = static_cast<unsigned char>(bin[i]);
    out[2 * i] = kDigits[c >> 4];
    out[2 * i + 1] = kDigits[c & 15];
  }
  return out;
}

std::string FromHex(const std::string& hex) {
  if (hex.size() % 2) return {};
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = val(hex[2 * i]), lo = val(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return {};
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::string ReturnObjectId(const std::string& task_id, uint32_t index) {
  std::string id = task_id;
  char b[4];
  std::memcpy(b, &index, 4);
  id.append(b, 4);
  return id;
}

IdGenerator::IdGenerator() : prefix_(RandomId().substr(0, 6)) {}

std::string IdGenerator::NextTaskId(uint32_t job_id) {
  uint64_t n = counter_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string id(kUniqueIdSize, '\0');
  std::memcpy(id.data(), &job_id, 4);
  std::memcpy(id.data() + 4, prefix_.data(), 6);
  std::memcpy(id.data() + 10, &n, 6);
  return id;
}

}  // namespace fleet
