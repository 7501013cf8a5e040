// The SPREAD placement policy; see policies.h.
#include <algorithm>
#include <vector>

#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

Placement PlaceSpread(const LeaseRequest& r, const ClusterView& view, const LocalNode& local,
                      uint64_t& turn) {
  std::vector<std::string> feasible, free;
  if (local.Feasible(r)) {
    feasible.push_back(local.id);
    if (local.FitsNow(r)) free.push_back(local.id);
  }
  for (auto& [id, n] : view) {
    if (!FeasibleOn(n, r)) continue;
    feasible.push_back(id);
    if (Covers(n.free, r.resources)) free.push_back(id);
  }
  auto& pool = free.empty() ? feasible : free;
  if (pool.empty()) return Placement::QueueHere();  // infeasible everywhere: wait here (warned)
  std::sort(pool.begin(), pool.end());
  const std::string& pick = pool[turn++ % pool.size()];
  if (pick == local.id) return Placement::RunHere();
  return Placement::Spill(pick);
}

}  // namespace fleet::node::scheduling
