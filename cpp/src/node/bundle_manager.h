// BundleManager: this node's placement group bundles, reserved in two phases
// by fleet-gcs so that a group lands on all its nodes or on none:
//  - Prepare takes each bundle's resources from what is free here (all of
//    the round's bundles, or none) and holds them;
//  - Commit makes them usable: for bundle i and resource R of amount a it
//    adds "R_group_i_<pg>" and "R_group_<pg>" (a each), plus
//    "bundle_group_i_<pg>" and "bundle_group_<pg>" (1000 each), as Ray names
//    them;
//  - Release undoes either: the group resources go, the held resources come
//    back, and leases and queued requests using the released bundles'
//    resources end (Hooks::revoke).
// Invariant: a bundle's resources are held from Prepare until Release, and
// its group resources exist exactly while it is committed.
// Not thread-safe: fleet-node's io thread owns it.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "fleet.pb.h"
#include "node/client_session.h"
#include "node/resources.h"

namespace fleet::node {

class BundleManager {
 public:
  struct Hooks {
    // Leases and queued requests holding any of these resources end.
    std::function<void(const std::set<std::string>& resource_names)> revoke;
    std::function<void()> resources_changed;  // report soon
    std::function<void()> schedule;           // resources appeared or came back
  };
  struct BundleSpec {
    int index = 0;
    ResourceSet resources;
  };
  BundleManager(NodeResources& resources, Hooks hooks)
      : resources_(resources), hooks_(std::move(hooks)) {}

  // Reserves the bundles of group `pg_id` (binary) from what is free now,
  // beside those the group already holds here; a bundle prepared again is
  // replaced. On failure (one does not fit) nothing is taken and the
  // returned status says which bundle and what is free.
  Status Prepare(const std::string& pg_id, const std::vector<BundleSpec>& bundles);
  // Commits every prepared bundle of the group; false if none was new.
  bool Commit(const std::string& pg_id);
  // Releases those bundles of the group (all if `indexes` is empty); false
  // if none was held.
  bool Release(const std::string& pg_id, const std::vector<int>& indexes);
  // The indexes of the group's bundles held here (prepared or committed).
  std::vector<int> Indexes(const std::string& pg_id) const;

  // ---- requests from fleet-gcs (answered on the session's connection)
  void HandlePrepareBundles(ClientSession& s, uint64_t request_id, const rpc::PrepareBundles& m);
  void HandleCommitBundles(ClientSession& s, uint64_t request_id, const rpc::CommitBundles& m);
  void HandleReleaseBundles(ClientSession& s, uint64_t request_id, const rpc::ReleaseBundles& m);

 private:
  struct Reservation {
    Allocation alloc;   // taken from what was free at prepare
    ResourceSet group;  // the "<R>_group_..." resources it adds once committed
    bool committed = false;
  };

  NodeResources& resources_;
  const Hooks hooks_;
  // By placement group id, then bundle index.
  std::map<std::string, std::map<int, Reservation>> bundles_;
};

}  // namespace fleet::node
