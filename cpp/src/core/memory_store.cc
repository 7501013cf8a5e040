// MemoryStore implementation; see memory_store.h.
#include "core/memory_store.h"

#include "core/object_flags.h"

#include <algorithm>

#include "common/ids.h"

namespace fleet {

void MemoryStore::CreatePending(const std::string& id, int local_refs) {
  MutexLock lk(&mu_);
  objects_[id].local_refs += local_refs;
}

void MemoryStore::PutReady(const std::string& id, std::string data, uint32_t flags,
                           int local_refs) {
  MutexLock lk(&mu_);
  Entry& e = objects_[id];
  e.local_refs += local_refs;
  e.ready = true;
  e.value.data = std::move(data);
  e.value.flags = flags;
}

bool MemoryStore::Complete(const std::string& id, std::string data, uint32_t flags,
                           bool borrowed) {
  std::vector<ReadyCallback> callbacks;
  StoredObject copy;
  {
    MutexLock lk(&mu_);
    auto it = objects_.find(id);
    if (it == objects_.end() || it->second.ready) {
      if (it == objects_.end() && !borrowed && (flags & kFlagInStore) && free_hook_) free_hook_(id, data);
      return false;
    }
    FinishCompleteLocked(it, std::move(data), flags, &callbacks, &copy);
  }
  for (auto& cb : callbacks) cb(copy);
  return true;
}

void MemoryStore::PutOrComplete(const std::string& id, std::string data, uint32_t flags) {
  std::vector<ReadyCallback> callbacks;
  StoredObject copy;
  {
    MutexLock lk(&mu_);
    if (!released_streams_.empty() && released_streams_.count(id.substr(0, kUniqueIdSize))) {
      if ((flags & kFlagInStore) && free_hook_) free_hook_(id, data);
      return;  // its generator was dropped: nobody will read it
    }
    auto [it, inserted] = objects_.try_emplace(id);
    if (it->second.ready) return;  // a duplicate: the store copy is the same object
    if (inserted) it->second.local_refs = 1;
    FinishCompleteLocked(it, std::move(data), flags, &callbacks, &copy);
  }
  for (auto& cb : callbacks) cb(copy);
}

void MemoryStore::CreatePendingIfAbsent(const std::string& id) {
  MutexLock lk(&mu_);
  auto [it, inserted] = objects_.try_emplace(id);
  if (inserted) it->second.local_refs = 1;
}

void MemoryStore::ReleaseGenerator(const std::string& task_id, uint32_t from_index) {
  MutexLock lk(&mu_);
  if (!released_streams_.count(task_id)) {
    released_streams_[task_id] = true;
    released_order_.push_back(task_id);
    if (released_order_.size() > 4096) {  // bounded: the oldest streams have ended long ago
      released_streams_.erase(released_order_.front());
      released_order_.erase(released_order_.begin());
    }
  }
  for (uint32_t i = from_index;; ++i) {
    auto it = objects_.find(GeneratorItemId(task_id, i));
    if (it == objects_.end()) break;
    it->second.local_refs--;
    MaybeFreeLocked(it);
  }
}

bool MemoryStore::DropPendingRef(const std::string& id) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it == objects_.end()) return true;
  if (it->second.ready) return false;
  it->second.local_refs--;
  MaybeFreeLocked(it);
  return true;
}

void MemoryStore::FinishCompleteLocked(std::unordered_map<std::string, Entry>::iterator it,
                                       std::string data, uint32_t flags,
                                       std::vector<ReadyCallback>* callbacks, StoredObject* copy) {
  {
    Entry& e = it->second;
    e.ready = true;
    e.fetching = false;
    e.value.data = std::move(data);
    e.value.flags = flags;
    const bool error = (flags & kErrorFlags) != 0;
    for (auto& w : e.waiters) {
      if (--w->remaining == 0) {
        w->cv.NotifyOne();
      } else if (error && w->abort_on_error && !w->failed) {
        w->failed = true;
        w->cv.NotifyOne();
      }
    }
    e.waiters.clear();
    callbacks->swap(e.callbacks);
    if (!callbacks->empty()) *copy = e.value;
  }
  // Held only by the waiters/callbacks that just finished? Then it goes now.
  MaybeFreeLocked(it);
}

MemoryStore::Borrow MemoryStore::RegisterBorrowed(const std::string& id,
                                                  const std::string& owner_address,
                                                  bool register_with_owner) {
  MutexLock lk(&mu_);
  auto [it, added] = objects_.try_emplace(id);
  if (added) {
    it->second.owned = false;
    it->second.owner_address = owner_address;
    if (register_with_owner) {
      it->second.registered = 1;
      it->second.unconfirmed = true;
      return Borrow::kRegister;
    }
  }
  return it->second.unconfirmed ? Borrow::kAwaitRegistration : Borrow::kKnown;
}

void MemoryStore::ConfirmRegistered(const std::vector<std::string>& ids) {
  MutexLock lk(&mu_);
  for (const auto& id : ids) {
    auto it = objects_.find(id);
    if (it != objects_.end()) it->second.unconfirmed = false;
  }
}

void MemoryStore::AddBorrower(const std::string& id, const std::string& borrower, int count) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it == objects_.end() || !it->second.owned) return;
  auto& list = it->second.borrowers;
  auto b = std::find_if(list.begin(), list.end(), [&](const auto& p) { return p.first == borrower; });
  if (b == list.end()) {
    // A release always follows its registration; one for an unknown borrower
    // had a registration that never arrived (or was dropped with its conn).
    if (count > 0) list.emplace_back(borrower, count);
  } else if ((b->second += count) <= 0) {
    list.erase(b);
  }
  MaybeFreeLocked(it);
}

void MemoryStore::DropBorrower(const std::string& borrower) {
  MutexLock lk(&mu_);
  std::vector<std::string> touched;
  for (auto& [id, e] : objects_) {
    if (std::erase_if(e.borrowers, [&](const auto& p) { return p.first == borrower; }) > 0) {
      touched.push_back(id);
    }
  }
  for (const auto& id : touched) {
    auto it = objects_.find(id);
    if (it != objects_.end()) MaybeFreeLocked(it);
  }
}

void MemoryStore::AdoptNested(const std::string& outer,
                              const std::vector<std::pair<std::string, std::string>>& nested,
                              const std::string& self) {
  MutexLock lk(&mu_);
  auto out = objects_.find(outer);
  bool keep = out != objects_.end() && out->second.ready;
  for (const auto& [id, owner] : nested) {
    std::unordered_map<std::string, Entry>::iterator it;
    if (owner == self) {  // ours: the registration is in our own borrower list
      it = objects_.find(id);
      if (it == objects_.end()) continue;
      auto& list = it->second.borrowers;
      auto b = std::find_if(list.begin(), list.end(), [&](const auto& p) { return p.first == self; });
      if (b != list.end() && --b->second == 0) list.erase(b);
    } else {
      bool added;
      std::tie(it, added) = objects_.try_emplace(id);
      if (added) {
        it->second.owned = false;
        it->second.owner_address = owner;
      }
      it->second.registered++;
    }
    if (keep) {
      it->second.contained++;
      out = objects_.find(outer);  // try_emplace may rehash
      out->second.contains.push_back(id);
    }
    MaybeFreeLocked(it);
  }
}

void MemoryStore::SetContains(const std::string& outer, const std::vector<std::string>& inner) {
  if (inner.empty()) return;
  MutexLock lk(&mu_);
  auto it = objects_.find(outer);
  if (it == objects_.end()) return;
  for (const auto& id : inner) {
    auto in = objects_.find(id);
    if (in == objects_.end()) continue;
    in->second.contained++;
    it->second.contains.push_back(id);
  }
}

void MemoryStore::AddLocalRef(const std::string& id) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it != objects_.end()) it->second.local_refs++;
}

void MemoryStore::RemoveLocalRef(const std::string& id) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.local_refs--;
  MaybeFreeLocked(it);
}

void MemoryStore::AddSubmittedRef(const std::string& id) {
  MutexLock lk(&mu_);
  objects_[id].submitted_refs++;
}

void MemoryStore::RemoveSubmittedRef(const std::string& id) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.submitted_refs--;
  MaybeFreeLocked(it);
}

void MemoryStore::MarkEscaped(const std::string& id) {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it != objects_.end()) it->second.escaped = true;
}

void MemoryStore::MaybeFreeLocked(std::unordered_map<std::string, Entry>::iterator it) {
  // A loop, not recursion: a chain of 100k nested puts must not overflow
  // the stack when its head goes.
  std::vector<std::string> released;  // refs held by entries freed here
  while (true) {
    const Entry& e = it->second;
    if (e.local_refs <= 0 && e.submitted_refs <= 0 && !e.escaped && e.waiters.empty() &&
        e.callbacks.empty() && e.contained <= 0 && e.borrowers.empty()) {
      if (e.owned && e.ready && (e.value.flags & kFlagInStore) && free_hook_) free_hook_(it->first, e.value.data);
      if (!e.owned && e.registered > 0 && release_borrow_) {
        release_borrow_(it->first, e.owner_address, e.registered, e.unconfirmed);
      }
      for (auto& id : it->second.contains) released.push_back(std::move(id));
      objects_.erase(it);
    }
    // What the freed entries contained may go now.
    do {
      if (released.empty()) return;
      it = objects_.find(released.back());
      released.pop_back();
    } while (it == objects_.end());
    it->second.contained--;
  }
}

Result<bool> MemoryStore::GetOrSubscribe(const std::string& id, StoredObject* out,
                                         ReadyCallback on_ready) {
  std::string fetch_owner;
  {
    MutexLock lk(&mu_);
    auto it = objects_.find(id);
    if (it == objects_.end()) return Status::NotFound("object " + ToHex(id) + " is unknown here");
    Entry& e = it->second;
    if (e.ready) {
      *out = e.value;
      return true;
    }
    if (on_ready) e.callbacks.push_back(std::move(on_ready));
    if (!e.owned && !e.fetching) {
      e.fetching = true;
      fetch_owner = e.owner_address;
    }
  }
  if (!fetch_owner.empty()) fetch_(id, fetch_owner);
  return false;
}

void MemoryStore::RemoveWaiterLocked(const std::string& id, const std::shared_ptr<Waiter>& w) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  auto& ws = it->second.waiters;
  ws.erase(std::remove(ws.begin(), ws.end(), w), ws.end());
  MaybeFreeLocked(it);
}

Result<std::vector<StoredObject>> MemoryStore::Get(const std::vector<std::string>& ids,
                                                   int64_t timeout_ms,
                                                   const std::function<void(bool)>& on_block) {
  auto waiter = std::make_shared<Waiter>();
  waiter->abort_on_error = true;
  std::vector<std::pair<std::string, std::string>> to_fetch;
  MutexLock lk(&mu_);
  const StoredObject* first_error = nullptr;
  for (const auto& id : ids) {  // validate first: an error must not leave half-made waits
    if (objects_.find(id) == objects_.end()) {
      return Status::NotFound("object " + ToHex(id) +
                              " is unknown to this process (its ObjectRef was freed or never "
                              "existed here)");
    }
  }
  for (const auto& id : ids) {  // one that failed already: no need to wait
    const Entry& e = objects_.find(id)->second;
    if (e.ready && (e.value.flags & kErrorFlags)) {
      first_error = &e.value;
      break;
    }
  }
  for (const auto& id : ids) {
    if (first_error) break;
    Entry& e = objects_.find(id)->second;
    if (!e.ready) {
      // A duplicate id in `ids` registers twice and is counted twice: fine.
      e.waiters.push_back(waiter);
      waiter->remaining++;
      if (!e.owned && !e.fetching) {
        e.fetching = true;
        to_fetch.emplace_back(id, e.owner_address);
      }
    }
  }
  if (waiter->remaining > 0) {
    lk.Unlock();
    for (auto& [id, owner] : to_fetch) fetch_(id, owner);
    if (on_block) on_block(true);
    lk.Lock();
    bool done;
    auto finished = [&]() REQUIRES(mu_) { return waiter->remaining <= 0 || waiter->failed; };
    if (timeout_ms < 0) {
      waiter->cv.Wait(lk, finished);
      done = true;
    } else {
      done = waiter->cv.WaitFor(lk, std::chrono::milliseconds(timeout_ms), finished);
    }
    if (!done || waiter->failed) {
      // Waits left on objects not ready yet go (the entries stay held by their refs).
      for (const auto& id : ids) RemoveWaiterLocked(id, waiter);
    }
    if (!done) {
      lk.Unlock();
      if (on_block) on_block(false);
      return Status::TimedOut("Get timed out: some object(s) not ready.");
    }
    lk.Unlock();
    if (on_block) on_block(false);
    lk.Lock();
  }
  std::vector<StoredObject> out;
  out.reserve(ids.size());
  StoredObject error;  // the first failed object, for the slots not ready
  for (const auto& id : ids) {
    auto it = objects_.find(id);
    if (it != objects_.end() && it->second.ready && (it->second.value.flags & kErrorFlags)) {
      error = it->second.value;
      break;
    }
  }
  for (const auto& id : ids) {
    auto it = objects_.find(id);
    if (it != objects_.end() && it->second.ready) {
      out.push_back(it->second.value);
    } else if (error.flags & kErrorFlags) {
      out.push_back(error);
    } else {
      return Status::Internal("object " + ToHex(id) + " vanished while being read");
    }
  }
  return out;
}

Result<std::vector<bool>> MemoryStore::Wait(const std::vector<std::string>& ids, int num_returns,
                                            int64_t timeout_ms, bool fetch,
                                            const std::function<void(bool)>& on_block) {
  auto waiter = std::make_shared<Waiter>();
  std::vector<std::pair<std::string, std::string>> to_fetch;
  std::vector<bool> ready(ids.size(), false);
  MutexLock lk(&mu_);
  int n_ready = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = objects_.find(ids[i]);
    if (it == objects_.end()) {
      return Status::NotFound("object " + ToHex(ids[i]) + " is unknown to this process");
    }
    if (it->second.ready) {
      ready[i] = true;
      n_ready++;
    }
  }
  if (n_ready < num_returns && timeout_ms != 0) {
    waiter->remaining = num_returns - n_ready;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ready[i]) continue;
      Entry& e = objects_[ids[i]];
      e.waiters.push_back(waiter);
      if (!e.owned && !e.fetching) {
        e.fetching = true;
        to_fetch.emplace_back(ids[i], e.owner_address);
      }
    }
    (void)fetch;  // every wait fetches small objects: they are the readiness signal
    lk.Unlock();
    for (auto& [id, owner] : to_fetch) fetch_(id, owner);
    if (on_block) on_block(true);
    lk.Lock();
    if (timeout_ms < 0) {
      waiter->cv.Wait(lk, [&]() REQUIRES(mu_) { return waiter->remaining <= 0; });
    } else {
      waiter->cv.WaitFor(lk, std::chrono::milliseconds(timeout_ms),
                         [&]() REQUIRES(mu_) { return waiter->remaining <= 0; });
    }
    if (on_block) {
      lk.Unlock();
      on_block(false);
      lk.Lock();
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      auto it = objects_.find(ids[i]);
      if (it == objects_.end()) continue;
      if (!ready[i]) {
        ready[i] = it->second.ready;
        RemoveWaiterLocked(ids[i], waiter);  // may free the entry: read it first
      }
    }
  }
  return ready;
}

bool MemoryStore::Contains(const std::string& id) const {
  MutexLock lk(&mu_);
  return objects_.count(id) > 0;
}

std::optional<std::string> MemoryStore::OwnerOf(const std::string& id) const {
  MutexLock lk(&mu_);
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.owned) return std::nullopt;
  return it->second.owner_address;
}

size_t MemoryStore::Size() const {
  MutexLock lk(&mu_);
  return objects_.size();
}

}  // namespace fleet

namespace fleet {
void MemoryStore::Compact() {
  MutexLock lk(&mu_);
  objects_.rehash(0);
}
}  // namespace fleet
