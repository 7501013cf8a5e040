// Actor placement; see actor_placement.h.
#include "gcs/actor_placement.h"

#include <algorithm>

#include "common/ids.h"
#include "common/label_selector.h"
#include "common/scheduling_strategy.h"

namespace fleet::gcs {

namespace {

using Amounts = google::protobuf::Map<std::string, double>;

bool Covers(const Amounts& have, const Amounts& need) {
  for (const auto& [k, v] : need) {
    if (v <= 0) continue;
    auto it = have.find(k);
    if (it == have.end() || it->second + 1e-9 < v) return false;
  }
  return true;
}

double Amount(const Amounts& m, const char* name) {
  auto it = m.find(name);
  return it == m.end() ? 0 : it->second;
}

// Ray's critical resource utilization (CPU, memory, object_store_memory),
// counted as 0 below the threshold.
double HybridScore(const rpc::NodeInfo& n, double threshold) {
  double highest = 0;
  for (const char* name : {"CPU", "memory", "object_store_memory"}) {
    double total = Amount(n.total(), name);
    if (total <= 0) continue;
    highest = std::max(highest, 1.0 - Amount(n.available(), name) / total);
  }
  return highest < threshold ? 0 : highest;
}

bool HoldsNothing(const rpc::ActorInfo& a) {
  return std::none_of(a.resources().begin(), a.resources().end(),
                      [](const auto& kv) { return kv.second > 0; });
}

}  // namespace

ActorPlacement PlaceActor(const ActorPlacementInput& in, uint64_t& spread_turn) {
  const rpc::ActorInfo& a = in.actor;
  std::vector<const rpc::NodeInfo*> nodes;
  for (const auto& n : in.nodes) nodes.push_back(&n);
  std::sort(nodes.begin(), nodes.end(),
            [](auto* x, auto* y) { return x->node_id() < y->node_id(); });
  auto fits_total = [&](const rpc::NodeInfo& n) {
    return Covers(n.total(), a.resources()) && Covers(n.total(), a.placement());
  };

  // The selector in force: the actor's own, else the first fallback that
  // some node could ever satisfy.
  std::vector<LabelSelector> selectors{LabelSelector::Parse(a.label_selector())};
  for (const auto& f : a.fallback_strategy()) selectors.push_back(LabelSelector::Parse(f.selector()));
  std::vector<const rpc::NodeInfo*> feasible, free;
  for (const auto& sel : selectors) {
    for (auto* n : nodes) {
      if (!fits_total(*n) || !sel.Matches(n->labels())) continue;
      feasible.push_back(n);
      if (Covers(n->available(), a.resources())) free.push_back(n);
    }
    if (!feasible.empty()) break;
  }

  SchedulingStrategy strategy = ParseSchedulingStrategy(a.scheduling_strategy());
  if (strategy == SchedulingStrategy::kNodeAffinity) {
    for (auto* n : feasible) {
      if (n->node_id() == a.affinity_node_id()) return {n, {}};
    }
    if (!a.affinity_soft()) {
      bool exists = std::any_of(nodes.begin(), nodes.end(),
                                [&](auto* n) { return n->node_id() == a.affinity_node_id(); });
      if (!exists) {
        return {nullptr, "its NodeAffinitySchedulingStrategy names node " +
                             ToHex(a.affinity_node_id()) +
                             ", which does not exist or is dead (soft=False)"};
      }
      return {};  // alive but cannot host it now: wait for it
    }
  }
  std::vector<const rpc::NodeInfo*> pool = free.empty() ? feasible : free;
  if (pool.empty()) return {};
  // Work that needs no GPU keeps off GPU nodes while others have room for it
  // (Ray's scheduler_avoid_gpu_nodes).
  if (!free.empty() && Amount(a.resources(), "GPU") <= 0) {
    std::vector<const rpc::NodeInfo*> cpu_only;
    for (auto* n : free) {
      if (Amount(n->total(), "GPU") <= 0) cpu_only.push_back(n);
    }
    if (!cpu_only.empty()) pool = std::move(cpu_only);
  }
  if (strategy == SchedulingStrategy::kSpread) return {pool[spread_turn++ % pool.size()], {}};
  if (HoldsNothing(a)) return {pool[in.random % pool.size()], {}};
  const rpc::NodeInfo* best = nullptr;
  double best_score = 0;
  const rpc::NodeInfo* owner = nullptr;
  for (auto* n : pool) {
    double score = HybridScore(*n, in.spread_threshold);
    if (!best || score < best_score) {
      best = n;
      best_score = score;
    }
    if (!a.owner_node_id().empty() && n->node_id() == a.owner_node_id()) owner = n;
  }
  if (owner && HybridScore(*owner, in.spread_threshold) <= best_score) return {owner, {}};
  return {best, {}};
}

}  // namespace fleet::gcs
