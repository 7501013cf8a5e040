// Helpers shared by the placement policies; see policies.h.
#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

bool FeasibleOn(const RemoteNode& node, const LeaseRequest& r) {
  return Covers(node.total, r.resources) && Covers(node.total, r.placement) &&
         r.labels.Matches(node.labels);
}

bool FeasibleAnywhere(const LeaseRequest& r, const ClusterView& view, const LocalNode& local) {
  if (local.Feasible(r)) return true;
  for (auto& [id, n] : view) {
    if (FeasibleOn(n, r)) return true;
  }
  return false;
}

double CriticalUtilization(const ResourceSet& total, const ResourceSet& free) {
  double highest = 0;
  for (const char* name : {"CPU", "memory", "object_store_memory"}) {
    auto t = total.find(name);
    if (t == total.end() || t->second <= 0) continue;
    auto f = free.find(name);
    int64_t avail = f == free.end() ? 0 : f->second;
    double used = 1.0 - static_cast<double>(avail) / static_cast<double>(t->second);
    if (used > highest) highest = used;
  }
  return highest;
}

double HybridScore(const ResourceSet& total, const ResourceSet& free, double spread_threshold) {
  double u = CriticalUtilization(total, free);
  return u < spread_threshold ? 0 : u;
}

bool HasGpu(const ResourceSet& total) {
  auto it = total.find("GPU");
  return it != total.end() && it->second > 0;
}

}  // namespace fleet::node::scheduling
