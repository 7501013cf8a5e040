// ReferenceCounter implementation; see reference_counter.h.
#include "core/reference_counter.h"

#include <algorithm>
#include <asio/post.hpp>

namespace fleet {

namespace {
constexpr int kRpcTimeoutMs = 60000;
}  // namespace

ReferenceCounter::ReferenceCounter(asio::io_context& io, MemoryStore& store,
                                   PeerConnections& peers)
    : io_(io), store_(store), peers_(peers) {}

void ReferenceCounter::ReleaseBorrow(const std::string& id, const std::string& owner, int count,
                                     bool unconfirmed) {
  MutexLock lk(&mu_);
  if (unconfirmed) {  // must not overtake its own registration
    deferred_releases_.emplace_back(owner, id, count);
    if (registrations_in_flight_ == 0) ReleaseDeferredLocked();
    return;
  }
  QueueReleaseLocked(owner, id, count);
}

void ReferenceCounter::QueueReleaseLocked(const std::string& owner, const std::string& id,
                                          int count) {
  to_release_[owner].emplace_back(id, count);
  if (!release_flush_posted_) {
    release_flush_posted_ = true;
    asio::post(io_, [this] { FlushBorrowReleases(); });
  }
}

void ReferenceCounter::ReleaseDeferredLocked() {
  if (registrations_in_flight_ > 0 || deferred_releases_.empty()) return;
  std::vector<std::tuple<std::string, std::string, int>> keep;
  for (auto& release : deferred_releases_) {
    const std::string& owner = std::get<0>(release);
    const std::string& id = std::get<1>(release);
    int count = std::get<2>(release);
    bool queued = std::any_of(to_register_.begin(), to_register_.end(),
                              [&](const auto& r) { return r.second == id && r.first == owner; });
    if (queued) {
      keep.emplace_back(owner, id, count);  // goes after the flush that sends it
    } else {
      QueueReleaseLocked(owner, id, count);
    }
  }
  deferred_releases_.swap(keep);
}

void ReferenceCounter::QueueBorrowRegistration(const std::string& owner, const std::string& id) {
  MutexLock lk(&mu_);
  to_register_.emplace_back(owner, id);
}

void ReferenceCounter::FlushBorrowRegistrations() {
  std::vector<std::pair<std::string, std::string>> todo;
  {
    MutexLock lk(&mu_);
    todo.swap(to_register_);
    if (todo.empty()) {
      // Ours may be in a batch another thread is sending: wait for it.
      registrations_done_.Wait(lk, [this]() REQUIRES(mu_) { return registrations_in_flight_ == 0; });
      ReleaseDeferredLocked();
      return;
    }
    registrations_in_flight_++;
  }
  std::map<std::string, rpc::Envelope> by_owner;
  std::vector<std::string> ids;
  for (auto& [owner, id] : todo) {
    auto& m = by_owner[owner];
    m.mutable_add_borrowers()->add_object_ids(id);
    m.mutable_add_borrowers()->set_borrower(self_address_);
    ids.push_back(id);
  }
  for (auto& [owner, m] : by_owner) {
    auto conn = peers_.To(owner);
    // An unreachable owner: its objects are lost anyway (get says so).
    if (conn.ok()) (void)conn.value()->CallSync(m, kRpcTimeoutMs);
  }
  store_.ConfirmRegistered(ids);
  MutexLock lk(&mu_);
  registrations_in_flight_--;
  registrations_done_.NotifyAll();
  registrations_done_.Wait(lk, [this]() REQUIRES(mu_) { return registrations_in_flight_ == 0; });
  ReleaseDeferredLocked();
}

void ReferenceCounter::FlushBorrowReleases() {
  std::map<std::string, std::vector<std::pair<std::string, int>>> todo;
  {
    MutexLock lk(&mu_);
    todo.swap(to_release_);
    release_flush_posted_ = false;
  }
  for (auto& [owner, items] : todo) {
    rpc::ConnectionPtr conn = peers_.Existing(owner);
    if (!conn) {  // registered for us by an executor: connect now (Unix: immediate)
      auto c = peers_.To(owner);
      if (!c.ok()) continue;  // the owner is gone, and its objects with it
      conn = c.value();
    }
    rpc::Envelope m;
    auto* r = m.mutable_remove_borrowers();
    r->set_borrower(self_address_);
    for (auto& [id, count] : items) {
      r->add_object_ids(id);
      r->add_counts(count);
    }
    conn->Send(m);
  }
}

std::vector<std::pair<std::string, std::string>> ReferenceCounter::RegisterReturnRefs(
    const std::string& caller, const std::vector<std::string>& ids) {
  std::vector<std::pair<std::string, std::string>> nested;
  std::map<std::string, rpc::Envelope> remote;  // owner -> AddBorrowers
  for (const auto& id : ids) {
    if (!store_.Contains(id)) {
      store_.MarkEscaped(id);
      continue;
    }
    auto owner = store_.OwnerOf(id);
    if (!owner) {  // ours
      store_.AddBorrower(id, caller, 1);
      WatchBorrower(caller);
      nested.emplace_back(id, self_address_);
    } else {
      auto& m = remote[*owner];
      m.mutable_add_borrowers()->add_object_ids(id);
      m.mutable_add_borrowers()->set_borrower(caller);
      nested.emplace_back(id, *owner);
    }
  }
  for (auto& [owner, m] : remote) {
    auto conn = peers_.To(owner);
    if (conn.ok()) (void)conn.value()->CallSync(m, kRpcTimeoutMs);
  }
  return nested;
}

void ReferenceCounter::WatchBorrower(const std::string& borrower) {
  {
    MutexLock lk(&mu_);
    if (!watched_borrowers_.insert(borrower).second) return;
  }
  if (!peers_.To(borrower).ok()) {  // gone already
    {
      MutexLock lk(&mu_);
      watched_borrowers_.erase(borrower);
    }
    store_.DropBorrower(borrower);
  }
}

void ReferenceCounter::OnPeerClosed(const std::string& address) {
  bool watched;
  {
    MutexLock lk(&mu_);
    watched = watched_borrowers_.erase(address) > 0;
  }
  if (watched) store_.DropBorrower(address);  // that process is gone
}

void ReferenceCounter::RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener) {
  using rpc::PeerRole;
  using rpc::RoleBit;
  FLEET_RPC_HANDLE(listener, AddBorrowers, add_borrowers, HandleAddBorrowers,
                   RoleBit(PeerRole::kPeer));
  FLEET_RPC_HANDLE(listener, RemoveBorrowers, remove_borrowers, HandleRemoveBorrowers,
                   RoleBit(PeerRole::kPeer));
}

void ReferenceCounter::HandleAddBorrowers(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                          rpc::AddBorrowers& b) {
  // Registered by the borrower itself (the address in its Hello): its
  // connection closing means it died. (An executor registering its caller
  // does not speak for it.)
  const std::string& peer = conn->hello().address();
  if (!peer.empty() && peer == b.borrower()) {
    borrower_conns_[conn.get()] = b.borrower();
  } else {
    WatchBorrower(b.borrower());  // registered for it by an executor
  }
  for (const auto& id : b.object_ids()) store_.AddBorrower(id, b.borrower(), 1);
  rpc::Envelope reply;
  reply.mutable_add_borrowers_reply();
  conn->Reply(request_id, reply);
}

void ReferenceCounter::HandleRemoveBorrowers(const rpc::ConnectionPtr&, uint64_t,
                                             rpc::RemoveBorrowers& b) {
  for (int i = 0; i < b.object_ids_size() && i < b.counts_size(); i++) {
    store_.AddBorrower(b.object_ids(i), b.borrower(), -b.counts(i));
  }
}

void ReferenceCounter::OnConnectionClosed(const rpc::ConnectionPtr& conn) {
  // A borrower's connection closed: it is gone, and so are its borrows.
  auto it = borrower_conns_.find(conn.get());
  if (it == borrower_conns_.end()) return;
  store_.DropBorrower(it->second);
  borrower_conns_.erase(it);
}

}  // namespace fleet
