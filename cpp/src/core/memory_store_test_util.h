// Helpers shared by the MemoryStore tests (test-only header).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "core/memory_store.h"

namespace fleet::testing_util {

using namespace std::chrono_literals;

// Flags are opaque to the store: any value must round-trip.
constexpr uint32_t kAnyFlags = 1u << 8;
constexpr int64_t kLongMs = 20000;  // "forever" for a test, but bounded
constexpr auto kLong = 20s;

inline std::string Id(const std::string& name) {
  std::string id = name;
  id.resize(20, '\0');  // object ids are 20 bytes
  return id;
}

inline MemoryStore::FetchFn NoFetch() {
  return [](const std::string&, const std::string&) { ADD_FAILURE() << "unexpected fetch"; };
}

}  // namespace fleet::testing_util
