// Tests of ObjectStore's spilling to disk and restoring under memory
// pressure, lost and damaged spill files, failing spills, and Shutdown.
#include "store/object_store_test_util.h"

namespace fleet::store {
namespace {

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
