// Tests of WorkerPool's bookkeeping. Time is passed in explicitly: no sleeps.
#include "node/worker_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace fleet::node {
namespace {

using namespace std::chrono_literals;
using Clock = WorkerPool::Clock;

const Clock::time_point kT0 = Clock::time_point{} + 1000h;

std::vector<std::string> Ids(const std::vector<WorkerInfo>& ws) {
  std::vector<std::string> ids;
  for (auto& w : ws) ids.push_back(w.id);
  return ids;
}

TEST(WorkerPoolTest, StateTransitions) {
  WorkerPool pool(/*soft_limit=*/4, /*max_starting=*/2, /*idle_timeout_ms=*/1000);
  EXPECT_EQ(pool.size(), 0);
  EXPECT_FALSE(pool.PopIdle().has_value());

  pool.AddStarting("w1", 101);
  pool.AddStarting("w2", 102);
  EXPECT_EQ(pool.size(), 2);
  EXPECT_EQ(pool.num_starting(), 2);
  EXPECT_EQ(pool.num_idle(), 0);
  ASSERT_NE(pool.Find("w1"), nullptr);
  EXPECT_EQ(pool.Find("w1")->state, WorkerState::kStarting);
  EXPECT_EQ(pool.Find("w1")->pid, 101);
  EXPECT_EQ(pool.Find("nope"), nullptr);
  // Starting workers cannot be leased.
  EXPECT_FALSE(pool.PopIdle().has_value());

  EXPECT_TRUE(pool.OnRegistered("w1", "unix:/tmp/w1.sock", kT0));
  EXPECT_EQ(pool.num_starting(), 1);
  EXPECT_EQ(pool.num_idle(), 1);
  EXPECT_EQ(pool.Find("w1")->state, WorkerState::kIdle);
  EXPECT_EQ(pool.Find("w1")->address, "unix:/tmp/w1.sock");
  EXPECT_EQ(pool.Find("w1")->idle_since, kT0);
  // Registering twice is refused and changes nothing.
  EXPECT_FALSE(pool.OnRegistered("w1", "unix:/elsewhere", kT0 + 1s));
  EXPECT_EQ(pool.num_idle(), 1);
  EXPECT_EQ(pool.num_starting(), 1);
  EXPECT_EQ(pool.Find("w1")->address, "unix:/tmp/w1.sock");

  EXPECT_TRUE(pool.OnRegistered("w2", "unix:/tmp/w2.sock", kT0 + 1s));
  EXPECT_EQ(pool.num_starting(), 0);
  EXPECT_EQ(pool.num_idle(), 2);

  // Most recently idle first.
  auto a = pool.PopIdle();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->id, "w2");
  EXPECT_EQ(a->state, WorkerState::kLeased);
  EXPECT_EQ(a->address, "unix:/tmp/w2.sock");
  EXPECT_EQ(pool.Find("w2")->state, WorkerState::kLeased);
  EXPECT_EQ(pool.num_idle(), 1);
  auto b = pool.PopIdle();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->id, "w1");
  EXPECT_FALSE(pool.PopIdle().has_value());
  EXPECT_EQ(pool.num_idle(), 0);
  EXPECT_EQ(pool.size(), 2);

  // Back to idle: the last one pushed is the next one popped.
  pool.PushIdle("w2", kT0 + 5s);
  pool.PushIdle("w1", kT0 + 6s);
  EXPECT_EQ(pool.num_idle(), 2);
  EXPECT_EQ(pool.Find("w1")->idle_since, kT0 + 6s);
  // Pushing an idle (not leased) or unknown worker is ignored.
  pool.PushIdle("w1", kT0 + 7s);
  pool.PushIdle("ghost", kT0 + 7s);
  EXPECT_EQ(pool.num_idle(), 2);
  EXPECT_EQ(pool.Find("w1")->idle_since, kT0 + 6s);
  auto c = pool.PopIdle();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->id, "w1");
}

TEST(WorkerPoolTest, PushIdleOfStartingWorkerIsIgnored) {
  WorkerPool pool(4, 2, 1000);
  pool.AddStarting("w1", 1);
  pool.PushIdle("w1", kT0);
  EXPECT_EQ(pool.num_idle(), 0);
  EXPECT_EQ(pool.Find("w1")->state, WorkerState::kStarting);
  EXPECT_FALSE(pool.PopIdle().has_value());
}

TEST(WorkerPoolTest, OnRegisteredUnknownIdReturnsFalse) {
  WorkerPool pool(4, 2, 1000);
  EXPECT_FALSE(pool.OnRegistered("ghost", "unix:/x", kT0));
  EXPECT_EQ(pool.size(), 0);
  EXPECT_EQ(pool.num_idle(), 0);
  EXPECT_EQ(pool.num_starting(), 0);
  pool.AddStarting("w1", 1);
  EXPECT_FALSE(pool.OnRegistered("ghost", "unix:/x", kT0));
  EXPECT_EQ(pool.num_starting(), 1);
}

TEST(WorkerPoolTest, NumToStartRespectsMaxStarting) {
  WorkerPool pool(/*soft_limit=*/10, /*max_starting=*/3, 1000);
  EXPECT_EQ(pool.NumToStart(0), 0);
  EXPECT_EQ(pool.NumToStart(1), 1);
  EXPECT_EQ(pool.NumToStart(3), 3);
  EXPECT_EQ(pool.NumToStart(100), 3);  // capped by max_starting

  pool.AddStarting("a", 1);
  // One is already on its way: it counts towards both the want and the cap.
  EXPECT_EQ(pool.NumToStart(1), 0);
  EXPECT_EQ(pool.NumToStart(2), 1);
  EXPECT_EQ(pool.NumToStart(100), 2);

  pool.AddStarting("b", 2);
  pool.AddStarting("c", 3);
  EXPECT_EQ(pool.num_starting(), 3);
  EXPECT_EQ(pool.NumToStart(100), 0);  // at the cap
  EXPECT_EQ(pool.NumToStart(1), 0);

  // Registered workers no longer count as starting.
  ASSERT_TRUE(pool.OnRegistered("a", "addr-a", kT0));
  EXPECT_EQ(pool.num_starting(), 2);
  EXPECT_EQ(pool.NumToStart(100), 1);
  EXPECT_EQ(pool.NumToStart(2), 0);
  EXPECT_EQ(pool.NumToStart(3), 1);
}

TEST(WorkerPoolTest, ReapOnlyIdleBeyondSoftLimitAfterTimeout) {
  WorkerPool pool(/*soft_limit=*/2, /*max_starting=*/10, /*idle_timeout_ms=*/1000);
  // Four workers, all idle; w1 oldest.
  for (int i = 1; i <= 4; ++i) {
    std::string id = "w" + std::to_string(i);
    pool.AddStarting(id, 100 + i);
    ASSERT_TRUE(pool.OnRegistered(id, "addr-" + id, kT0 + std::chrono::milliseconds(100 * i)));
  }
  EXPECT_EQ(pool.num_idle(), 4);

  // Nobody has been idle long enough yet.
  EXPECT_TRUE(pool.ReapCandidates(kT0 + 500ms).empty());
  // w1 idle for exactly the timeout (boundary is inclusive).
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0 + 1100ms)), std::vector<std::string>{"w1"});
  // Long after: only the surplus over soft_limit (2), oldest first.
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0 + 1h)), (std::vector<std::string>{"w1", "w2"}));
  // ReapCandidates does not change the pool.
  EXPECT_EQ(pool.num_idle(), 4);
  EXPECT_EQ(pool.size(), 4);

  // Leased workers count towards the soft limit but are never reaped.
  auto leased = pool.PopIdle();  // w4, most recent
  ASSERT_TRUE(leased.has_value());
  EXPECT_EQ(leased->id, "w4");
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0 + 1h)), (std::vector<std::string>{"w1", "w2"}));

  // Once the surplus is gone, nothing more is reaped.
  ASSERT_TRUE(pool.Remove("w1").has_value());
  ASSERT_TRUE(pool.Remove("w2").has_value());
  EXPECT_EQ(pool.size(), 2);
  EXPECT_TRUE(pool.ReapCandidates(kT0 + 1h).empty());
}

TEST(WorkerPoolTest, ReapUsesTimeSinceLastIdle) {
  WorkerPool pool(/*soft_limit=*/0, /*max_starting=*/10, /*idle_timeout_ms=*/1000);
  pool.AddStarting("a", 1);
  pool.AddStarting("b", 2);
  ASSERT_TRUE(pool.OnRegistered("a", "addr-a", kT0));
  ASSERT_TRUE(pool.OnRegistered("b", "addr-b", kT0));
  auto w = pool.PopIdle();  // b
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->id, "b");
  pool.PushIdle("b", kT0 + 10s);  // idle again, later
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0 + 10500ms)), std::vector<std::string>{"a"});
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0 + 11s)), (std::vector<std::string>{"a", "b"}));
}

TEST(WorkerPoolTest, StartingWorkersCountButAreNotReaped) {
  WorkerPool pool(/*soft_limit=*/1, /*max_starting=*/10, /*idle_timeout_ms=*/0);
  pool.AddStarting("s1", 1);
  pool.AddStarting("s2", 2);
  EXPECT_TRUE(pool.ReapCandidates(kT0 + 1h).empty());
  pool.AddStarting("i1", 3);
  ASSERT_TRUE(pool.OnRegistered("i1", "addr", kT0));
  EXPECT_EQ(Ids(pool.ReapCandidates(kT0)), std::vector<std::string>{"i1"});  // timeout 0
}

TEST(WorkerPoolTest, RemoveUpdatesCounts) {
  WorkerPool pool(4, 4, 1000);
  pool.AddStarting("s", 1);
  pool.AddStarting("i", 2);
  pool.AddStarting("l", 3);
  ASSERT_TRUE(pool.OnRegistered("i", "addr-i", kT0));
  ASSERT_TRUE(pool.OnRegistered("l", "addr-l", kT0));
  auto leased = pool.PopIdle();
  ASSERT_TRUE(leased.has_value());
  EXPECT_EQ(leased->id, "l");
  EXPECT_EQ(pool.num_starting(), 1);
  EXPECT_EQ(pool.num_idle(), 1);
  EXPECT_EQ(pool.size(), 3);

  // A starting worker that died before connecting.
  auto s = pool.Remove("s");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->pid, 1);
  EXPECT_EQ(s->state, WorkerState::kStarting);
  EXPECT_EQ(pool.num_starting(), 0);
  EXPECT_EQ(pool.size(), 2);
  EXPECT_EQ(pool.Find("s"), nullptr);
  // It can no longer register.
  EXPECT_FALSE(pool.OnRegistered("s", "addr-s", kT0));
  EXPECT_EQ(pool.num_starting(), 0);

  // An idle worker: it leaves the idle list too.
  auto i = pool.Remove("i");
  ASSERT_TRUE(i.has_value());
  EXPECT_EQ(i->state, WorkerState::kIdle);
  EXPECT_EQ(pool.num_idle(), 0);
  EXPECT_FALSE(pool.PopIdle().has_value());
  EXPECT_TRUE(pool.ReapCandidates(kT0 + 1h).empty());

  // A leased worker.
  auto l = pool.Remove("l");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->state, WorkerState::kLeased);
  EXPECT_EQ(pool.size(), 0);
  // Returning a removed lease does nothing.
  pool.PushIdle("l", kT0);
  EXPECT_EQ(pool.num_idle(), 0);

  // Unknown / already removed.
  EXPECT_FALSE(pool.Remove("l").has_value());
  EXPECT_FALSE(pool.Remove("nobody").has_value());
  EXPECT_EQ(pool.num_starting(), 0);
}

TEST(WorkerPoolTest, IdOfPidAndPids) {
  WorkerPool pool(4, 4, 1000);
  EXPECT_FALSE(pool.IdOfPid(10).has_value());
  pool.AddStarting("a", 10);
  pool.AddStarting("b", 20);
  ASSERT_TRUE(pool.OnRegistered("b", "addr-b", kT0));
  EXPECT_EQ(pool.IdOfPid(10), std::optional<std::string>("a"));
  EXPECT_EQ(pool.IdOfPid(20), std::optional<std::string>("b"));
  EXPECT_FALSE(pool.IdOfPid(30).has_value());
  auto pids = pool.Pids();
  std::sort(pids.begin(), pids.end());
  EXPECT_EQ(pids, (std::vector<int>{10, 20}));
  ASSERT_TRUE(pool.Remove("a").has_value());
  EXPECT_FALSE(pool.IdOfPid(10).has_value());
  EXPECT_EQ(pool.Pids(), std::vector<int>{20});
}

}  // namespace
}  // namespace fleet::node

namespace fleet::node {
namespace {

TEST(WorkerPoolTest, ActorWorkersDoNotCountTowardTheIdleLimit) {
  // soft limit 2: two idle workers stay even while three others host actors.
  WorkerPool pool(2, 8, 0);
  auto now = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    std::string id = "w" + std::to_string(i);
    pool.AddStarting(id, 100 + i);
    ASSERT_TRUE(pool.OnRegistered(id, "addr", now));
  }
  for (int i = 0; i < 3; ++i) {
    auto w = pool.PopIdle();
    ASSERT_TRUE(w);
    pool.MarkDedicated(w->id);
  }
  EXPECT_TRUE(pool.ReapCandidates(now + std::chrono::seconds(5)).empty());
  // A dedicated worker that exits is no longer counted either.
  auto gone = pool.Find("w4") && pool.Find("w4")->dedicated ? std::string("w4") : std::string();
  ASSERT_FALSE(gone.empty());
  pool.Remove(gone);
  EXPECT_TRUE(pool.ReapCandidates(now + std::chrono::seconds(5)).empty());
  EXPECT_EQ(pool.size(), 4);
}

TEST(WorkerPoolTest, WorkersAreKeyedByTheirGpuAssignment) {
  EXPECT_EQ(GpuKey({}), "-");
  EXPECT_EQ(GpuKey({0, 2}), "0,2");
  WorkerPool pool(/*soft_limit=*/4, /*max_starting=*/2, /*idle_timeout_ms=*/1000);
  for (std::string id : {"a", "b"}) {
    pool.AddStarting(id, 1);
    ASSERT_TRUE(pool.OnRegistered(id, id + ".sock", kT0));
  }
  auto cpu = pool.PopIdle("-");  // b (most recent), now a CPU worker
  ASSERT_TRUE(cpu);
  EXPECT_EQ(cpu->id, "b");
  pool.PushIdle("b", kT0 + 1s);
  auto gpu = pool.PopIdle("0");  // not b: its CUDA_VISIBLE_DEVICES is fixed; a is fresh
  ASSERT_TRUE(gpu);
  EXPECT_EQ(gpu->id, "a");
  EXPECT_FALSE(pool.PopIdle("1").has_value());  // b serves CPU leases only
  pool.PushIdle("a", kT0 + 2s);
  EXPECT_FALSE(pool.PopIdle("1").has_value());  // a serves GPU 0 only
  auto again = pool.PopIdle("0");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, "a");
  auto cpu2 = pool.PopIdle();
  ASSERT_TRUE(cpu2);
  EXPECT_EQ(cpu2->id, "b");
}

}  // namespace
}  // namespace fleet::node
