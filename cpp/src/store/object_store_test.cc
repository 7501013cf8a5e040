// Tests of ObjectStore: create / seal / get / release / free bookkeeping,
// clients and owners going away, and the full-store errors (spilling is in
// object_store_spill_test.cc).
#include "store/object_store_test_util.h"

namespace fleet::store {
namespace {

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

}  // namespace
}  // namespace fleet::store
