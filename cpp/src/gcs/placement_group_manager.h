// PlacementGroupManager: placement groups, inside fleet-gcs.
//
// A group is a list of bundles (resource maps) and a strategy: PACK (as few
// nodes as possible), SPREAD (as many as possible), STRICT_PACK (one node),
// STRICT_SPREAD (one node per bundle). Creating one plans a node per bundle
// from the nodes' free resources (PlanBundles, pure), then reserves them in
// two phases: PrepareBundles on every chosen node, and CommitBundles on all
// of them once every prepare succeeded; if any fails, the prepared ones are
// released and the group stays PENDING, retried when the cluster changes.
// So a group is reserved everywhere or nowhere. Removing a group releases
// its bundles (nodes kill what still runs in it). A group with bundles on a
// node that dies is RESCHEDULING until those bundles are placed again.
// Groups of a job end with it unless detached.
//
// Threading: fleet-gcs's io thread only.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/typed_id.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet::gcs {

// How a group's bundles spread over nodes (PlacementGroupInfo.strategy).
enum class BundleStrategy { kPack, kSpread, kStrictPack, kStrictSpread };
// "PACK" ... "STRICT_SPREAD"; InvalidArgument naming the four otherwise.
Result<BundleStrategy> ParseBundleStrategy(const std::string& name);
const char* BundleStrategyName(BundleStrategy s);

// One node id per bundle, or why no placement exists now. `nodes` are the
// alive nodes with their free resources (only the resources the bundles
// name are looked at: a node may carry thousands of group resources);
// `fixed` gives a node for bundles already placed (nil: to place).
Result<std::vector<NodeId>> PlanBundles(const std::vector<rpc::Bundle>& bundles,
                                        BundleStrategy strategy,
                                        const std::vector<const rpc::NodeInfo*>& nodes,
                                        const std::vector<NodeId>& fixed);

class PlacementGroupManager {
 public:
  // The alive nodes (pointers into fleet-gcs's table: no copies; valid
  // until the table changes, so never kept across callbacks).
  using NodesFn = std::function<std::vector<const rpc::NodeInfo*>()>;
  using NodeConnFn = std::function<Result<rpc::ConnectionPtr>(const rpc::NodeInfo&)>;
  PlacementGroupManager(asio::io_context& io, NodesFn nodes, NodeConnFn node_conn);

  void Create(const rpc::CreatePlacementGroup& req, uint32_t job_id, rpc::Envelope& reply);
  void Remove(const PlacementGroupId& pg_id, rpc::Envelope& reply);
  // Answers when the group is created, removed, or after timeout_ms.
  void Wait(const rpc::ConnectionPtr& conn, uint64_t request_id, const rpc::WaitPlacementGroup& req);
  void Get(const rpc::GetPlacementGroups& req, rpc::Envelope& reply) const;
  // Nodes joined, died or freed resources: place what waits.
  void OnNodesChanged();
  void OnNodeDead(const NodeId& node_id);
  void OnJobFinished(uint32_t job_id);

 private:
  struct Waiter {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
    std::shared_ptr<asio::steady_timer> timer;
    const rpc::Connection* who;  // request ids are per connection
  };
  struct Group {
    rpc::PlacementGroupInfo info;
    bool in_flight = false;     // a prepare/commit round is running
    uint64_t round = 0;         // bumps on every round and on removal
    std::vector<Waiter> waiters;
  };
  void TrySchedule(Group& g);
  void OnPrepared(const PlacementGroupId& pg_id, uint64_t round, bool ok, const std::string& error);
  void AnswerWaiters(Group& g);
  // Releases bundles: node id -> bundle indexes (empty: all of the group there).
  void ReleaseOn(const PlacementGroupId& pg_id, const std::map<NodeId, std::vector<int>>& bundles);
  static const rpc::NodeInfo* FindNode(const std::vector<const rpc::NodeInfo*>& nodes, const NodeId& id);

  asio::io_context& io_;
  NodesFn nodes_;
  NodeConnFn node_conn_;
  std::map<PlacementGroupId, Group> groups_;
  // Per round: prepares outstanding, failures, and the nodes prepared.
  struct Round {
    int outstanding = 0;
    bool failed = false;
    std::string error;
    std::vector<NodeId> prepared;
    std::map<NodeId, std::vector<int>> by_node;  // node -> bundle indexes
  };
  std::map<PlacementGroupId, Round> rounds_;
};

}  // namespace fleet::gcs
