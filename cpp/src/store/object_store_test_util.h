// ObjectStoreTest: the fixture of the object store's tests (object_store_test.cc,
// object_store_spill_test.cc).
//
// The store runs on a plain io_context that the test thread pumps itself
// (spills and restores complete on the store's I/O thread and post back to
// it). The test maps the arena through fd() and writes / reads object bytes
// there, as a client would. Every wait is bounded (5 s) and fails the test
// instead of hanging.
#pragma once

#include "store/object_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/ids.h"
#include "fleet.pb.h"

namespace fleet::store {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using CreateResult = Result<std::pair<uint64_t, bool>>;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kCap = 1 * kMiB;
constexpr auto kWait = 5000ms;  // "forever" for a test, but bounded

const std::string kOwnerA = "unix:/tmp/owner-a.sock";
const std::string kOwnerB = "unix:/tmp/owner-b.sock";

std::string Id(const std::string& name) {
  std::string id = name;
  id.resize(20, '\0');  // object ids are 20 bytes
  return id;
}
std::string Id(int i) { return Id("obj" + std::to_string(i)); }

// A distinct byte pattern per seed (object), position-dependent.
uint8_t PatternByte(uint64_t seed, uint64_t i) {
  uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<uint8_t>(x);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class ObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-object-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << strerror(errno);
    dir_ = tmpl;
    spill_dir_ = dir_ + "/spill";
  }

  void TearDown() override {
    store_.reset();
    if (map_ != nullptr) ::munmap(map_, map_size_);
    map_ = nullptr;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Creates and initializes the store and maps its arena.
  void Start(int full_timeout_ms = 200, uint64_t capacity = kCap, std::string spill_dir = "") {
    StoreOptions o;
    o.capacity = capacity;
    o.spill_dir = spill_dir.empty() ? spill_dir_ : spill_dir;
    o.full_timeout_ms = full_timeout_ms;
    store_ = std::make_unique<ObjectStore>(io_, o);
    Status s = store_->Init();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_GE(store_->fd(), 0);
    ASSERT_EQ(store_->capacity(), capacity);
    void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, store_->fd(), 0);
    ASSERT_NE(p, MAP_FAILED) << strerror(errno);
    map_ = static_cast<uint8_t*>(p);
    map_size_ = capacity;
  }

  // Pumps io until `done` holds; fails the test (and returns false) after
  // `timeout`.
  bool RunUntil(const std::function<bool()>& done, const std::string& what,
                std::chrono::milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    while (!done()) {
      if (Clock::now() >= deadline) {
        ADD_FAILURE() << "timed out after " << timeout.count() << " ms waiting for " << what;
        return false;
      }
      io_.run_one_for(10ms);
    }
    return true;
  }
  // Pumps io for `d` (whatever completes meanwhile runs).
  void Pump(std::chrono::milliseconds d) {
    auto deadline = Clock::now() + d;
    while (Clock::now() < deadline) {
      io_.run_one_for(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()) +
                      1ms);
    }
  }

  std::shared_ptr<std::optional<CreateResult>> CreateAsync(ClientId client, const std::string& id,
                                                           uint64_t size,
                                                           const std::string& owner = kOwnerA) {
    auto r = std::make_shared<std::optional<CreateResult>>();
    store_->Create(client, id, size, owner, "test.py:42",
                   [r](CreateResult res) { r->emplace(std::move(res)); });
    return r;
  }
  CreateResult CreateSync(ClientId client, const std::string& id, uint64_t size,
                          const std::string& owner = kOwnerA) {
    auto r = CreateAsync(client, id, size, owner);
    if (!RunUntil([&] { return r->has_value(); }, "Create of " + ToHex(id))) {
      return Status::TimedOut("the create was never answered");
    }
    return **r;
  }

  std::shared_ptr<std::optional<std::vector<ObjectLocation>>> GetAsync(
      ClientId client, const std::vector<std::string>& ids) {
    auto r = std::make_shared<std::optional<std::vector<ObjectLocation>>>();
    store_->Get(client, ids, [r](std::vector<ObjectLocation> locs) { r->emplace(std::move(locs)); });
    return r;
  }
  std::vector<ObjectLocation> GetSync(ClientId client, const std::vector<std::string>& ids) {
    auto r = GetAsync(client, ids);
    if (!RunUntil([&] { return r->has_value(); }, "a Get")) return {};
    return **r;
  }

  void Write(uint64_t offset, uint64_t size, uint64_t seed) {
    for (uint64_t i = 0; i < size; i++) map_[offset + i] = PatternByte(seed, i);
  }
  ::testing::AssertionResult Check(uint64_t offset, uint64_t size, uint64_t seed) {
    if (offset + size > map_size_) {
      return ::testing::AssertionFailure()
             << "range [" << offset << ", " << offset + size << ") is outside the arena";
    }
    for (uint64_t i = 0; i < size; i++) {
      if (map_[offset + i] != PatternByte(seed, i)) {
        return ::testing::AssertionFailure()
               << "byte " << i << " of the object at offset " << offset << " (seed " << seed
               << ") is " << int{map_[offset + i]} << ", expected " << int{PatternByte(seed, i)};
      }
    }
    return ::testing::AssertionSuccess();
  }

  // Create + write the pattern + seal.
  ::testing::AssertionResult Put(ClientId client, const std::string& id, uint64_t size,
                                 uint64_t seed, const std::string& owner = kOwnerA,
                                 uint64_t* offset_out = nullptr) {
    CreateResult r = CreateSync(client, id, size, owner);
    if (!r.ok()) {
      return ::testing::AssertionFailure() << "Create of " << ToHex(id) << ": "
                                           << r.status().ToString();
    }
    if (r.value().second) {
      return ::testing::AssertionFailure() << "Create of " << ToHex(id) << " said it exists";
    }
    uint64_t off = r.value().first;
    if (off % Allocator::kAlignment != 0 || off + size > map_size_) {
      return ::testing::AssertionFailure() << "bad offset " << off << " for " << size << " bytes";
    }
    Write(off, size, seed);
    Status s = store_->Seal(client, id);
    if (!s.ok()) return ::testing::AssertionFailure() << "Seal: " << s.ToString();
    if (offset_out != nullptr) *offset_out = off;
    return ::testing::AssertionSuccess();
  }

  // Get (one pin), check size and bytes, and release.
  ::testing::AssertionResult ReadBack(ClientId client, const std::string& id, uint64_t size,
                                      uint64_t seed, bool release = true) {
    auto locs = GetSync(client, {id});
    if (locs.size() != 1) return ::testing::AssertionFailure() << "Get answered nothing";
    if (!locs[0].error.empty()) {
      return ::testing::AssertionFailure() << "Get of " << ToHex(id) << ": " << locs[0].error;
    }
    if (locs[0].size != size) {
      return ::testing::AssertionFailure() << "size " << locs[0].size << ", expected " << size;
    }
    auto c = Check(locs[0].offset, size, seed);
    if (release) store_->Release(client, id);
    return c;
  }

  rpc::StoreListReply ListNow() {
    rpc::StoreListReply r;
    store_->List(&r);
    return r;
  }
  static const rpc::StoreObjectInfo* Find(const rpc::StoreListReply& r, const std::string& id) {
    for (const auto& o : r.objects()) {
      if (o.object_id() == id) return &o;
    }
    return nullptr;
  }
  // The object's "where", or "absent".
  std::string Where(const std::string& id) {
    auto r = ListNow();
    const auto* o = Find(r, id);
    return o == nullptr ? "absent" : o->where();
  }

  std::string SpillPath(const std::string& id) const { return spill_dir_ + "/" + ToHex(id); }
  // Names of the files in the spill dir (none if it does not exist).
  std::set<std::string> SpillFiles() const {
    std::set<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(spill_dir_, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      out.insert(it->path().filename().string());
    }
    return out;
  }
  static uint64_t FileSize(const std::string& path) {
    std::error_code ec;
    auto n = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<uint64_t>(n);
  }

  // Puts `n` objects of `size` bytes (ids Id(0..n-1), seeds 0..n-1).
  void PutMany(int n, uint64_t size, ClientId client = 1) {
    for (int i = 0; i < n; i++) ASSERT_TRUE(Put(client, Id(i), size, i)) << "object " << i;
  }

  // Declared in this order so the store goes first, then the work guard,
  // then io (whose queued store completions are destroyed, never run).
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<ObjectStore> store_;
  std::string dir_;
  std::string spill_dir_;
  uint8_t* map_ = nullptr;
  uint64_t map_size_ = 0;
};


}  // namespace
}  // namespace fleet::store
