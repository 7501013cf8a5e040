// The default (hybrid) placement policy; see policies.h.
#include <optional>

#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {

namespace {

enum class GpuFilter { kAny, kNonGpu };

// One pass of the hybrid choice over the nodes that pass `filter`; nullopt
// when no node qualifies (with `need_free`: none has the resources free now).
std::optional<Placement> Choose(const LeaseRequest& r, const ClusterView& view,
                                const LocalNode& local, double threshold, GpuFilter filter,
                                bool need_free) {
  auto passes = [&](const ResourceSet& total) {
    return filter == GpuFilter::kAny || !HasGpu(total);
  };
  bool local_ok = local.Feasible(r) && passes(local.resources.total()) &&
                  (!need_free || local.FitsNow(r));
  std::optional<double> local_score;
  if (local_ok) {
    local_score = HybridScore(local.resources.total(), local.resources.available(), threshold);
  }
  const std::string* best = nullptr;
  double best_score = 0;
  for (const auto& [id, n] : view) {  // ordered by id: ties go to the smallest
    if (!FeasibleOn(n, r) || !passes(n.total)) continue;
    if (need_free && !Covers(n.free, r.resources)) continue;
    double score = HybridScore(n.total, n.free, threshold);
    if (!best || score < best_score) {
      best = &id;
      best_score = score;
    }
  }
  if (local_score && (!best || *local_score <= best_score)) return Placement::QueueHere();
  if (best) return Placement::Spill(*best);
  return std::nullopt;
}

}  // namespace

Placement PlaceDefault(const LeaseRequest& r, const ClusterView& view, const LocalNode& local,
                       double spread_threshold) {
  if (r.resources.find("GPU") == r.resources.end()) {
    if (auto p = Choose(r, view, local, spread_threshold, GpuFilter::kNonGpu, true)) return *p;
  }
  if (auto p = Choose(r, view, local, spread_threshold, GpuFilter::kAny, true)) return *p;
  if (auto p = Choose(r, view, local, spread_threshold, GpuFilter::kAny, false)) return *p;
  return Placement::QueueHere();
}

}  // namespace fleet::node::scheduling
