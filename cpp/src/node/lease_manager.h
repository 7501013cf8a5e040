// LeaseManager: this node's queue of lease requests and the leases it has
// granted. Requests are served in arrival order among those that fit; where
// each goes (here, another node, nowhere) is LeaseScheduler's decision. A
// request that can never fit any node is kept and its requester warned once
// (WarnInfeasible). A worker blocked in get() lends its CPU back. Leases
// held by a client that disconnects are revoked and their workers killed.
//
// Invariant: every granted lease holds an Allocation of `resources`; it is
// released exactly once (returned, revoked, or its worker gone).
// The shell around the decisions: it answers requesters over their
// connections, and asks the node (Hooks) to start and kill workers.
// Not thread-safe: fleet-node's io thread owns it.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "fleet.pb.h"
#include "node/client_session.h"
#include "node/resources.h"
#include "node/scheduling/lease_scheduler.h"
#include "node/worker_pool.h"

namespace fleet::node {

class LeaseManager {
 public:
  struct Hooks {
    std::function<void(int n)> start_workers;
    std::function<void(const std::string& worker_id)> kill_worker;
    // A worker was leased to host an actor of that class (labels its output).
    std::function<void(const std::string& worker_id, const std::string& actor_class)> dedicated;
    std::function<void()> resources_changed;  // report soon
    // Why workers fail to start here, or null while they start fine.
    std::function<const std::string*()> start_failure;
  };
  LeaseManager(NodeResources& resources, WorkerPool& pool, scheduling::LeaseScheduler& scheduler,
               Hooks hooks)
      : resources_(resources), pool_(pool), scheduler_(scheduler), hooks_(std::move(hooks)) {}

  // ---- requests from clients (replies go to the session's connection)
  void HandleRequestLease(ClientSession& s, uint64_t request_id, const rpc::RequestLease& m);
  void HandleReturnLease(ClientSession& s, uint64_t request_id, const rpc::ReturnLease& m);
  void HandleCancelLeaseRequests(ClientSession& s, uint64_t request_id,
                                 const rpc::CancelLeaseRequests& m);
  void HandleNotifyBlocked(ClientSession& s, uint64_t request_id, const rpc::NotifyBlocked& m);

  // Grants, spills or fails what it can of the queue; starts workers for
  // requests that fit but find no idle worker. O(queue).
  void Schedule();
  // That worker is gone: its lease (if any) is released.
  void OnWorkerGone(const std::string& worker_id);
  // A client left: its queued requests go, its leases are revoked and their
  // workers killed (they may still run its tasks).
  void OnClientGone(const rpc::ConnectionPtr& conn);
  // Placement group bundles went: leases holding any of those resources are
  // revoked (workers killed), queued requests asking for them fail.
  void RevokeUsing(const std::set<std::string>& resource_names);
  // Fails every queued request (workers cannot start here).
  void FailPendingRequests(const std::string& why);
  // Warns (once) the requesters of requests queued for `warning_after` that
  // no alive node could ever run.
  void WarnInfeasible(std::chrono::steady_clock::time_point now,
                      std::chrono::milliseconds warning_after);
  // The queued requests by shape, for fleet-gcs (`fleet status`).
  void AddDemands(rpc::ReportResources* report) const;
  int num_pending() const { return static_cast<int>(pending_.size()); }
  void Stop() { stopped_ = true; }

 private:
  struct Request {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id = 0;
    scheduling::LeaseRequest req;
    std::string description;
    std::string key;
    std::string actor_class;  // non-empty: the worker will host this actor
    std::chrono::steady_clock::time_point since;
    bool warned = false;
  };
  struct Lease {
    Allocation alloc;
    std::weak_ptr<rpc::Connection> holder;
    bool blocked = false;
  };
  // Releases the leases of those workers and kills them.
  void Revoke(const std::vector<std::string>& worker_ids);

  NodeResources& resources_;
  WorkerPool& pool_;
  scheduling::LeaseScheduler& scheduler_;
  const Hooks hooks_;
  bool stopped_ = false;
  std::deque<Request> pending_;
  std::map<std::string, Lease> leases_;  // by worker id
};

}  // namespace fleet::node
