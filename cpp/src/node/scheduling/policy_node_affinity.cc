// The NODE_AFFINITY placement policy; see policies.h.
#include "common/ids.h"
#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

std::optional<Placement> PlaceNodeAffinity(const LeaseRequest& r, const ClusterView& view,
                                           const LocalNode& local) {
  const std::string& target = r.affinity_node_id;
  if (target == local.id) {
    if (local.Feasible(r) || !r.affinity_soft) return Placement::RunHere();
  } else if (auto it = view.find(target); it != view.end()) {
    if (FeasibleOn(it->second, r) || !r.affinity_soft) return Placement::Spill(target);
  } else if (!r.affinity_soft) {
    return Placement::Fail("NodeAffinitySchedulingStrategy(node_id=" + ToHex(target) +
                           ", soft=False): that node does not exist or is dead");
  }
  return std::nullopt;  // soft: as the default policy
}

}  // namespace fleet::node::scheduling
