// Tests of MemoryStore's values: blocking gets and waits, callbacks, fetches
// of borrowed objects, generator items, and entries freed once their
// waiters leave. Reference counting: memory_store_refcount_test.cc.
//
// Threads only complete objects; every wait has a generous timeout so a bug
// fails instead of hanging.
#include "core/memory_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/memory_store_test_util.h"
#include "core/object_flags.h"

namespace fleet {
namespace {

using namespace testing_util;

TEST(MemoryStoreTest, PutReadyThenGet) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("a"), "hello", kAnyFlags);
  EXPECT_TRUE(store.Contains(Id("a")));
  EXPECT_EQ(store.Size(), 1u);
  EXPECT_FALSE(store.OwnerOf(Id("a")).has_value());  // owned here

  int blocked = 0;
  auto r = store.Get({Id("a")}, 0, [&](bool) { blocked++; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r.value().size(), 1u);
  EXPECT_EQ(r.value()[0].data, "hello");
  EXPECT_EQ(r.value()[0].flags, kAnyFlags);
  EXPECT_EQ(blocked, 0);  // ready: never blocked

  // Several ids, duplicates included, in order.
  store.PutReady(Id("b"), "world", kFlagNone);
  auto r2 = store.Get({Id("b"), Id("a"), Id("b")}, -1, nullptr);
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ(r2.value().size(), 3u);
  EXPECT_EQ(r2.value()[0].data, "world");
  EXPECT_EQ(r2.value()[1].data, "hello");
  EXPECT_EQ(r2.value()[2].data, "world");

  StoredObject out;
  auto g = store.GetOrSubscribe(Id("a"), &out, nullptr);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g.value());
  EXPECT_EQ(out.data, "hello");
}

TEST(MemoryStoreTest, GetUnknownIsNotFound) {
  MemoryStore store(NoFetch());
  auto r = store.Get({Id("nope")}, 10, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  StoredObject out;
  auto g = store.GetOrSubscribe(Id("nope"), &out, nullptr);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kNotFound);
  auto w = store.Wait({Id("nope")}, 1, 10, true);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);

  // A known pending id next to an unknown one: NotFound, and the pending one
  // is left without a stale waiter (it can still be freed).
  store.CreatePending(Id("p"));
  store.AddLocalRef(Id("p"));
  auto r2 = store.Get({Id("p"), Id("nope")}, 10, nullptr);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), StatusCode::kNotFound);
  store.RemoveLocalRef(Id("p"));
  EXPECT_FALSE(store.Contains(Id("p")));
}

TEST(MemoryStoreTest, CompleteFromAnotherThreadWakesGet) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("t"));
  store.AddLocalRef(Id("t"));
  EXPECT_TRUE(store.Contains(Id("t")));

  std::promise<void> blocked;
  auto blocked_fut = blocked.get_future();
  std::vector<bool> block_events;  // touched by the getter thread only
  auto getter = std::async(std::launch::async, [&] {
    return store.Get({Id("t")}, kLongMs, [&](bool b) {
      block_events.push_back(b);
      if (b) blocked.set_value();
    });
  });
  // Complete only once the getter is really waiting.
  ASSERT_EQ(blocked_fut.wait_for(kLong), std::future_status::ready);
  std::thread completer([&] { EXPECT_TRUE(store.Complete(Id("t"), "done", kAnyFlags)); });
  completer.join();

  ASSERT_EQ(getter.wait_for(kLong), std::future_status::ready) << "Get was not woken";
  auto r = getter.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r.value().size(), 1u);
  EXPECT_EQ(r.value()[0].data, "done");
  EXPECT_EQ(r.value()[0].flags, kAnyFlags);
  EXPECT_EQ(block_events, (std::vector<bool>{true, false}));

  // Exactly once: a second completion is refused and does not overwrite.
  EXPECT_FALSE(store.Complete(Id("t"), "again", kFlagNone));
  auto r2 = store.Get({Id("t")}, 0, nullptr);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2.value()[0].data, "done");
}

TEST(MemoryStoreTest, GetOfSeveralWaitsForAll) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("x"), /*local_refs=*/1);
  store.CreatePending(Id("y"), /*local_refs=*/1);
  store.PutReady(Id("z"), "zz", 0);
  auto getter = std::async(std::launch::async,
                           [&] { return store.Get({Id("x"), Id("y"), Id("z")}, kLongMs, nullptr); });
  EXPECT_TRUE(store.Complete(Id("x"), "xx", 0));
  EXPECT_TRUE(store.Complete(Id("y"), "yy", 0));
  ASSERT_EQ(getter.wait_for(kLong), std::future_status::ready);
  auto r = getter.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r.value().size(), 3u);
  EXPECT_EQ(r.value()[0].data, "xx");
  EXPECT_EQ(r.value()[1].data, "yy");
  EXPECT_EQ(r.value()[2].data, "zz");
}

TEST(MemoryStoreTest, GetEndsAsSoonAsOneObjectFails) {
  // Ray's get raises the first error at once, even while others never finish.
  MemoryStore store(NoFetch());
  store.CreatePending(Id("never"), /*local_refs=*/1);
  store.CreatePending(Id("fails"), /*local_refs=*/1);
  store.PutReady(Id("fine"), "ok", 0, /*local_refs=*/1);
  std::vector<bool> events;  // written by the getter only
  std::atomic<bool> blocked{false};
  auto getter = std::async(std::launch::async, [&] {
    return store.Get({Id("never"), Id("fine"), Id("fails")}, kLongMs, [&](bool b) {
      events.push_back(b);
      if (b) blocked = true;
    });
  });
  auto deadline = std::chrono::steady_clock::now() + kLong;
  while (!blocked && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(blocked);
  EXPECT_TRUE(store.Complete(Id("fails"), "boom", kFlagPickledError));
  ASSERT_EQ(getter.wait_for(kLong), std::future_status::ready) << "Get was not woken by the error";
  auto r = getter.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r.value().size(), 3u);
  // The slot not ready holds the error, so the caller raises it.
  EXPECT_EQ(r.value()[0].data, "boom");
  EXPECT_EQ(r.value()[0].flags, kFlagPickledError);
  EXPECT_EQ(r.value()[1].data, "ok");
  EXPECT_EQ(r.value()[2].data, "boom");
  EXPECT_EQ(events, (std::vector<bool>{true, false}));

  // A failed object already there: no wait at all.
  auto quick = store.Get({Id("never"), Id("fails")}, kLongMs, nullptr);
  ASSERT_TRUE(quick.ok());
  EXPECT_EQ(quick.value()[0].flags, kFlagPickledError);

  // The abandoned wait left nothing behind: the entries still complete and go.
  EXPECT_TRUE(store.Complete(Id("never"), "late", 0));
  for (auto* id : {"never", "fails", "fine"}) store.RemoveLocalRef(Id(id));
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreTest, WaitReportsBlocking) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("p"), /*local_refs=*/1);
  std::vector<bool> events;
  auto r = store.Wait({Id("p")}, 1, 20, true, [&](bool b) { events.push_back(b); });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(events, (std::vector<bool>{true, false}));
  // Nothing to wait for: no blocking reported.
  events.clear();
  EXPECT_TRUE(store.Complete(Id("p"), "v", 0));
  r = store.Wait({Id("p")}, 1, kLongMs, true, [&](bool b) { events.push_back(b); });
  EXPECT_TRUE(events.empty());
  store.RemoveLocalRef(Id("p"));
}

TEST(MemoryStoreTest, GetTimesOut) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("slow"));
  store.AddLocalRef(Id("slow"));
  std::vector<bool> events;
  auto r = store.Get({Id("slow")}, 50, [&](bool b) { events.push_back(b); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTimedOut);
  EXPECT_EQ(events, (std::vector<bool>{true, false}));

  // The timed-out waiter was removed: completing and freeing still work.
  EXPECT_TRUE(store.Complete(Id("slow"), "late", 0));
  auto r2 = store.Get({Id("slow")}, 0, nullptr);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2.value()[0].data, "late");
  store.RemoveLocalRef(Id("slow"));
  EXPECT_FALSE(store.Contains(Id("slow")));
}

TEST(MemoryStoreTest, LocalRefsFreeTheEntry) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("o"), "v", 0);
  store.AddLocalRef(Id("o"));
  store.AddLocalRef(Id("o"));
  store.RemoveLocalRef(Id("o"));
  EXPECT_TRUE(store.Contains(Id("o")));  // one ref left
  store.RemoveLocalRef(Id("o"));
  EXPECT_FALSE(store.Contains(Id("o")));
  EXPECT_EQ(store.Size(), 0u);
  // Removing a ref of an unknown id is harmless.
  store.RemoveLocalRef(Id("o"));
  store.RemoveSubmittedRef(Id("o"));
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreTest, SubmittedRefKeepsEntry) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("arg"));
  store.AddLocalRef(Id("arg"));
  store.AddSubmittedRef(Id("arg"));  // a pending task uses it
  store.RemoveLocalRef(Id("arg"));   // the Python ref is gone
  EXPECT_TRUE(store.Contains(Id("arg")));
  EXPECT_TRUE(store.Complete(Id("arg"), "v", 0));
  store.RemoveSubmittedRef(Id("arg"));  // the task finished
  EXPECT_FALSE(store.Contains(Id("arg")));
}

TEST(MemoryStoreTest, EscapedEntryIsKept) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("e"), "v", 0);
  store.AddLocalRef(Id("e"));
  store.MarkEscaped(Id("e"));
  store.RemoveLocalRef(Id("e"));
  EXPECT_TRUE(store.Contains(Id("e")));
  auto r = store.Get({Id("e")}, 0, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].data, "v");
  // MarkEscaped on an unknown id does not create it.
  store.MarkEscaped(Id("unknown"));
  EXPECT_FALSE(store.Contains(Id("unknown")));
}

TEST(MemoryStoreTest, CompleteOnFreedEntryReturnsFalse) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("f"));
  store.AddLocalRef(Id("f"));
  store.RemoveLocalRef(Id("f"));
  EXPECT_FALSE(store.Contains(Id("f")));
  EXPECT_FALSE(store.Complete(Id("f"), "too late", 0));
  EXPECT_FALSE(store.Contains(Id("f")));  // not resurrected
  EXPECT_FALSE(store.Complete(Id("never-existed"), "x", 0));
}

TEST(MemoryStoreTest, GetOrSubscribeCallbackRunsOnComplete) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("s"));
  store.AddLocalRef(Id("s"));
  std::promise<StoredObject> got;
  auto fut = got.get_future();
  std::atomic<int> calls{0};
  StoredObject out;
  auto r = store.GetOrSubscribe(Id("s"), &out, [&](const StoredObject& o) {
    calls++;
    got.set_value(o);
  });
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
  EXPECT_EQ(calls.load(), 0);

  std::thread t([&] { EXPECT_TRUE(store.Complete(Id("s"), "payload", kFlagPickledError)); });
  ASSERT_EQ(fut.wait_for(kLong), std::future_status::ready);
  t.join();
  StoredObject o = fut.get();
  EXPECT_EQ(o.data, "payload");
  EXPECT_EQ(o.flags, kFlagPickledError);
  EXPECT_EQ(calls.load(), 1);

  // Now ready: answered at once, no callback.
  StoredObject out2;
  auto r2 = store.GetOrSubscribe(Id("s"), &out2, [&](const StoredObject&) { calls++; });
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(r2.value());
  EXPECT_EQ(out2.data, "payload");
  EXPECT_EQ(calls.load(), 1);
}

TEST(MemoryStoreTest, SeveralCallbacksAllRun) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("m"), /*local_refs=*/1);
  int calls = 0;
  StoredObject out;
  for (int i = 0; i < 3; ++i) {
    auto r = store.GetOrSubscribe(Id("m"), &out, [&](const StoredObject& o) {
      EXPECT_EQ(o.data, "v");
      calls++;
    });
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r.value());
  }
  EXPECT_TRUE(store.Complete(Id("m"), "v", 0));
  EXPECT_EQ(calls, 3);
}

TEST(MemoryStoreTest, WaitReturnsReadinessAfterEnoughComplete) {
  MemoryStore store(NoFetch());
  std::vector<std::string> ids = {Id("w0"), Id("w1"), Id("w2"), Id("w3")};
  for (auto& id : ids) {
    store.CreatePending(id);
    store.AddLocalRef(id);
  }
  EXPECT_TRUE(store.Complete(Id("w0"), "ready", 0));

  // Zero timeout: just a snapshot.
  auto snap = store.Wait(ids, 4, 0, true);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap.value(), (std::vector<bool>{true, false, false, false}));

  // Already enough ready: returns at once.
  auto quick = store.Wait(ids, 1, kLongMs, true);
  ASSERT_TRUE(quick.ok());
  EXPECT_EQ(quick.value(), (std::vector<bool>{true, false, false, false}));

  // Needs two more.
  auto waiter = std::async(std::launch::async, [&] { return store.Wait(ids, 3, kLongMs, true); });
  EXPECT_TRUE(store.Complete(Id("w2"), "two", 0));
  EXPECT_TRUE(store.Complete(Id("w3"), "three", 0));
  ASSERT_EQ(waiter.wait_for(kLong), std::future_status::ready) << "Wait was not woken";
  auto r = waiter.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value(), (std::vector<bool>{true, false, true, true}));

  // Not enough before the timeout: partial readiness, no error.
  auto partial = store.Wait(ids, 4, 30, true);
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial.value(), (std::vector<bool>{true, false, true, true}));

  // Waiters are cleaned up: the entries can still be completed and freed.
  EXPECT_TRUE(store.Complete(Id("w1"), "one", 0));
  for (auto& id : ids) store.RemoveLocalRef(id);
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreTest, BorrowedGetFetchesOnceFromOwner) {
  MemoryStore* store_ptr = nullptr;
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> fetches;
  MemoryStore store([&](const std::string& id, const std::string& owner) {
    {
      std::lock_guard<std::mutex> lk(mu);
      fetches.emplace_back(id, owner);
    }
    // The fake owner answers at once, like a GetObject reply would.
    EXPECT_TRUE(store_ptr->Complete(id, "from-owner", kAnyFlags));
  });
  store_ptr = &store;

  store.RegisterBorrowed(Id("b"), "unix:/tmp/owner.sock");
  store.AddLocalRef(Id("b"));  // a Python ObjectRef holds it
  store.RegisterBorrowed(Id("b"), "unix:/tmp/other.sock");  // no-op: known
  EXPECT_EQ(store.OwnerOf(Id("b")), std::optional<std::string>("unix:/tmp/owner.sock"));
  {
    std::lock_guard<std::mutex> lk(mu);
    EXPECT_TRUE(fetches.empty());  // registering alone does not fetch
  }

  auto r = store.Get({Id("b")}, kLongMs, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()[0].data, "from-owner");
  EXPECT_EQ(r.value()[0].flags, kAnyFlags);

  // Ready now: further gets do not fetch again.
  auto r2 = store.Get({Id("b")}, kLongMs, nullptr);
  ASSERT_TRUE(r2.ok());
  StoredObject out;
  auto g = store.GetOrSubscribe(Id("b"), &out, nullptr);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g.value());

  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(fetches.size(), 1u);
  EXPECT_EQ(fetches[0].first, Id("b"));
  EXPECT_EQ(fetches[0].second, "unix:/tmp/owner.sock");
}

TEST(MemoryStoreTest, ConcurrentBorrowedGetsFetchOnce) {
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> fetches;
  std::promise<void> fetched;
  auto fetched_fut = fetched.get_future();
  MemoryStore store([&](const std::string& id, const std::string& owner) {
    std::lock_guard<std::mutex> lk(mu);
    fetches.emplace_back(id, owner);
    if (fetches.size() == 1) fetched.set_value();
  });
  store.RegisterBorrowed(Id("c"), "10.0.0.1:1234");
  store.AddLocalRef(Id("c"));  // a Python ObjectRef holds it

  // Several getters; the fetch is asynchronous (completed by the test below).
  std::vector<std::future<Result<std::vector<StoredObject>>>> getters;
  for (int i = 0; i < 4; ++i) {
    getters.push_back(
        std::async(std::launch::async, [&] { return store.Get({Id("c")}, kLongMs, nullptr); }));
  }
  StoredObject out;
  auto sub = store.GetOrSubscribe(Id("c"), &out, nullptr);
  ASSERT_TRUE(sub.ok());
  ASSERT_EQ(fetched_fut.wait_for(kLong), std::future_status::ready);
  // Getters that registered before this are woken; later ones find it ready.
  EXPECT_TRUE(store.Complete(Id("c"), "value", 0));
  for (auto& g : getters) {
    ASSERT_EQ(g.wait_for(kLong), std::future_status::ready);
    auto r = g.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r.value()[0].data, "value");
  }
  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(fetches.size(), 1u);
  EXPECT_EQ(fetches[0].second, "10.0.0.1:1234");
}

TEST(MemoryStoreTest, BorrowedWaitFetches) {
  MemoryStore* store_ptr = nullptr;
  std::atomic<int> fetches{0};
  MemoryStore store([&](const std::string& id, const std::string&) {
    fetches++;
    EXPECT_TRUE(store_ptr->Complete(id, "v", 0));
  });
  store_ptr = &store;
  store.RegisterBorrowed(Id("bw"), "owner");
  store.AddLocalRef(Id("bw"));  // a Python ObjectRef holds it
  auto r = store.Wait({Id("bw")}, 1, kLongMs, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value(), std::vector<bool>{true});
  EXPECT_EQ(fetches.load(), 1);
}

TEST(MemoryStoreTest, GetOrSubscribeFetchesBorrowed) {
  std::atomic<int> fetches{0};
  MemoryStore store([&](const std::string&, const std::string& owner) {
    EXPECT_EQ(owner, "owner-addr");
    fetches++;
  });
  store.RegisterBorrowed(Id("gs"), "owner-addr");
  store.AddLocalRef(Id("gs"));  // a Python ObjectRef holds it
  StoredObject out;
  std::atomic<int> calls{0};
  auto r = store.GetOrSubscribe(Id("gs"), &out, [&](const StoredObject&) { calls++; });
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
  EXPECT_EQ(fetches.load(), 1);
  // A second subscriber does not fetch again while the first fetch is out.
  auto r2 = store.GetOrSubscribe(Id("gs"), &out, [&](const StoredObject&) { calls++; });
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(fetches.load(), 1);
  EXPECT_TRUE(store.Complete(Id("gs"), "v", 0));
  EXPECT_EQ(calls.load(), 2);
}

// Regressions of bugs these tests found (now fixed).

// Regression (was a bug): MemoryStore::Get marked a borrowed entry `fetching` while scanning ids,
// but returns NotFound for a later unknown id before it calls fetch_. The entry
// stays `fetching` with no fetch in flight, so every later Get/Wait of it
// waits without ever fetching (forever with timeout_ms < 0).
TEST(MemoryStoreTest, NotFoundGetDoesNotStrandBorrowedFetch) {
  MemoryStore* store_ptr = nullptr;
  std::atomic<int> fetches{0};
  MemoryStore store([&](const std::string& id, const std::string&) {
    fetches++;
    store_ptr->Complete(id, "v", 0);
  });
  store_ptr = &store;
  store.RegisterBorrowed(Id("b"), "owner");
  store.AddLocalRef(Id("b"));  // a Python ObjectRef holds it
  auto r = store.Get({Id("b"), Id("unknown")}, 100, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  auto r2 = store.Get({Id("b")}, 200, nullptr);
  EXPECT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(fetches.load(), 1);
}

// Regression (was a bug): when the last reference goes away while a subscriber callback (or a
// Get/Wait waiter) holds the entry, MaybeFreeLocked keeps it; but Complete
// (and the waiter cleanup in Get/Wait on timeout) never calls MaybeFreeLocked
// afterwards, so the entry and its value stay in the store forever.
TEST(MemoryStoreTest, EntryFreedAfterLastCallbackRuns) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("x"));
  store.AddLocalRef(Id("x"));
  StoredObject out;
  auto r = store.GetOrSubscribe(Id("x"), &out, [](const StoredObject&) {});
  ASSERT_TRUE(r.ok());
  store.RemoveLocalRef(Id("x"));
  EXPECT_TRUE(store.Contains(Id("x")));  // held by the callback: fine
  EXPECT_TRUE(store.Complete(Id("x"), "v", 0));
  EXPECT_FALSE(store.Contains(Id("x"))) << "entry leaked after its callback ran";
}

TEST(MemoryStoreTest, EntryFreedAfterTimedOutWaiterLeaves) {
  MemoryStore store(NoFetch());
  store.CreatePending(Id("y"));
  store.AddLocalRef(Id("y"));
  std::promise<void> blocked;
  auto blocked_fut = blocked.get_future();
  auto getter = std::async(std::launch::async, [&] {
    return store.Get({Id("y")}, 300, [&](bool b) {
      if (b) blocked.set_value();
    });
  });
  // The getter's waiter is registered once on_block(true) ran.
  ASSERT_EQ(blocked_fut.wait_for(kLong), std::future_status::ready);
  store.RemoveLocalRef(Id("y"));
  EXPECT_TRUE(store.Contains(Id("y")));  // held by the waiter: fine
  ASSERT_EQ(getter.wait_for(kLong), std::future_status::ready);
  auto r = getter.get();
  EXPECT_EQ(r.status().code(), StatusCode::kTimedOut);
  EXPECT_FALSE(store.Contains(Id("y"))) << "entry leaked after its waiter timed out";
}

// Streaming generator items: whichever side comes first (the item, or the
// reader waiting for it), the entry holds exactly one ref for the reader's
// ObjectRef, and dropping it frees the entry.
TEST(MemoryStoreTest, GeneratorItemArrivingBeforeTheReader) {
  MemoryStore store(NoFetch());
  store.PutOrComplete(Id("g1"), "v1", 0);
  EXPECT_TRUE(store.Contains(Id("g1"))) << "an unread item must be kept";
  store.CreatePendingIfAbsent(Id("g1"));  // the reader: takes the existing ref
  auto r = store.Get({Id("g1")}, 0, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].data, "v1");
  store.RemoveLocalRef(Id("g1"));
  EXPECT_FALSE(store.Contains(Id("g1")));
}

TEST(MemoryStoreTest, GeneratorItemArrivingAfterTheReader) {
  MemoryStore store(NoFetch());
  store.CreatePendingIfAbsent(Id("g2"));
  store.PutOrComplete(Id("g2"), "v2", 0);
  store.PutOrComplete(Id("g2"), "duplicate", 0);  // a retried generator
  auto r = store.Get({Id("g2")}, 0, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].data, "v2");
  store.RemoveLocalRef(Id("g2"));
  EXPECT_FALSE(store.Contains(Id("g2")));
}

// ---- Distributed reference counting: borrowers, contained refs, hooks ------

}  // namespace
}  // namespace fleet
