// ObjectLocator: where the copies of objects are. For objects this process
// owns it answers from the object's descriptor (the primary copy's node)
// plus the nodes that reported pulling a copy (AddObjectLocation); for
// borrowed ones it asks the owner (GetObjectLocations, one call per owner).
// Thread-safe: one mutex (mu_). Lock order: MemoryStore::mu_ before mu_
// (the store's free hook calls Forget under its lock).
#pragma once

#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "core/memory_store.h"
#include "core/peer_connections.h"
#include "fleet.pb.h"
#include "rpc/dispatcher.h"

namespace fleet {

class ObjectLocator {
 public:
  ObjectLocator(MemoryStore& store, PeerConnections& peers);
  ObjectLocator(const ObjectLocator&) = delete;
  ObjectLocator& operator=(const ObjectLocator&) = delete;

  // This process's address and node; set before first use.
  void set_self(const std::string& address, const std::string& node_id) {
    self_address_ = address;
    node_id_ = node_id;
  }
  // Each object's copies (node ids) and size, asking the owners of borrowed
  // ones. Unknown objects, and those of unreachable owners, come back with
  // found = false; a failed call to a reachable owner fails the whole lookup.
  Result<std::vector<rpc::ObjectLocations>> Locate(const std::vector<std::string>& ids,
                                                   int64_t timeout_ms) EXCLUDES(mu_);
  // An owned object was freed: forget its copies.
  void Forget(const std::string& id) EXCLUDES(mu_);

  // Messages from other processes (io thread): AddObjectLocation from
  // fleet-nodes that pulled a copy, GetObjectLocations from peers.
  void RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener);
  void HandleAddObjectLocation(const rpc::ConnectionPtr& conn, uint64_t request_id,
                               rpc::AddObjectLocation& m) EXCLUDES(mu_);
  void HandleGetObjectLocations(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                rpc::GetObjectLocations& m) EXCLUDES(mu_);

 private:
  rpc::ObjectLocations LocateOwned(const std::string& id) EXCLUDES(mu_);

  MemoryStore& store_;
  PeerConnections& peers_;
  std::string self_address_;
  std::string node_id_;
  Mutex mu_;
  // Nodes that pulled a copy of an owned object (AddObjectLocation); the
  // primary's node is in the object's descriptor.
  std::unordered_map<std::string, std::set<std::string>> copies_ GUARDED_BY(mu_);
};

}  // namespace fleet
