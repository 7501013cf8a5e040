// ReferenceCounter: the borrow protocol between this process and the owners
// of the refs it holds, and between this process (as owner) and its
// borrowers.
//
// Borrower side: a ref deserialized here for the first time is registered
// with its owner (AddBorrowers, batched per owner, answered before the value
// carrying it is let go); when the entry goes, its registrations are handed
// back (RemoveBorrowers, batched on the io thread). A release never
// overtakes its registration: releases of unanswered registrations wait in
// deferred_releases_ until no registration is in flight.
// Owner side: borrowers are counted per object; a borrower's death (its
// connection closing, or a watched peer's connection closing) drops all of
// its borrows.
// The counts themselves (local, submitted, contained, borrowers) still live
// in MemoryStore's entries, beside the values: one hash lookup and one lock
// per ref operation on the hot path. Moving them here is the next step.
// Thread-safe: one mutex (mu_). Lock order: MemoryStore::mu_ before mu_ (the
// store's release hook calls ReleaseBorrow under its lock); mu_ is never
// held while calling the store or PeerConnections.
#pragma once

#include <asio/io_context.hpp>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/thread_annotations.h"
#include "core/memory_store.h"
#include "core/peer_connections.h"
#include "fleet.pb.h"
#include "rpc/connection.h"
#include "rpc/dispatcher.h"

namespace fleet {

class ReferenceCounter {
 public:
  ReferenceCounter(asio::io_context& io, MemoryStore& store, PeerConnections& peers);
  ReferenceCounter(const ReferenceCounter&) = delete;
  ReferenceCounter& operator=(const ReferenceCounter&) = delete;

  // This process's address; set before first use.
  void set_self_address(const std::string& address) { self_address_ = address; }

  // ---- borrower side -------------------------------------------------------
  // A ref owned by `owner` was deserialized here for the first time: tell
  // the owner at the next FlushBorrowRegistrations.
  void QueueBorrowRegistration(const std::string& owner, const std::string& id) EXCLUDES(mu_);
  // Registers every queued borrow with its owner and waits for the answers
  // (one round trip per owner; an unreachable owner is skipped), then waits
  // for batches other threads are sending.
  void FlushBorrowRegistrations() EXCLUDES(mu_);
  // MemoryStore's release hook (called under its lock: only queues).
  void ReleaseBorrow(const std::string& id, const std::string& owner, int count,
                     bool unconfirmed) EXCLUDES(mu_);

  // ---- executor side -------------------------------------------------------
  // A task's return value, going to `caller`, holds refs `ids`: registers
  // `caller` as their borrower with each owner (waiting for remote owners'
  // answers). Returns (id, owner) of each to send with the reply; unknown
  // ids escape (kept forever) and are left out.
  std::vector<std::pair<std::string, std::string>> RegisterReturnRefs(
      const std::string& caller, const std::vector<std::string>& ids) EXCLUDES(mu_);

  // ---- owner side (io thread) ----------------------------------------------
  // Adds AddBorrowers and RemoveBorrowers (from peers) to the listener's table.
  void RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener);
  void HandleAddBorrowers(const rpc::ConnectionPtr& conn, uint64_t request_id,
                          rpc::AddBorrowers& m);
  void HandleRemoveBorrowers(const rpc::ConnectionPtr& conn, uint64_t request_id,
                             rpc::RemoveBorrowers& m);
  // A connection to our listener closed: if it was a borrower's, it died.
  void OnConnectionClosed(const rpc::ConnectionPtr& conn);
  // Our connection to `address` closed: a watched borrower there died.
  void OnPeerClosed(const std::string& address) EXCLUDES(mu_);

 private:
  // Drops every borrow of `borrower` once our connection to it closes (it
  // died). Connects if needed (Unix: immediate).
  void WatchBorrower(const std::string& borrower) EXCLUDES(mu_);
  // Sends the queued RemoveBorrowers (io thread).
  void FlushBorrowReleases() EXCLUDES(mu_);
  // Moves deferred releases whose registration is no longer queued into the
  // release queue (only while no registration is in flight).
  void ReleaseDeferredLocked() REQUIRES(mu_);
  // Queues a release and makes sure a flush is posted.
  void QueueReleaseLocked(const std::string& owner, const std::string& id, int count)
      REQUIRES(mu_);

  asio::io_context& io_;
  MemoryStore& store_;
  PeerConnections& peers_;
  std::string self_address_;

  Mutex mu_;
  CondVar registrations_done_;  // registrations_in_flight_ dropped
  std::vector<std::pair<std::string, std::string>> to_register_ GUARDED_BY(mu_);  // (owner, id)
  // owner -> (id, count) to hand back
  std::map<std::string, std::vector<std::pair<std::string, int>>> to_release_ GUARDED_BY(mu_);
  bool release_flush_posted_ GUARDED_BY(mu_) = false;
  int registrations_in_flight_ GUARDED_BY(mu_) = 0;
  // Releases of borrows whose registration was not sent yet: they go once it
  // has been answered. (owner, id, count).
  std::vector<std::tuple<std::string, std::string, int>> deferred_releases_ GUARDED_BY(mu_);
  // Borrowers registered for them by an executor (not through their own
  // connection): watched through a connection of ours.
  std::set<std::string> watched_borrowers_ GUARDED_BY(mu_);
  // Connections of processes that registered borrows here (owner side).
  std::map<const rpc::Connection*, std::string> borrower_conns_;  // io thread only
};

}  // namespace fleet
