// The default (hybrid) placement policy; see policies.h.
#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

Placement PlaceDefault(const LeaseRequest& r, const ClusterView& view, const LocalNode& local) {
  if (local.FitsNow(r)) return Placement::QueueHere();
  if (std::string id = LeastLoadedRemote(r, view, true); !id.empty()) return Placement::Spill(id);
  if (local.Feasible(r)) return Placement::QueueHere();
  if (std::string id = LeastLoadedRemote(r, view, false); !id.empty()) return Placement::Spill(id);
  return Placement::QueueHere();
}

}  // namespace fleet::node::scheduling
