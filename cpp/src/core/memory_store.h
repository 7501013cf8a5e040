// MemoryStore: the in-process store of small objects and the reference counts
// of everything this process knows about (owned or borrowed).
//
// Invariants: an entry exists while a Python ObjectRef, a pending task (as
// an argument, or nested inside one), an object containing it, a borrower
// (another process that registered it holds the ref), or an escape (the ref
// was serialized where nobody tracks it) holds it; an owned entry becomes
// ready exactly once. A borrowed entry counts the registrations it made with
// the owner and hands them back when it goes (see ReleaseBorrowFn). Borrowed entries record their owner's
// address and are fetched on demand. Thread-safe (one mutex, mu_); completion
// callbacks and fetches run outside the lock on the completing thread. Lock
// order: callers' locks (PeerConnections) before mu_; the free and release
// hooks run under mu_, so their components' locks (ObjectLocator,
// ReferenceCounter) come after it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace fleet {

struct StoredObject {
  std::string data;
  uint32_t flags = 0;
};

class MemoryStore {
 public:
  using ReadyCallback = std::function<void(const StoredObject&)>;
  // Called (outside the lock) when a borrowed object that nobody has fetched
  // yet is waited on: fetch it from `owner_address` and Complete() it.
  using FetchFn = std::function<void(const std::string& id, const std::string& owner_address)>;

  // Called (under the lock: it must only queue a message) when an owned
  // object whose value lives in the shared-memory store is let go.
  // `descriptor`: the stored value (size + the node holding the object).
  using FreeFn = std::function<void(const std::string& id, const std::string& descriptor)>;

  // Called (under the lock: it must only queue a message) when a borrowed
  // entry that registered `count` times with its owner goes. `unconfirmed`:
  // its registration may not have been sent yet (the value holding the ref
  // died while it was being unpickled), so the release must wait for it.
  using ReleaseBorrowFn = std::function<void(const std::string& id, const std::string& owner,
                                             int count, bool unconfirmed)>;

  explicit MemoryStore(FetchFn fetch) : fetch_(std::move(fetch)) {}
  // Set once, before the store is shared between threads.
  void SetFreeHook(FreeFn free_hook) { free_hook_ = std::move(free_hook); }
  void SetReleaseBorrowHook(ReleaseBorrowFn hook) { release_borrow_ = std::move(hook); }

  // An owned object whose value comes later (a task return). `local_refs`
  // are held from the start, so the entry cannot be freed before the
  // caller's ObjectRef takes them over.
  void CreatePending(const std::string& id, int local_refs = 0) EXCLUDES(mu_);
  // An owned object with its value now (a put). `id` must be fresh.
  void PutReady(const std::string& id, std::string data, uint32_t flags, int local_refs = 0)
      EXCLUDES(mu_);
  // Sets the value of a pending (or borrowed) entry and wakes its waiters.
  // Dropped if the entry was freed meanwhile (then a value of ours in the
  // shared-memory store is freed too, unless `borrowed`). Returns true if stored.
  bool Complete(const std::string& id, std::string data, uint32_t flags, bool borrowed = false)
      EXCLUDES(mu_);
  // A streaming generator's item: creates the (owned) entry ready, holding
  // one local ref for the reader's ObjectRef to take over, or completes the
  // entry a reader already waits on (which holds that ref). Duplicates (a
  // retried generator) are dropped.
  void PutOrComplete(const std::string& id, std::string data, uint32_t flags) EXCLUDES(mu_);
  // The reader's side: a pending entry holding one local ref, unless the
  // entry exists already (then its ref is the one to take over).
  void CreatePendingIfAbsent(const std::string& id) EXCLUDES(mu_);
  // The reader gives up waiting: drops its ref if the entry is still pending
  // and returns true; false if the item arrived meanwhile (the ref stays,
  // for the reader to take).
  bool DropPendingRef(const std::string& id) EXCLUDES(mu_);
  // The generator of task `task_id` was dropped by its reader: frees its
  // unread items from `from_index` on, and drops those that arrive later.
  void ReleaseGenerator(const std::string& task_id, uint32_t from_index) EXCLUDES(mu_);
  // Records a borrowed ref; no-op if known. With `register_with_owner`, a
  // new entry counts one registration, which the caller must send to the
  // owner (kRegister); a known entry whose registration is not confirmed
  // yet (another thread is sending it) gives kAwaitRegistration: the caller
  // must wait for the flush in flight before relying on it.
  enum class Borrow { kKnown, kRegister, kAwaitRegistration };
  Borrow RegisterBorrowed(const std::string& id, const std::string& owner_address,
                          bool register_with_owner = false) EXCLUDES(mu_);
  // The owner answered the registrations of `ids`.
  void ConfirmRegistered(const std::vector<std::string>& ids) EXCLUDES(mu_);
  // Owner side: `borrower` holds (count > 0) or let go of (count < 0) refs.
  // Unknown ids, and releases by a borrower not registered, are skipped.
  void AddBorrower(const std::string& id, const std::string& borrower, int count) EXCLUDES(mu_);
  // Owner side: the process at `borrower` is gone: drop all its borrows.
  void DropBorrower(const std::string& borrower) EXCLUDES(mu_);
  // `outer` (an object of ours) contains refs `inner`: each is kept while
  // `outer` exists.
  void SetContains(const std::string& outer, const std::vector<std::string>& inner) EXCLUDES(mu_);
  // A return value `outer` arrived holding refs `nested` (id, owner), for
  // each of which the executor registered this process as a borrower: the
  // registrations become holds of `outer` (or are handed back at once if
  // `outer` is gone). `self` is this process's address.
  void AdoptNested(const std::string& outer,
                   const std::vector<std::pair<std::string, std::string>>& nested,
                   const std::string& self) EXCLUDES(mu_);

  // No-op for an unknown id (a ref whose object this process never had).
  void AddLocalRef(const std::string& id) EXCLUDES(mu_);
  void RemoveLocalRef(const std::string& id) EXCLUDES(mu_);
  void AddSubmittedRef(const std::string& id) EXCLUDES(mu_);
  void RemoveSubmittedRef(const std::string& id) EXCLUDES(mu_);
  void MarkEscaped(const std::string& id) EXCLUDES(mu_);

  // If ready, copies the value into *out and returns true. Otherwise, if
  // `on_ready` is given, it runs once the value arrives (possibly at once on
  // this thread if it raced). Returns NotFound status if the id is unknown.
  Result<bool> GetOrSubscribe(const std::string& id, StoredObject* out, ReadyCallback on_ready)
      EXCLUDES(mu_);

  // Blocks until all are ready, one of them completes as an error, or the
  // timeout passes (timeout_ms < 0: forever). After an error the objects not
  // ready yet are returned as a copy of that error, so the caller raises it.
  // `on_block(true)` runs once before the first real wait, `on_block(false)` after.
  Result<std::vector<StoredObject>> Get(const std::vector<std::string>& ids, int64_t timeout_ms,
                                        const std::function<void(bool)>& on_block) EXCLUDES(mu_);
  // Returns readiness per id once num_returns are ready (a failed object
  // counts as ready) or on timeout. `on_block` as for Get.
  Result<std::vector<bool>> Wait(const std::vector<std::string>& ids, int num_returns,
                                 int64_t timeout_ms, bool fetch,
                                 const std::function<void(bool)>& on_block = {}) EXCLUDES(mu_);

  bool Contains(const std::string& id) const EXCLUDES(mu_);
  std::optional<std::string> OwnerOf(const std::string& id) const EXCLUDES(mu_);
  size_t Size() const EXCLUDES(mu_);
  // Shrinks the hash table after a burst of objects was freed.
  void Compact() EXCLUDES(mu_);

 private:
  struct Waiter {
    CondVar cv;
    // Both guarded by mu_ (the analysis cannot name it from here).
    int remaining = 0;
    // Get only: wake as soon as one awaited object completes as an error
    // (Ray's get raises it at once, whatever the others are doing).
    bool abort_on_error = false;
    bool failed = false;
  };
  struct Entry {
    bool ready = false;
    bool owned = true;
    bool escaped = false;
    bool fetching = false;
    int local_refs = 0;
    int submitted_refs = 0;
    int contained = 0;       // objects of ours whose value holds this ref
    int registered = 0;      // borrowed: registrations made with the owner
    bool unconfirmed = false;  // borrowed: its registration is not answered yet
    std::vector<std::pair<std::string, int>> borrowers;  // owned: address, count
    std::vector<std::string> contains;                   // refs inside this value
    StoredObject value;
    std::string owner_address;
    std::vector<std::shared_ptr<Waiter>> waiters;
    std::vector<ReadyCallback> callbacks;
  };
  // Frees the entry if nothing holds it (and what it contained, in turn).
  void MaybeFreeLocked(std::unordered_map<std::string, Entry>::iterator it) REQUIRES(mu_);
  void RemoveWaiterLocked(const std::string& id, const std::shared_ptr<Waiter>& w) REQUIRES(mu_);
  void FinishCompleteLocked(std::unordered_map<std::string, Entry>::iterator it, std::string data,
                            uint32_t flags, std::vector<ReadyCallback>* callbacks,
                            StoredObject* copy) REQUIRES(mu_);

  // Constant once the store is shared (the hooks are set before).
  FetchFn fetch_;
  FreeFn free_hook_;
  ReleaseBorrowFn release_borrow_;

  mutable Mutex mu_;
  std::unordered_map<std::string, bool> released_streams_ GUARDED_BY(mu_);  // task ids
  std::vector<std::string> released_order_ GUARDED_BY(mu_);                 // oldest first
  // The entries, and through them their counts, waiters and callbacks.
  std::unordered_map<std::string, Entry> objects_ GUARDED_BY(mu_);
};

}  // namespace fleet
