// LeaseScheduler implementation; see lease_scheduler.h.
#include "node/scheduling/lease_scheduler.h"

#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

namespace {
ResourceSet ToSet(const google::protobuf::Map<std::string, double>& m) {
  return FromDoubles(std::map<std::string, double>(m.begin(), m.end()));
}
}  // namespace

void LeaseScheduler::SetView(rpc::ClusterView& msg) {
  view_.clear();
  for (auto& n : *msg.mutable_nodes()) {
    if (!n.alive() || n.node_id() == local_id_) continue;
    RemoteNode& r = view_[n.node_id()];
    r.address = std::move(*n.mutable_address());
    r.total = ToSet(n.total());
    r.free = ToSet(n.available());
    r.labels = NodeLabels(n.labels().begin(), n.labels().end());
  }
}

Placement LeaseScheduler::Place(LeaseRequest& r, const NodeResources& resources) {
  if (r.spilled || r.placed) return Placement::QueueHere();
  LocalNode local{local_id_, resources, local_labels_};
  Placement p;
  std::optional<Placement> affinity;
  if (r.strategy == SchedulingStrategy::kNodeAffinity && (affinity = PlaceNodeAffinity(r, view_, local))) {
    p = std::move(*affinity);
  } else if (r.strategy == SchedulingStrategy::kSpread) {
    p = PlaceSpread(r, view_, local, spread_turn_);
  } else {
    p = PlaceDefault(r, view_, local, spread_threshold_);
  }
  if (p.kind == Placement::Kind::kRunHere) r.placed = true;
  if (p.kind == Placement::Kind::kSpill) {
    RemoteNode& target = view_[p.node_id];
    for (auto& [k, v] : r.resources) target.free[k] -= v;
    p.address = target.address;
  }
  return p;
}

bool LeaseScheduler::FeasibleAnywhere(const LeaseRequest& r, const NodeResources& resources) const {
  return scheduling::FeasibleAnywhere(r, view_, LocalNode{local_id_, resources, local_labels_});
}

}  // namespace fleet::node::scheduling
