// The inputs and output of lease placement: the request as placement sees
// it, this node, the other alive nodes as fleet-gcs last described them, and
// where the request goes. Plain data; no I/O.
#pragma once

#include <map>
#include <string>

#include "common/label_selector.h"
#include "common/scheduling_strategy.h"
#include "node/resources.h"

namespace fleet::node::scheduling {

using NodeLabels = std::map<std::string, std::string>;

// What placement reads of a lease request.
struct LeaseRequest {
  ResourceSet resources;         // held while leased
  ResourceSet placement;         // must fit a node's total, not held (actors)
  SchedulingStrategy strategy = SchedulingStrategy::kDefault;
  std::string affinity_node_id;  // binary node id (NODE_AFFINITY)
  bool affinity_soft = false;
  bool spilled = false;  // another node sent it here: never spilled again
  bool placed = false;   // decided to run here: never placed again
  LabelSelector labels;  // only nodes whose labels match may run it
};


// Another alive node.
struct RemoteNode {
  RemoteNode() = default;
  RemoteNode(std::string a, ResourceSet t, ResourceSet f, NodeLabels l = {})
      : address(std::move(a)), total(std::move(t)), free(std::move(f)), labels(std::move(l)) {}
  std::string address;  // for spillback and pulls
  ResourceSet total;
  ResourceSet free;     // free in the last view, less what this node spilled there since
  NodeLabels labels;
};

// The other alive nodes (never this one), by binary node id. Ordered: ties
// between equally loaded nodes go to the smallest id.
using ClusterView = std::map<std::string, RemoteNode>;

// This node, as placement sees it.
struct LocalNode {
  const std::string& id;
  const NodeResources& resources;
  const NodeLabels& labels;
  // Whether it could ever run the request (its totals cover it, its labels match).
  bool Feasible(const LeaseRequest& r) const {
    return resources.Feasible(r.resources) && resources.Feasible(r.placement) &&
           r.labels.Matches(labels);
  }
  // Whether what is free now covers it.
  bool FitsNow(const LeaseRequest& r) const { return Feasible(r) && resources.Fits(r.resources); }
};

// Where a request goes.
struct Placement {
  enum class Kind {
    kQueueHere,  // wait in this node's queue; placed again on the next pass
    kRunHere,    // wait in this node's queue for good (SPREAD or affinity chose it)
    kSpill,      // to node_id at address
    kFail,       // error: cannot be placed at all (hard affinity to a dead node)
  };
  Kind kind = Kind::kQueueHere;
  std::string node_id;
  std::string address;
  std::string error;

  static Placement QueueHere() { return {}; }
  static Placement RunHere() { return {Kind::kRunHere, {}, {}, {}}; }
  static Placement Spill(std::string node) { return {Kind::kSpill, std::move(node), {}, {}}; }
  static Placement Fail(std::string why) { return {Kind::kFail, {}, {}, std::move(why)}; }
};

}  // namespace fleet::node::scheduling
