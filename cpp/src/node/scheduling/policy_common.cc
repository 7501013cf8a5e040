// Helpers shared by the placement policies; see policies.h.
#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

bool FeasibleOn(const RemoteNode& node, const LeaseRequest& r) {
  return Covers(node.total, r.resources) && Covers(node.total, r.placement);
}

bool FeasibleAnywhere(const LeaseRequest& r, const ClusterView& view, const LocalNode& local) {
  if (local.Feasible(r)) return true;
  for (auto& [id, n] : view) {
    if (FeasibleOn(n, r)) return true;
  }
  return false;
}

double Load(const ResourceSet& total, const ResourceSet& free) {
  auto t = total.find("CPU");
  if (t == total.end() || t->second <= 0) return 0;
  auto f = free.find("CPU");
  int64_t free_cpu = f == free.end() ? 0 : f->second;
  return 1.0 - static_cast<double>(free_cpu) / static_cast<double>(t->second);
}

std::string LeastLoadedRemote(const LeaseRequest& r, const ClusterView& view, bool need_free) {
  std::string best;
  double best_load = 2;
  for (auto& [id, n] : view) {
    if (!FeasibleOn(n, r)) continue;
    if (need_free && !Covers(n.free, r.resources)) continue;
    double load = Load(n.total, n.free);
    if (load < best_load) {
      best_load = load;
      best = id;
    }
  }
  return best;
}

}  // namespace fleet::node::scheduling
