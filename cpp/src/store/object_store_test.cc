// Tests of ObjectStore: create / seal / get / release / free bookkeeping,
// clients and owners going away, the full-store errors, spilling to disk and
// restoring under memory pressure, lost spill files, and Shutdown.
//
// The store runs on a plain io_context that the test thread pumps itself
// (spills and restores complete on the store's I/O thread and post back to
// it). The test maps the arena through fd() and writes / reads object bytes
// there, as a client would. Every wait is bounded (5 s) and fails the test
// instead of hanging.
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

// ---- basics -----------------------------------------------------------------

TEST_F(ObjectStoreTest, InitRejectsZeroCapacity) {
  StoreOptions o;
  o.capacity = 0;
  o.spill_dir = spill_dir_;
  ObjectStore s(io_, o);
  Status st = s.Init();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

TEST_F(ObjectStoreTest, CreateWriteSealGetReleaseFree) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 600 * kKiB;  // two of these do not fit
  const std::string a = Id("a");

  CreateResult c = CreateSync(1, a, kSize);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c.value().second);
  const uint64_t off = c.value().first;
  EXPECT_EQ(off % Allocator::kAlignment, 0u);
  ASSERT_LE(off + kSize, kCap);
  {
    auto l = ListNow();
    ASSERT_EQ(l.objects_size(), 1);
    EXPECT_EQ(l.objects(0).object_id(), a);
    EXPECT_EQ(l.objects(0).where(), "creating");
    EXPECT_EQ(l.objects(0).size(), kSize);
    EXPECT_EQ(l.objects(0).owner_address(), kOwnerA);
    EXPECT_EQ(l.objects(0).call_site(), "test.py:42");
    EXPECT_EQ(l.objects(0).pins(), 0);
    EXPECT_FALSE(l.objects(0).freed());
    EXPECT_EQ(l.capacity(), kCap);
    EXPECT_GE(l.used(), kSize);
    EXPECT_EQ(l.spill_dir(), spill_dir_);
  }
  Write(off, kSize, 7);

  // Only the creator seals, once.
  EXPECT_FALSE(store_->Seal(2, a).ok());
  EXPECT_EQ(Where(a), "creating");
  ASSERT_TRUE(store_->Seal(1, a).ok());
  EXPECT_FALSE(store_->Seal(1, a).ok());
  EXPECT_FALSE(store_->Seal(1, Id("never-created")).ok());
  EXPECT_EQ(Where(a), "memory");

  auto locs = GetSync(2, {a});
  ASSERT_EQ(locs.size(), 1u);
  EXPECT_EQ(locs[0].error, "");
  EXPECT_FALSE(locs[0].full);
  EXPECT_EQ(locs[0].offset, off);
  EXPECT_EQ(locs[0].size, kSize);
  EXPECT_TRUE(Check(locs[0].offset, kSize, 7));
  {
    auto l = ListNow();
    const auto* o = Find(l, a);
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->pins(), 1);
    EXPECT_EQ(o->where(), "memory");
  }
  store_->Release(2, a);
  EXPECT_EQ(Find(ListNow(), a)->pins(), 0);
  store_->Release(2, a);  // no pin left: ignored
  store_->Release(3, a);  // never pinned: ignored
  EXPECT_EQ(Find(ListNow(), a)->pins(), 0);
  EXPECT_EQ(Where(a), "memory");  // released, not freed: still there

  store_->Free(a);
  {
    auto l = ListNow();
    EXPECT_EQ(l.objects_size(), 0);
    EXPECT_EQ(l.used(), 0u);
  }
  auto gone = GetSync(2, {a});
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_NE(gone[0].error, "");

  // The space is reusable at once: the same size fits without spilling
  // (the callback runs inside Create), and the freed id can be created anew.
  bool answered = false;
  store_->Create(1, a, kSize, kOwnerA, "again", [&](CreateResult r) {
    answered = true;
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r.value().second);
  });
  EXPECT_TRUE(answered) << "a create that fits must be answered at once";
  EXPECT_EQ(Where(a), "creating");
  auto l = ListNow();
  EXPECT_EQ(l.spilled_total(), 0u);
  EXPECT_TRUE(SpillFiles().empty());
}

TEST_F(ObjectStoreTest, SeparateObjectsDoNotOverlap) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<uint64_t> offs(6);
  std::vector<uint64_t> sizes = {1, 63, 64, 65, 100 * kKiB, 0};
  for (size_t i = 0; i < sizes.size(); i++) {
    ASSERT_TRUE(Put(1, Id(static_cast<int>(i)), sizes[i], i, kOwnerA, &offs[i]));
  }
  // Every object's bytes survive the writes of all the others.
  for (size_t i = 0; i < sizes.size(); i++) {
    EXPECT_TRUE(ReadBack(2, Id(static_cast<int>(i)), sizes[i], i)) << "object " << i;
  }
  EXPECT_EQ(ListNow().objects_size(), 6);
}

TEST_F(ObjectStoreTest, CreateExistingAndConcurrentCreate) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string a = Id("a"), b = Id("b");
  ASSERT_TRUE(Put(1, a, 1000, 1));
  const uint64_t used = ListNow().used();

  // Sealed already: exists, nothing to write, no new space taken.
  for (ClientId client : {ClientId{1}, ClientId{2}}) {
    CreateResult r = CreateSync(client, a, 1000);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r.value().second);
  }
  EXPECT_EQ(ListNow().used(), used);
  EXPECT_TRUE(ReadBack(3, a, 1000, 1));

  // Being written by client 1: anyone else (or client 1 again) is refused.
  CreateResult b1 = CreateSync(1, b, 5000);
  ASSERT_TRUE(b1.ok()) << b1.status().ToString();
  EXPECT_FALSE(b1.value().second);
  const uint64_t used_b = ListNow().used();
  CreateResult b2 = CreateSync(2, b, 5000);
  ASSERT_FALSE(b2.ok());
  EXPECT_EQ(b2.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(b2.status().message(), "");
  CreateResult b3 = CreateSync(1, b, 5000);
  EXPECT_FALSE(b3.ok());
  // The refused creates changed nothing: client 1 still owns the write.
  EXPECT_EQ(ListNow().used(), used_b);
  EXPECT_EQ(ListNow().objects_size(), 2);
  EXPECT_FALSE(store_->Seal(2, b).ok());
  Write(b1.value().first, 5000, 2);
  ASSERT_TRUE(store_->Seal(1, b).ok());
  CreateResult b4 = CreateSync(2, b, 5000);
  ASSERT_TRUE(b4.ok());
  EXPECT_TRUE(b4.value().second);
  EXPECT_TRUE(ReadBack(2, b, 5000, 2));
}

TEST_F(ObjectStoreTest, GetErrors) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto unknown = GetSync(1, {Id("unknown")});
  ASSERT_EQ(unknown.size(), 1u);
  EXPECT_NE(unknown[0].error, "");
  EXPECT_FALSE(unknown[0].full);

  const std::string u = Id("unsealed"), s = Id("sealed");
  CreateResult c = CreateSync(1, u, 100);
  ASSERT_TRUE(c.ok());
  auto unsealed = GetSync(2, {u});
  ASSERT_EQ(unsealed.size(), 1u);
  EXPECT_NE(unsealed[0].error, "");
  EXPECT_EQ(Find(ListNow(), u)->pins(), 0);  // an error pins nothing

  // Several ids: one answer each, in order; only the found one is pinned.
  ASSERT_TRUE(Put(1, s, 300, 3));
  auto mixed = GetSync(2, {u, s, Id("unknown"), s});
  ASSERT_EQ(mixed.size(), 4u);
  EXPECT_NE(mixed[0].error, "");
  EXPECT_EQ(mixed[1].error, "");
  EXPECT_EQ(mixed[1].size, 300u);
  EXPECT_TRUE(Check(mixed[1].offset, 300, 3));
  EXPECT_NE(mixed[2].error, "");
  EXPECT_EQ(mixed[3].error, "");
  EXPECT_EQ(mixed[3].offset, mixed[1].offset);
  EXPECT_EQ(Find(ListNow(), s)->pins(), 2);

  auto none = GetSync(2, {});
  EXPECT_TRUE(none.empty());
}

TEST_F(ObjectStoreTest, FreeWhilePinnedWaitsForTheLastRelease) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string a = Id("a");
  ASSERT_TRUE(Put(1, a, 4000, 9));
  ASSERT_TRUE(ReadBack(2, a, 4000, 9, /*release=*/false));
  ASSERT_TRUE(ReadBack(3, a, 4000, 9, /*release=*/false));
  store_->Free(a);
  {
    auto l = ListNow();
    const auto* o = Find(l, a);
    ASSERT_NE(o, nullptr) << "a pinned object must outlive Free";
    EXPECT_TRUE(o->freed());
    EXPECT_EQ(o->pins(), 2);
    EXPECT_EQ(o->where(), "memory");
    EXPECT_GE(l.used(), 4000u);
  }
  store_->Release(2, a);
  {
    auto l = ListNow();
    const auto* o = Find(l, a);
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->pins(), 1);
    EXPECT_TRUE(o->freed());
  }
  // The bytes stay valid for the remaining reader.
  auto locs = GetSync(3, {a});
  ASSERT_EQ(locs.size(), 1u);
  ASSERT_EQ(locs[0].error, "");
  EXPECT_TRUE(Check(locs[0].offset, 4000, 9));
  store_->Release(3, a);
  EXPECT_NE(Find(ListNow(), a), nullptr);
  store_->Release(3, a);
  auto l = ListNow();
  EXPECT_EQ(Find(l, a), nullptr);
  EXPECT_EQ(l.used(), 0u);
}

// ---- clients and owners going away --------------------------------------------

TEST_F(ObjectStoreTest, ClientGoneReclaimsUnsealedObjects) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string a = Id("a");
  CreateResult c = CreateSync(1, a, kCap - 4096);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Write(c.value().first, 1000, 1);  // died half way through writing
  // Another client's sealed object survives client 1 leaving.
  ASSERT_TRUE(Put(2, Id("other"), 1000, 2));
  store_->ClientGone(1);
  auto l = ListNow();
  EXPECT_EQ(Find(l, a), nullptr);
  EXPECT_NE(Find(l, Id("other")), nullptr);
  EXPECT_FALSE(store_->Seal(1, a).ok());
  store_->Free(Id("other"));
  EXPECT_EQ(ListNow().used(), 0u);

  // All the space is back: a create of the whole arena fits at once.
  bool answered = false;
  store_->Create(3, Id("whole"), kCap, kOwnerA, "", [&](CreateResult r) {
    answered = true;
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r.value().first, 0u);
  });
  EXPECT_TRUE(answered);
}

TEST_F(ObjectStoreTest, ClientGoneKeepsItsSealedObjects) {
  // Objects belong to their owner (an address), not to the connection that
  // wrote them: a worker returning a value to its driver then exiting must
  // not take the value with it.
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_TRUE(Put(1, Id("a"), 1000, 1, kOwnerA));
  store_->ClientGone(1);
  EXPECT_TRUE(ReadBack(2, Id("a"), 1000, 1));
}

TEST_F(ObjectStoreTest, ClientGoneDropsItsPins) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string a = Id("a"), b = Id("b");
  ASSERT_TRUE(Put(1, a, 1000, 1));
  ASSERT_TRUE(Put(1, b, 1000, 2));
  auto l1 = GetSync(2, {a, a, b});
  ASSERT_EQ(l1.size(), 3u);
  auto l2 = GetSync(3, {a});
  ASSERT_EQ(l2.size(), 1u);
  EXPECT_EQ(Find(ListNow(), a)->pins(), 3);
  store_->Free(b);  // pinned by client 2 only
  ASSERT_NE(Find(ListNow(), b), nullptr);

  store_->ClientGone(2);
  auto l = ListNow();
  ASSERT_NE(Find(l, a), nullptr);
  EXPECT_EQ(Find(l, a)->pins(), 1);
  EXPECT_FALSE(Find(l, a)->freed());
  EXPECT_EQ(Find(l, b), nullptr) << "a freed object goes with its last pin";

  store_->ClientGone(3);
  EXPECT_EQ(Find(ListNow(), a)->pins(), 0);
  EXPECT_EQ(Where(a), "memory");  // not freed: stays
  store_->ClientGone(3);           // again: harmless
  store_->Free(a);
  EXPECT_EQ(ListNow().objects_size(), 0);
  EXPECT_EQ(ListNow().used(), 0u);
}

TEST_F(ObjectStoreTest, OwnerGoneFreesItsObjects) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_TRUE(Put(1, Id("a1"), 1000, 1, kOwnerA));
  ASSERT_TRUE(Put(1, Id("a2"), 1000, 2, kOwnerA));
  ASSERT_TRUE(Put(1, Id("b1"), 1000, 3, kOwnerB));
  ASSERT_TRUE(Put(1, Id("anon"), 1000, 4, ""));
  CreateResult u = CreateSync(1, Id("a-unsealed"), 1000, kOwnerA);
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(ReadBack(2, Id("a2"), 1000, 2, /*release=*/false));

  store_->OwnerGone("");  // no owner address: nothing happens
  EXPECT_EQ(ListNow().objects_size(), 5);

  store_->OwnerGone(kOwnerA);
  auto l = ListNow();
  EXPECT_EQ(Find(l, Id("a1")), nullptr);
  ASSERT_NE(Find(l, Id("a2")), nullptr) << "pinned: stays until released";
  EXPECT_TRUE(Find(l, Id("a2"))->freed());
  EXPECT_EQ(Find(l, Id("a2"))->pins(), 1);
  ASSERT_NE(Find(l, Id("a-unsealed")), nullptr) << "being written: stays until sealed";
  EXPECT_TRUE(Find(l, Id("a-unsealed"))->freed());
  ASSERT_NE(Find(l, Id("b1")), nullptr);
  EXPECT_FALSE(Find(l, Id("b1"))->freed());
  ASSERT_NE(Find(l, Id("anon")), nullptr);
  EXPECT_TRUE(ReadBack(3, Id("b1"), 1000, 3));

  store_->Release(2, Id("a2"));
  EXPECT_EQ(Find(ListNow(), Id("a2")), nullptr);
  ASSERT_TRUE(store_->Seal(1, Id("a-unsealed")).ok());
  EXPECT_EQ(Find(ListNow(), Id("a-unsealed")), nullptr);
  EXPECT_EQ(ListNow().objects_size(), 2);
}

// ---- full ---------------------------------------------------------------------

TEST_F(ObjectStoreTest, LargerThanCapacityFailsAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::optional<CreateResult> r;
  store_->Create(1, Id("big"), kCap + 1, kOwnerA, "", [&](CreateResult res) { r.emplace(res); });
  ASSERT_TRUE(r.has_value()) << "must fail at once, without waiting";
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->status().code(), StatusCode::kObjectStoreFull);
  const std::string& m = r->status().message();
  EXPECT_TRUE(Contains(m, std::to_string(kCap + 1))) << m;  // the object's size
  EXPECT_TRUE(Contains(m, "1.0 MiB")) << m;                  // the store's
  EXPECT_EQ(ListNow().objects_size(), 0) << "a refused create leaves nothing behind";

  // The id is not stuck "being written"; exactly the capacity fits.
  CreateResult ok = CreateSync(1, Id("big"), kCap);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok.value().first, 0u);
}

TEST_F(ObjectStoreTest, PinnedMemoryFailsAfterTheTimeout) {
  const int kTimeoutMs = 200;
  ASSERT_NO_FATAL_FAILURE(Start(kTimeoutMs));
  const uint64_t kSize = 256 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(4, kSize));
  for (int i = 0; i < 4; i++) ASSERT_TRUE(ReadBack(2, Id(i), kSize, i, /*release=*/false));

  auto t0 = Clock::now();
  auto r = CreateAsync(1, Id("more"), kSize);
  EXPECT_FALSE(r->has_value()) << "it should wait for pins to go first";
  ASSERT_TRUE(RunUntil([&] { return r->has_value(); }, "the full create to fail"));
  auto waited = Clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(kTimeoutMs - 5));
  ASSERT_FALSE((*r)->ok());
  EXPECT_EQ((*r)->status().code(), StatusCode::kObjectStoreFull);
  const std::string& m = (*r)->status().message();
  EXPECT_TRUE(Contains(m, "pinned")) << m;
  EXPECT_TRUE(Contains(m, "1.0 MiB are pinned")) << m;  // 4 x 256 KiB
  auto l = ListNow();
  EXPECT_EQ(Find(l, Id("more")), nullptr);
  EXPECT_EQ(l.objects_size(), 4);
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(Find(l, Id(i))->where(), "memory");
    EXPECT_TRUE(Check(GetSync(3, {Id(i)}).at(0).offset, kSize, i));  // pinned ones untouched
  }
  EXPECT_TRUE(SpillFiles().empty()) << "pinned objects must not be spilled";
}

TEST_F(ObjectStoreTest, ReleasingPinsLetsAPendingCreateSucceed) {
  ASSERT_NO_FATAL_FAILURE(Start(/*full_timeout_ms=*/3000));
  const uint64_t kSize = 256 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(4, kSize));
  for (int i = 0; i < 4; i++) ASSERT_TRUE(ReadBack(2, Id(i), kSize, i, /*release=*/false));

  auto t0 = Clock::now();
  auto r = CreateAsync(1, Id("more"), kSize);
  Pump(100ms);
  ASSERT_FALSE(r->has_value()) << "nothing can be spilled yet";
  store_->Release(2, Id(1));
  ASSERT_TRUE(RunUntil([&] { return r->has_value(); }, "the pending create"));
  EXPECT_LT(Clock::now() - t0, 3000ms) << "it should not have waited for the timeout";
  ASSERT_TRUE((*r)->ok()) << (*r)->status().ToString();
  const uint64_t off = (*r)->value().first;
  Write(off, kSize, 100);
  ASSERT_TRUE(store_->Seal(1, Id("more")).ok());
  EXPECT_EQ(Where(Id(1)), "spilled");
  EXPECT_EQ(FileSize(SpillPath(Id(1))), kSize);
  for (int i : {0, 2, 3}) EXPECT_EQ(Where(Id(i)), "memory");
  EXPECT_TRUE(Check(off, kSize, 100));
  for (int i : {0, 2, 3}) EXPECT_TRUE(ReadBack(3, Id(i), kSize, i));

  // Restoring object 1 needs another reader to let go.
  // "more" (sealed before objects 0, 2, 3 were last read) is the least
  // recently used unpinned object.
  store_->Release(2, Id(2));
  EXPECT_TRUE(ReadBack(3, Id(1), kSize, 1));
  EXPECT_EQ(Where(Id("more")), "spilled");
  EXPECT_EQ(Where(Id(2)), "memory");
  EXPECT_TRUE(ReadBack(3, Id(2), kSize, 2));
}

TEST_F(ObjectStoreTest, ClientGoneWhileItsCreateWaits) {
  ASSERT_NO_FATAL_FAILURE(Start(/*full_timeout_ms=*/3000));
  const uint64_t kSize = 256 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(4, kSize));
  for (int i = 0; i < 4; i++) ASSERT_TRUE(ReadBack(2, Id(i), kSize, i, /*release=*/false));
  auto r = CreateAsync(7, Id("orphan"), kSize);
  Pump(50ms);
  ASSERT_FALSE(r->has_value());
  store_->ClientGone(7);
  EXPECT_EQ(Find(ListNow(), Id("orphan")), nullptr);
  // Its waiting create is dropped at once (answered with an error), so it
  // neither blocks the queue nor makes the store spill for it.
  ASSERT_TRUE(r->has_value());
  EXPECT_FALSE((*r)->ok());
  store_->Release(2, Id(0));
  Pump(50ms);
  EXPECT_EQ(Find(ListNow(), Id("orphan")), nullptr);
  EXPECT_EQ(ListNow().used(), 4 * kSize) << "nothing spilled for a create nobody wants";
  EXPECT_EQ(ListNow().spilled_total(), 0u);
  CreateResult next = CreateSync(8, Id("next"), kSize);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
}

// ---- spilling and restoring ----------------------------------------------------

TEST_F(ObjectStoreTest, SpillsOldestAndRestoresThreeTimesCapacity) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  const int kFit = static_cast<int>(kCap / kSize);  // 8
  const int kN = 3 * kFit;                           // 3 MiB in all

  ASSERT_NO_FATAL_FAILURE(PutMany(kFit, kSize));
  EXPECT_TRUE(SpillFiles().empty());
  EXPECT_EQ(ListNow().spilled_total(), 0u);

  for (int i = kFit; i < kN; i++) {
    ASSERT_TRUE(Put(1, Id(i), kSize, i)) << "object " << i;
    // Creating object i spilled the oldest, object i - kFit.
    EXPECT_EQ(Where(Id(i - kFit)), "spilled") << "object " << i - kFit;
    EXPECT_EQ(Where(Id(i - kFit + 1)), "memory") << "object " << i - kFit + 1;
  }
  auto l = ListNow();
  ASSERT_EQ(l.objects_size(), kN);
  std::set<std::string> expect_files;
  for (int i = 0; i < kN; i++) {
    const auto* o = Find(l, Id(i));
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->where(), i < kN - kFit ? "spilled" : "memory") << "object " << i;
    if (i < kN - kFit) {
      expect_files.insert(ToHex(Id(i)));
      EXPECT_EQ(FileSize(SpillPath(Id(i))), kSize) << "object " << i;
    }
  }
  EXPECT_EQ(SpillFiles(), expect_files);
  EXPECT_EQ(l.spilled_total(), static_cast<uint64_t>(kN - kFit));
  EXPECT_EQ(l.spilled_bytes(), (kN - kFit) * kSize);
  EXPECT_LE(l.used(), kCap);

  // Read everything back, oldest first: each spilled one is restored.
  for (int i = 0; i < kN; i++) {
    auto locs = GetSync(2, {Id(i)});
    ASSERT_EQ(locs.size(), 1u);
    ASSERT_EQ(locs[0].error, "") << "object " << i;
    EXPECT_EQ(locs[0].size, kSize);
    EXPECT_TRUE(Check(locs[0].offset, kSize, i)) << "object " << i;
    EXPECT_EQ(Where(Id(i)), "memory") << "object " << i;
    EXPECT_EQ(Find(ListNow(), Id(i))->pins(), 1);
    store_->Release(2, Id(i));
  }
  EXPECT_GE(ListNow().restored_total(), static_cast<uint64_t>(kN - kFit));
  // And again newest first (restored copies get evicted, others spilled).
  for (int i = kN - 1; i >= 0; i--) EXPECT_TRUE(ReadBack(3, Id(i), kSize, i)) << "object " << i;

  // Several spilled objects in one Get, one of them twice.
  std::vector<std::string> ids;
  l = ListNow();
  for (int i = 0; i < kN && ids.size() < 3; i++) {
    if (Find(l, Id(i))->where() == "spilled") ids.push_back(Id(i));
  }
  ASSERT_EQ(ids.size(), 3u);
  ids.push_back(ids[0]);
  auto locs = GetSync(4, ids);
  ASSERT_EQ(locs.size(), 4u);
  for (size_t k = 0; k < 4; k++) {
    ASSERT_EQ(locs[k].error, "") << k;
    int i = std::stoi(ids[k].substr(3, ids[k].find('\0') - 3));
    EXPECT_TRUE(Check(locs[k].offset, kSize, static_cast<uint64_t>(i))) << "object " << i;
  }
  EXPECT_EQ(locs[3].offset, locs[0].offset);
  EXPECT_EQ(Find(ListNow(), ids[0])->pins(), 2);
  store_->ClientGone(4);

  // Freeing everything removes the spill files too.
  for (int i = 0; i < kN; i++) store_->Free(Id(i));
  l = ListNow();
  EXPECT_EQ(l.objects_size(), 0);
  EXPECT_EQ(l.used(), 0u);
  EXPECT_TRUE(SpillFiles().empty());
}

TEST_F(ObjectStoreTest, ObjectReadWhileSpillingStaysInMemory) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  std::vector<uint64_t> offs(8);
  for (int i = 0; i < 8; i++) ASSERT_TRUE(Put(1, Id(i), kSize, i, kOwnerA, &offs[i]));

  auto r = CreateAsync(1, Id(8), kSize);
  ASSERT_FALSE(r->has_value());
  ASSERT_EQ(Where(Id(0)), "spilling");
  // A reader arrives while object 0 is being written out: served at once
  // from memory.
  auto g = GetAsync(2, {Id(0)});
  ASSERT_TRUE(g->has_value()) << "an object being spilled is still in memory";
  ASSERT_EQ((**g)[0].error, "");
  EXPECT_EQ((**g)[0].offset, offs[0]);

  ASSERT_TRUE(RunUntil([&] { return r->has_value(); }, "the create"));
  ASSERT_TRUE((*r)->ok()) << (*r)->status().ToString();
  const uint64_t off8 = (*r)->value().first;
  EXPECT_TRUE(off8 + kSize <= offs[0] || offs[0] + kSize <= off8)
      << "the new object overlaps pinned object 0";
  Write(off8, kSize, 8);
  ASSERT_TRUE(store_->Seal(1, Id(8)).ok());
  EXPECT_TRUE(Check(offs[0], kSize, 0)) << "pinned object 0 was overwritten";
  EXPECT_EQ(Where(Id(0)), "memory");
  EXPECT_EQ(Where(Id(1)), "spilled");
  const uint64_t spilled = ListNow().spilled_total();
  EXPECT_EQ(spilled, 2u);

  // Once released, object 0 (already on disk) is dropped without writing it
  // again, and the create is answered at once.
  store_->Release(2, Id(0));
  bool answered = false;
  store_->Create(1, Id(9), kSize, kOwnerA, "", [&](CreateResult c) {
    answered = true;
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Write(c.value().first, kSize, 9);
  });
  ASSERT_TRUE(answered);
  ASSERT_TRUE(store_->Seal(1, Id(9)).ok());
  EXPECT_EQ(Where(Id(0)), "spilled");
  EXPECT_EQ(ListNow().spilled_total(), spilled);
  for (int i = 0; i < 10; i++) EXPECT_TRUE(ReadBack(3, Id(i), kSize, i)) << "object " << i;
}

TEST_F(ObjectStoreTest, RestoreWithNoRoomReportsFullAndCanRetry) {
  ASSERT_NO_FATAL_FAILURE(Start(/*full_timeout_ms=*/200));
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(9, kSize));
  ASSERT_EQ(Where(Id(0)), "spilled");
  for (int i = 1; i < 9; i++) ASSERT_TRUE(ReadBack(2, Id(i), kSize, i, /*release=*/false));

  auto locs = GetSync(3, {Id(0)});
  ASSERT_EQ(locs.size(), 1u);
  EXPECT_NE(locs[0].error, "");
  EXPECT_TRUE(locs[0].full);
  EXPECT_TRUE(Contains(locs[0].error, "pinned")) << locs[0].error;
  EXPECT_EQ(Where(Id(0)), "spilled") << "no room is not lost";
  EXPECT_EQ(FileSize(SpillPath(Id(0))), kSize);

  store_->Release(2, Id(5));
  EXPECT_TRUE(ReadBack(3, Id(0), kSize, 0));
  EXPECT_EQ(Where(Id(5)), "spilled");
}

TEST_F(ObjectStoreTest, FreeOfASpilledObjectRemovesItsFile) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(10, kSize));
  ASSERT_EQ(Where(Id(0)), "spilled");
  ASSERT_EQ(Where(Id(1)), "spilled");
  store_->Free(Id(0));
  EXPECT_EQ(Where(Id(0)), "absent");
  EXPECT_EQ(SpillFiles(), std::set<std::string>{ToHex(Id(1))});
  auto locs = GetSync(2, {Id(0)});
  EXPECT_NE(locs.at(0).error, "");
  EXPECT_TRUE(ReadBack(2, Id(1), kSize, 1));
}

// ---- lost spill files -------------------------------------------------------

TEST_F(ObjectStoreTest, MissingSpillFileMakesTheObjectLost) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(11, kSize));
  for (int i = 0; i < 3; i++) ASSERT_EQ(Where(Id(i)), "spilled") << i;
  const std::string path = SpillPath(Id(0));
  ASSERT_EQ(::unlink(path.c_str()), 0) << strerror(errno);
  const uint64_t used = ListNow().used();

  auto locs = GetSync(2, {Id(0)});
  ASSERT_EQ(locs.size(), 1u);
  EXPECT_NE(locs[0].error, "");
  EXPECT_TRUE(Contains(locs[0].error, path)) << locs[0].error;
  EXPECT_FALSE(locs[0].full);
  EXPECT_EQ(Where(Id(0)), "lost");
  EXPECT_LE(ListNow().used(), used) << "a failed restore must give its space back";

  // Lost for good: later gets (alone or with others) fail the same way.
  for (int round = 0; round < 2; round++) {
    auto again = GetSync(2, {Id(1), Id(0)});
    ASSERT_EQ(again.size(), 2u);
    EXPECT_EQ(again[0].error, "");
    EXPECT_TRUE(Check(again[0].offset, kSize, 1));
    EXPECT_TRUE(Contains(again[1].error, path)) << again[1].error;
    store_->Release(2, Id(1));
  }
  CreateResult c = CreateSync(1, Id(0), kSize);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kObjectLost);
  EXPECT_EQ(Find(ListNow(), Id(0))->pins(), 0);

  // Everything else still works.
  EXPECT_TRUE(ReadBack(2, Id(2), kSize, 2));
  for (int i = 3; i < 11; i++) EXPECT_TRUE(ReadBack(2, Id(i), kSize, i)) << "object " << i;
  ASSERT_TRUE(Put(1, Id(11), kSize, 11));
  store_->Free(Id(0));
  EXPECT_EQ(Where(Id(0)), "absent");
}

TEST_F(ObjectStoreTest, TruncatedSpillFileMakesTheObjectLost) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(11, kSize));
  for (int i = 0; i < 3; i++) ASSERT_EQ(Where(Id(i)), "spilled") << i;
  const std::string path = SpillPath(Id(1));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(kSize / 2)), 0) << strerror(errno);

  auto locs = GetSync(2, {Id(1)});
  ASSERT_EQ(locs.size(), 1u);
  const std::string& e = locs[0].error;
  EXPECT_NE(e, "");
  EXPECT_TRUE(Contains(e, path)) << e;
  EXPECT_TRUE(Contains(e, std::to_string(kSize / 2))) << e;
  EXPECT_TRUE(Contains(e, std::to_string(kSize))) << e;
  EXPECT_EQ(Where(Id(1)), "lost");
  auto again = GetSync(2, {Id(1)});
  EXPECT_EQ(again.at(0).error, e);

  for (int i : {0, 2}) EXPECT_TRUE(ReadBack(2, Id(i), kSize, i)) << "object " << i;
  for (int i = 3; i < 11; i++) EXPECT_TRUE(ReadBack(2, Id(i), kSize, i)) << "object " << i;
}

// A lost object's damaged spill file is garbage: it must not outlive the
// object (Free) nor the store (Shutdown).
TEST_F(ObjectStoreTest, DamagedSpillFileIsRemoved) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(10, kSize));
  ASSERT_EQ(Where(Id(0)), "spilled");
  ASSERT_EQ(Where(Id(1)), "spilled");
  ASSERT_EQ(::truncate(SpillPath(Id(0)).c_str(), 1000), 0);
  ASSERT_EQ(::truncate(SpillPath(Id(1)).c_str(), 1000), 0);
  EXPECT_NE(GetSync(2, {Id(0)}).at(0).error, "");
  EXPECT_NE(GetSync(2, {Id(1)}).at(0).error, "");
  ASSERT_EQ(Where(Id(0)), "lost");
  ASSERT_EQ(Where(Id(1)), "lost");

  store_->Free(Id(0));
  EXPECT_EQ(Where(Id(0)), "absent");
  EXPECT_FALSE(std::filesystem::exists(SpillPath(Id(0))))
      << "Free of a lost object left its damaged spill file behind";
  store_->Shutdown();
  EXPECT_TRUE(SpillFiles().empty())
      << "Shutdown left " << SpillFiles().size() << " file(s) in " << spill_dir_;
}

// ---- spill failures ------------------------------------------------------------

// If spilling cannot write (here the spill dir cannot be created), a create
// that needs room must still end: kObjectStoreFull after full_timeout_ms,
// not endless retries of the same failing spill.
TEST_F(ObjectStoreTest, FailingSpillsStillEndInFullError) {
  const std::string blocker = dir_ + "/not-a-dir";
  { std::ofstream(blocker) << "x"; }
  ASSERT_NO_FATAL_FAILURE(Start(/*full_timeout_ms=*/200, kCap, blocker + "/spill"));
  const uint64_t kSize = 256 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(4, kSize));

  // The store logs a warning per failed spill: count them in a file.
  const std::string log_path = dir_ + "/stderr.log";
  int saved = ::dup(2);
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0);
  ::dup2(log_fd, 2);
  auto r = CreateAsync(1, Id("more"), kSize);
  auto deadline = Clock::now() + 2s;
  while (!r->has_value() && Clock::now() < deadline) io_.run_one_for(10ms);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(log_fd);
  int warnings = 0;
  {
    std::ifstream in(log_path);
    for (std::string line; std::getline(in, line);) warnings += Contains(line, "spilling object");
  }

  ASSERT_TRUE(r->has_value()) << "the create was still waiting after 2 s (timeout 200 ms); "
                              << warnings << " spill attempts failed meanwhile";
  ASSERT_FALSE((*r)->ok());
  EXPECT_EQ((*r)->status().code(), StatusCode::kObjectStoreFull);
  // Nothing was lost: the objects are still in memory, intact.
  for (int i = 0; i < 4; i++) EXPECT_TRUE(ReadBack(2, Id(i), kSize, i)) << "object " << i;
}

// ---- shutdown -------------------------------------------------------------------

TEST_F(ObjectStoreTest, ShutdownRemovesSpillFiles) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(12, kSize));
  // Object 0 restored (in memory and on disk), 1..3 spilled.
  ASSERT_TRUE(ReadBack(2, Id(0), kSize, 0));
  auto files = SpillFiles();
  ASSERT_GE(files.size(), 4u);
  EXPECT_TRUE(files.count(ToHex(Id(0))));
  store_->Shutdown();
  EXPECT_TRUE(SpillFiles().empty());
  EXPECT_FALSE(std::filesystem::exists(spill_dir_)) << "an emptied spill dir goes too";
  store_->Shutdown();  // idempotent
  EXPECT_TRUE(SpillFiles().empty());
}

// Shutdown runs on the io thread (NodeServer::Stop), so the completions of
// spills the I/O thread has just finished may not have run yet: their files
// must go too.
TEST_F(ObjectStoreTest, ShutdownRemovesFilesOfSpillsInFlight) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t kSize = 128 * kKiB;
  ASSERT_NO_FATAL_FAILURE(PutMany(8, kSize));
  auto r = CreateAsync(1, Id("big"), 4 * kSize);  // starts 4 spills
  ASSERT_FALSE(r->has_value());
  for (int i = 0; i < 4; i++) ASSERT_EQ(Where(Id(i)), "spilling") << i;
  // Let the I/O thread write them (their completions wait in io, not run).
  auto deadline = Clock::now() + kWait;
  while (SpillFiles().size() < 4 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(SpillFiles().size(), 4u);
  store_->Shutdown();
  EXPECT_TRUE(SpillFiles().empty())
      << "Shutdown left " << SpillFiles().size() << " spill file(s) in " << spill_dir_;
}

}  // namespace
}  // namespace fleet::store
