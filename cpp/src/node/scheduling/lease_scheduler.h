// LeaseScheduler: decides where each lease request runs (this node, another
// node, or nowhere), from the request, the cluster view fleet-gcs pushes, and
// this node's resources. The policies (policies.h) are pure; this class picks
// one per request and keeps the little state they share: the view (with a
// node's free resources lowered as requests are spilled to it, until the
// next view) and SPREAD's round-robin position.
//
// Spillback-once: a request another node spilled here is never spilled again
// (views are a few milliseconds stale, and ping-pong is worse), nor is one
// already placed here by SPREAD or an affinity.
// No I/O, no clock. Not thread-safe: fleet-node's io thread owns it.
#pragma once

#include <cstdint>
#include <string>

#include "fleet.pb.h"
#include "node/resources.h"
#include "node/scheduling/cluster_view.h"

namespace fleet::node::scheduling {

class LeaseScheduler {
 public:
  explicit LeaseScheduler(std::string local_node_id, double spread_threshold = 0.5)
      : local_id_(std::move(local_node_id)), spread_threshold_(spread_threshold) {}

  // This node's labels (the user's and the defaults), matched by label selectors.
  void SetLocalLabels(NodeLabels labels) { local_labels_ = std::move(labels); }
  const NodeLabels& local_labels() const { return local_labels_; }
  // Whether this node's labels satisfy the request's selector.
  bool LabelsMatchHere(const LeaseRequest& r) const { return r.labels.Matches(local_labels_); }

  // Replaces the view with the alive nodes of `msg` other than this one
  // (moves strings out of it).
  void SetView(rpc::ClusterView& msg);
  // Adds or replaces one node of the view (tests, tools).
  void SetNode(const std::string& node_id, RemoteNode node) { view_[node_id] = std::move(node); }

  // Where `r` goes. Marks it placed when the policy pins it here; a spill
  // counts against the target's free resources until the next view.
  Placement Place(LeaseRequest& r, const NodeResources& local);
  // Whether any alive node (this one included) could ever run it.
  bool FeasibleAnywhere(const LeaseRequest& r, const NodeResources& local) const;

  const ClusterView& view() const { return view_; }
  const std::string& local_id() const { return local_id_; }

 private:
  const std::string local_id_;
  const double spread_threshold_;  // Ray's scheduler_spread_threshold
  NodeLabels local_labels_;
  ClusterView view_;
  uint64_t spread_turn_ = 0;
};

}  // namespace fleet::node::scheduling
