// Tests of MemoryStore's reference counting: borrowers (owner side),
// registrations with owners (borrower side), containment, escapes, and the
// free and release-borrow hooks.
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

// Records what the free and release-borrow hooks are called with. The hooks
// run under the store's lock, so they only record (never call the store).
struct HookLog {
  std::vector<std::string> freed;
  struct Release {
    std::string id;
    std::string owner;
    int count;
  };
  std::vector<Release> released;

  void Attach(MemoryStore& store) {
    store.SetFreeHook([this](const std::string& id, const std::string&) { freed.push_back(id); });
    store.SetReleaseBorrowHook([this](const std::string& id, const std::string& owner, int count,
                                      bool /*unconfirmed*/) {
      released.push_back({id, owner, count});
    });
  }
};

TEST(MemoryStoreRefCountTest, BorrowerCountsKeepAnOwnedEntry) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("o"), "v", 0, /*local_refs=*/1);
  store.AddBorrower(Id("o"), "w1", 1);
  store.AddBorrower(Id("o"), "w1", 1);  // the same borrower again: count 2
  store.RemoveLocalRef(Id("o"));        // the owner's own ref goes
  EXPECT_TRUE(store.Contains(Id("o"))) << "a borrower still holds it";
  store.AddBorrower(Id("o"), "w1", -1);
  EXPECT_TRUE(store.Contains(Id("o"))) << "w1 registered twice, released once";
  store.AddBorrower(Id("o"), "w1", -1);
  EXPECT_FALSE(store.Contains(Id("o"))) << "the last borrow went: nothing holds it";
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, BorrowerCountReachingZeroFreesAnUnheldOwnedEntry) {
  MemoryStore store(NoFetch());
  // Not held by anything but borrowers (no local refs at all).
  store.PutReady(Id("o"), "v", 0);
  store.AddBorrower(Id("o"), "w1", 1);
  store.AddBorrower(Id("o"), "w2", 3);
  store.AddBorrower(Id("o"), "w1", -1);
  EXPECT_TRUE(store.Contains(Id("o"))) << "w2 still borrows it";
  store.AddBorrower(Id("o"), "w2", -2);
  EXPECT_TRUE(store.Contains(Id("o"))) << "w2 still holds one";
  store.AddBorrower(Id("o"), "w2", -1);  // a batched release of the rest
  EXPECT_FALSE(store.Contains(Id("o")));

  // A batched release (count > 1) in one message.
  store.PutReady(Id("p"), "v", 0);
  store.AddBorrower(Id("p"), "w1", 5);
  store.AddBorrower(Id("p"), "w1", -5);
  EXPECT_FALSE(store.Contains(Id("p")));

  // A pending (not yet completed) owned entry can be borrowed and is freed
  // the same way.
  store.CreatePending(Id("q"), /*local_refs=*/1);
  store.AddBorrower(Id("q"), "w1", 1);
  store.RemoveLocalRef(Id("q"));
  EXPECT_TRUE(store.Contains(Id("q")));
  EXPECT_TRUE(store.Complete(Id("q"), "late", 0));
  EXPECT_TRUE(store.Contains(Id("q")));
  store.AddBorrower(Id("q"), "w1", -1);
  EXPECT_FALSE(store.Contains(Id("q")));
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, BorrowerDoesNotOutliveOtherHolders) {
  // The borrower's count reaching 0 frees nothing while another holder stays.
  MemoryStore store(NoFetch());
  store.PutReady(Id("o"), "v", 0, /*local_refs=*/1);
  store.AddSubmittedRef(Id("o"));
  store.AddBorrower(Id("o"), "w1", 1);
  store.AddBorrower(Id("o"), "w1", -1);
  EXPECT_TRUE(store.Contains(Id("o")));
  store.RemoveLocalRef(Id("o"));
  EXPECT_TRUE(store.Contains(Id("o"))) << "a pending task still holds it";
  store.RemoveSubmittedRef(Id("o"));
  EXPECT_FALSE(store.Contains(Id("o")));
}

TEST(MemoryStoreRefCountTest, AddBorrowerOfUnknownIdIsIgnored) {
  MemoryStore store(NoFetch());
  store.AddBorrower(Id("nope"), "w1", 1);
  store.AddBorrower(Id("nope"), "w1", -1);
  store.AddBorrower(Id("gone"), "w1", -3);
  EXPECT_FALSE(store.Contains(Id("nope")));
  EXPECT_FALSE(store.Contains(Id("gone")));
  EXPECT_EQ(store.Size(), 0u);
  // And it does not resurrect an entry freed meanwhile.
  store.PutReady(Id("f"), "v", 0, 1);
  store.RemoveLocalRef(Id("f"));
  ASSERT_FALSE(store.Contains(Id("f")));
  store.AddBorrower(Id("f"), "w1", 1);
  EXPECT_FALSE(store.Contains(Id("f")));
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, AddBorrowerOfBorrowedEntryIsIgnored) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  store.RegisterBorrowed(Id("b"), "owner");  // not registered with the owner
  store.AddLocalRef(Id("b"));
  // Only owners track borrowers: a borrowed entry ignores this.
  store.AddBorrower(Id("b"), "w1", 1);
  store.RemoveLocalRef(Id("b"));
  EXPECT_FALSE(store.Contains(Id("b"))) << "a borrowed entry must not count borrowers";
  EXPECT_TRUE(log.released.empty()) << "it never registered with its owner";
  EXPECT_TRUE(log.freed.empty());
}

TEST(MemoryStoreRefCountTest, DropBorrowerDropsAllItsBorrows) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("a"), "A", 0);
  store.PutReady(Id("b"), "B", 0);
  store.PutReady(Id("c"), "C", 0, /*local_refs=*/1);
  store.AddBorrower(Id("a"), "w1", 2);
  store.AddBorrower(Id("b"), "w1", 1);
  store.AddBorrower(Id("b"), "w2", 1);
  store.AddBorrower(Id("c"), "w1", 1);
  EXPECT_EQ(store.Size(), 3u);

  store.DropBorrower("unknown-process");  // harmless
  EXPECT_EQ(store.Size(), 3u);

  store.DropBorrower("w1");  // w1 died: all its borrows go, whatever their counts
  EXPECT_FALSE(store.Contains(Id("a"))) << "only w1 held it";
  EXPECT_TRUE(store.Contains(Id("b"))) << "w2 still borrows it";
  EXPECT_TRUE(store.Contains(Id("c"))) << "the owner's own ref still holds it";

  store.DropBorrower("w1");  // again: nothing left of it
  EXPECT_TRUE(store.Contains(Id("b")));

  store.DropBorrower("w2");
  EXPECT_FALSE(store.Contains(Id("b")));
  store.RemoveLocalRef(Id("c"));
  EXPECT_FALSE(store.Contains(Id("c")));
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, DroppedBorrowerCanBorrowAgain) {
  // A borrower address seen again after a drop starts from a clean count.
  MemoryStore store(NoFetch());
  store.PutReady(Id("o"), "v", 0, /*local_refs=*/1);
  store.AddBorrower(Id("o"), "w1", 1);
  store.DropBorrower("w1");
  store.AddBorrower(Id("o"), "w1", 1);
  store.RemoveLocalRef(Id("o"));
  EXPECT_TRUE(store.Contains(Id("o")));
  store.AddBorrower(Id("o"), "w1", -1);
  EXPECT_FALSE(store.Contains(Id("o")));
}

TEST(MemoryStoreRefCountTest, ContainedRefLivesWhileItsOuterObjectLives) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  store.PutReady(Id("inner"), "I", kFlagInStore, /*local_refs=*/1);
  store.PutReady(Id("outer"), "O", 0, /*local_refs=*/1);
  store.SetContains(Id("outer"), {Id("inner")});
  store.RemoveLocalRef(Id("inner"));  // the user dropped their ref to inner
  EXPECT_TRUE(store.Contains(Id("inner"))) << "outer's value holds a ref to it";
  EXPECT_TRUE(log.freed.empty());
  auto r = store.Get({Id("inner")}, 0, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()[0].data, "I");

  store.RemoveLocalRef(Id("outer"));
  EXPECT_FALSE(store.Contains(Id("outer")));
  EXPECT_FALSE(store.Contains(Id("inner"))) << "freed with the object that held it";
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("inner")}) << "outer was not in the store";
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, ContainedRefStillHeldElsewhereOutlivesOuter) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("inner"), "I", 0, /*local_refs=*/1);
  store.PutReady(Id("outer"), "O", 0, /*local_refs=*/1);
  store.SetContains(Id("outer"), {Id("inner")});
  store.RemoveLocalRef(Id("outer"));
  EXPECT_FALSE(store.Contains(Id("outer")));
  EXPECT_TRUE(store.Contains(Id("inner"))) << "the user's ref to inner still holds it";
  store.RemoveLocalRef(Id("inner"));
  EXPECT_FALSE(store.Contains(Id("inner")));
}

TEST(MemoryStoreRefCountTest, ContainsTheSameRefTwiceAndUnknownInners) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("inner"), "I", 0, /*local_refs=*/1);
  store.PutReady(Id("outer"), "O", 0, /*local_refs=*/1);
  // [ref, ref, <a ref this process no longer knows>]
  store.SetContains(Id("outer"), {Id("inner"), Id("inner"), Id("unknown")});
  EXPECT_FALSE(store.Contains(Id("unknown"))) << "SetContains must not create entries";
  store.RemoveLocalRef(Id("inner"));
  EXPECT_TRUE(store.Contains(Id("inner")));
  store.SetContains(Id("gone-outer"), {Id("inner")});  // unknown outer: no hold taken
  store.RemoveLocalRef(Id("outer"));
  EXPECT_FALSE(store.Contains(Id("inner"))) << "both holds are released with outer";
  EXPECT_EQ(store.Size(), 0u);
}

TEST(MemoryStoreRefCountTest, ContainmentChainsAreFreedRecursively) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  // outer -> mid -> inner, each in the shared-memory store; the user keeps
  // only outer.
  store.PutReady(Id("inner"), "I", kFlagInStore, 1);
  store.PutReady(Id("mid"), "M", kFlagInStore, 1);
  store.SetContains(Id("mid"), {Id("inner")});
  store.PutReady(Id("outer"), "O", kFlagInStore, 1);
  store.SetContains(Id("outer"), {Id("mid")});
  store.RemoveLocalRef(Id("inner"));
  store.RemoveLocalRef(Id("mid"));
  EXPECT_EQ(store.Size(), 3u) << "all held through outer";
  EXPECT_TRUE(log.freed.empty());

  store.RemoveLocalRef(Id("outer"));
  EXPECT_EQ(store.Size(), 0u) << "the whole chain goes with outer";
  EXPECT_EQ(log.freed, (std::vector<std::string>{Id("outer"), Id("mid"), Id("inner")}));

  // A chain whose middle link is still held stops there.
  log.freed.clear();
  store.PutReady(Id("i2"), "I", kFlagInStore, 1);
  store.PutReady(Id("m2"), "M", kFlagInStore, 1);
  store.SetContains(Id("m2"), {Id("i2")});
  store.PutReady(Id("o2"), "O", kFlagInStore, 1);
  store.SetContains(Id("o2"), {Id("m2")});
  store.RemoveLocalRef(Id("i2"));
  store.RemoveLocalRef(Id("o2"));
  EXPECT_FALSE(store.Contains(Id("o2")));
  EXPECT_TRUE(store.Contains(Id("m2"))) << "the user still holds mid";
  EXPECT_TRUE(store.Contains(Id("i2"))) << "held by mid";
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("o2")});
  store.RemoveLocalRef(Id("m2"));
  EXPECT_EQ(store.Size(), 0u);
  EXPECT_EQ(log.freed, (std::vector<std::string>{Id("o2"), Id("m2"), Id("i2")}));
}

TEST(MemoryStoreRefCountTest, BorrowedContainedRefIsReleasedWithItsOuter) {
  // A borrower put()s a value holding a borrowed ref: the borrow (and its
  // registration with the owner) lasts as long as that value.
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  ASSERT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", /*register_with_owner=*/true),
            MemoryStore::Borrow::kRegister);
  store.AddLocalRef(Id("b"));
  store.PutReady(Id("outer"), "O", 0, /*local_refs=*/1);
  store.SetContains(Id("outer"), {Id("b")});
  store.RemoveLocalRef(Id("b"));
  EXPECT_TRUE(store.Contains(Id("b")));
  EXPECT_TRUE(log.released.empty()) << "still held by outer: no release yet";
  store.RemoveLocalRef(Id("outer"));
  EXPECT_FALSE(store.Contains(Id("b")));
  ASSERT_EQ(log.released.size(), 1u);
  EXPECT_EQ(log.released[0].id, Id("b"));
  EXPECT_EQ(log.released[0].owner, "owner:1");
  EXPECT_EQ(log.released[0].count, 1);
  EXPECT_TRUE(log.freed.empty()) << "nothing of ours in the shared-memory store";
}

TEST(MemoryStoreRefCountTest, RegisterBorrowedWithOwnerReturnsTrueOnce) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  EXPECT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true), MemoryStore::Borrow::kRegister)
      << "new: tell the owner";
  store.AddLocalRef(Id("b"));
  EXPECT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true),
            MemoryStore::Borrow::kAwaitRegistration)
      << "known, but its registration is not answered yet: wait for it";
  store.ConfirmRegistered({Id("b")});
  EXPECT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true), MemoryStore::Borrow::kKnown)
      << "known: registered already";
  store.AddLocalRef(Id("b"));  // a second ObjectRef to the same object here
  EXPECT_EQ(store.RegisterBorrowed(Id("b"), "owner:2", true), MemoryStore::Borrow::kKnown);
  EXPECT_EQ(store.OwnerOf(Id("b")), std::optional<std::string>("owner:1"));

  // An owned entry is never registered as borrowed.
  store.PutReady(Id("mine"), "v", 0, 1);
  EXPECT_EQ(store.RegisterBorrowed(Id("mine"), "owner:1", true), MemoryStore::Borrow::kKnown);
  EXPECT_FALSE(store.OwnerOf(Id("mine")).has_value());

  // Without register_with_owner: never true.
  EXPECT_EQ(store.RegisterBorrowed(Id("quiet"), "owner:1", false), MemoryStore::Borrow::kKnown);
  EXPECT_TRUE(store.Contains(Id("quiet")));

  store.RemoveLocalRef(Id("b"));
  EXPECT_TRUE(store.Contains(Id("b")));
  EXPECT_TRUE(log.released.empty()) << "one ObjectRef still holds it";
  store.RemoveLocalRef(Id("b"));
  EXPECT_FALSE(store.Contains(Id("b")));
  ASSERT_EQ(log.released.size(), 1u);
  EXPECT_EQ(log.released[0].id, Id("b"));
  EXPECT_EQ(log.released[0].owner, "owner:1");
  EXPECT_EQ(log.released[0].count, 1) << "registered once, released once";
  EXPECT_TRUE(log.freed.empty()) << "a borrowed entry never frees the owner's store copy";

  // The unregistered borrowed entry goes without a release.
  store.AddLocalRef(Id("quiet"));
  store.RemoveLocalRef(Id("quiet"));
  EXPECT_FALSE(store.Contains(Id("quiet")));
  EXPECT_EQ(log.released.size(), 1u);

  // Once gone, deserializing it again registers anew.
  EXPECT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true), MemoryStore::Borrow::kRegister);
  store.AddLocalRef(Id("b"));
  store.RemoveLocalRef(Id("b"));
  ASSERT_EQ(log.released.size(), 2u);
  EXPECT_EQ(log.released[1].count, 1);
}

TEST(MemoryStoreRefCountTest, BorrowedEntryHeldBySubmittedTaskReleasesAfterIt) {
  // A borrower passes the ref on (nested in a task's arguments): its
  // registration lasts until that task finishes.
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  ASSERT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true), MemoryStore::Borrow::kRegister);
  store.AddLocalRef(Id("b"));
  store.AddSubmittedRef(Id("b"));
  store.RemoveLocalRef(Id("b"));
  EXPECT_TRUE(log.released.empty());
  store.RemoveSubmittedRef(Id("b"));
  ASSERT_EQ(log.released.size(), 1u);
  EXPECT_EQ(log.released[0].owner, "owner:1");
}

TEST(MemoryStoreRefCountTest, EscapedBorrowedEntryIsNeverReleased) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  ASSERT_EQ(store.RegisterBorrowed(Id("b"), "owner:1", true), MemoryStore::Borrow::kRegister);
  store.AddLocalRef(Id("b"));
  store.MarkEscaped(Id("b"));
  store.RemoveLocalRef(Id("b"));
  EXPECT_TRUE(store.Contains(Id("b")));
  EXPECT_TRUE(log.released.empty()) << "an escaped ref keeps its borrow";
}

TEST(MemoryStoreRefCountTest, FreeHookFiresForOwnedStoreObjectsOnly) {
  MemoryStore* store_ptr = nullptr;
  MemoryStore store([&](const std::string& id, const std::string&) {
    store_ptr->Complete(id, "descriptor", kFlagInStore, /*borrowed=*/true);
  });
  store_ptr = &store;
  HookLog log;
  log.Attach(store);

  // Owned, in the store: freed through the hook, exactly once.
  store.PutReady(Id("big"), "descriptor", kFlagInStore, 1);
  store.AddLocalRef(Id("big"));
  store.RemoveLocalRef(Id("big"));
  EXPECT_TRUE(log.freed.empty());
  store.RemoveLocalRef(Id("big"));
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("big")});
  store.RemoveLocalRef(Id("big"));  // unknown now: nothing more
  EXPECT_EQ(log.freed.size(), 1u);

  // Owned, inline (no kFlagInStore): nothing to free in the store.
  store.PutReady(Id("small"), "v", kFlagNone, 1);
  store.RemoveLocalRef(Id("small"));
  EXPECT_FALSE(store.Contains(Id("small")));
  EXPECT_EQ(log.freed.size(), 1u);

  // An error value that is not in the store.
  store.PutReady(Id("err"), "boom", kFlagPickledError, 1);
  store.RemoveLocalRef(Id("err"));
  EXPECT_EQ(log.freed.size(), 1u);

  // Owned but still pending when let go: there is no value to free yet.
  store.CreatePending(Id("pending"), 1);
  store.RemoveLocalRef(Id("pending"));
  EXPECT_FALSE(store.Contains(Id("pending")));
  EXPECT_EQ(log.freed.size(), 1u);

  // Borrowed, fetched (its value is the owner's store object): never freed
  // by a borrower.
  store.RegisterBorrowed(Id("lent"), "owner:1", true);
  store.AddLocalRef(Id("lent"));
  auto r = store.Get({Id("lent")}, kLongMs, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()[0].flags, kFlagInStore);
  store.RemoveLocalRef(Id("lent"));
  EXPECT_FALSE(store.Contains(Id("lent")));
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("big")}) << "borrowed: not ours to free";
  ASSERT_EQ(log.released.size(), 1u);
  EXPECT_EQ(log.released[0].id, Id("lent"));
  EXPECT_EQ(log.released[0].owner, "owner:1");
  EXPECT_EQ(log.released[0].count, 1);
}

TEST(MemoryStoreRefCountTest, FreeHookFiresWhenTheLastBorrowerLetsGo) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  store.PutReady(Id("big"), "descriptor", kFlagInStore, 1);
  store.AddBorrower(Id("big"), "w1", 1);
  store.RemoveLocalRef(Id("big"));
  EXPECT_TRUE(log.freed.empty()) << "w1 borrows it";
  store.AddBorrower(Id("big"), "w1", -1);
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("big")});

  store.PutReady(Id("big2"), "descriptor", kFlagInStore, 1);
  store.AddBorrower(Id("big2"), "w2", 1);
  store.RemoveLocalRef(Id("big2"));
  store.DropBorrower("w2");
  EXPECT_EQ(log.freed, (std::vector<std::string>{Id("big"), Id("big2")}));
}

TEST(MemoryStoreRefCountTest, LateCompleteOfAFreedStoreObjectFreesIt) {
  MemoryStore store(NoFetch());
  HookLog log;
  log.Attach(store);
  // A task's return: the caller let go before the value arrived.
  store.CreatePending(Id("ret"), 1);
  store.RemoveLocalRef(Id("ret"));
  ASSERT_FALSE(store.Contains(Id("ret")));
  EXPECT_FALSE(store.Complete(Id("ret"), "descriptor", kFlagInStore));
  EXPECT_EQ(log.freed, std::vector<std::string>{Id("ret")})
      << "an owned value nobody will read must be freed in the store";
  EXPECT_FALSE(store.Contains(Id("ret"))) << "not resurrected";

  // The same for an id this process never saw (it was freed long ago).
  EXPECT_FALSE(store.Complete(Id("never"), "descriptor", kFlagInStore));
  EXPECT_EQ(log.freed, (std::vector<std::string>{Id("ret"), Id("never")}));

  // A borrowed fetch's reply arriving late: the owner's object, not ours.
  EXPECT_FALSE(store.Complete(Id("lent"), "descriptor", kFlagInStore, /*borrowed=*/true));
  EXPECT_EQ(log.freed.size(), 2u);

  // An inline value arriving late: nothing in the store to free.
  EXPECT_FALSE(store.Complete(Id("inline"), "v", kFlagNone));
  EXPECT_EQ(log.freed.size(), 2u);

  // A duplicate completion of a live, ready entry frees nothing.
  store.PutReady(Id("live"), "descriptor", kFlagInStore, 1);
  EXPECT_FALSE(store.Complete(Id("live"), "descriptor", kFlagInStore));
  EXPECT_EQ(log.freed.size(), 2u);
  EXPECT_TRUE(store.Contains(Id("live")));
  EXPECT_TRUE(log.released.empty());
}

TEST(MemoryStoreRefCountTest, ActorHandleHookFiresWhenNoHandleIsLeftAnywhere) {
  MemoryStore store(NoFetch());
  std::vector<std::string> released;
  store.SetActorHandleHook([&](const std::string& actor_id) { released.push_back(actor_id); });
  // The creator's handle (one local ref), a borrower, a pending task holding it.
  store.PutReady(Id("h"), "actor-1", kFlagActorHandle, 1);
  store.AddBorrower(Id("h"), "peer:1", 1);
  store.AddSubmittedRef(Id("h"));
  store.RemoveLocalRef(Id("h"));
  store.RemoveSubmittedRef(Id("h"));
  EXPECT_TRUE(released.empty()) << "a borrower still holds a handle";
  store.AddBorrower(Id("h"), "peer:1", -1);
  EXPECT_EQ(released, std::vector<std::string>{"actor-1"});
  EXPECT_FALSE(store.Contains(Id("h")));

  // AddLocalRefIfOwned: only an owned entry still held; never a borrowed one.
  store.PutReady(Id("h2"), "actor-2", kFlagActorHandle, 1);
  EXPECT_TRUE(store.AddLocalRefIfOwned(Id("h2")));
  store.RemoveLocalRef(Id("h2"));
  EXPECT_EQ(released.size(), 1u);
  store.RemoveLocalRef(Id("h2"));
  EXPECT_EQ(released.back(), "actor-2");
  EXPECT_FALSE(store.AddLocalRefIfOwned(Id("h2"))) << "let go already";
  store.RegisterBorrowed(Id("b"), "owner:1", true);
  EXPECT_FALSE(store.AddLocalRefIfOwned(Id("b")));

  // A borrowed handle entry going away releases its borrow, not the actor.
  store.AddLocalRef(Id("b"));
  store.RemoveLocalRef(Id("b"));
  EXPECT_EQ(released.size(), 2u);
}

}  // namespace
}  // namespace fleet
