// Lease placement policies, one per file: pure functions of the request, the
// cluster view and this node (no sockets, no timers, no clock). LeaseScheduler
// picks the policy and applies the result. See docs/architecture.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "node/scheduling/cluster_view.h"

namespace fleet::node::scheduling {

// ---- shared (policy_common.cc)
// Whether that node's totals cover the request.
bool FeasibleOn(const RemoteNode& node, const LeaseRequest& r);
// Whether any node (this one included) could ever run it.
bool FeasibleAnywhere(const LeaseRequest& r, const ClusterView& view, const LocalNode& local);
// Ray's critical resource utilization: the largest fraction in use of CPU,
// memory and object_store_memory (resources a node has none of are skipped).
double CriticalUtilization(const ResourceSet& total, const ResourceSet& free);
// A node's hybrid score: its critical utilization, or 0 below `spread_threshold`.
double HybridScore(const ResourceSet& total, const ResourceSet& free, double spread_threshold);
// Whether the node has GPUs (CPU-only work avoids such nodes while others fit).
bool HasGpu(const ResourceSet& total);

// ---- policy_default.cc: Ray's hybrid policy. Among the nodes (this one
// included) whose totals and labels fit the request, those with the
// resources free now first, else all of them: each node scores its critical
// utilization, counted as 0 below `spread_threshold` (Ray's
// scheduler_spread_threshold, default 0.5). This node wins when its score is
// no higher than the best; otherwise the lowest score (ties: smallest id).
// So work packs here until this node is half used, then spreads to the
// emptiest node. Work that needs no GPU first tries the nodes without GPUs
// that have it free now (Ray's scheduler_avoid_gpu_nodes). Infeasible
// everywhere: queue here (warned, placed again when the view changes).
Placement PlaceDefault(const LeaseRequest& r, const ClusterView& view, const LocalNode& local,
                       double spread_threshold);

// ---- policy_spread.cc: round robin over the nodes (this one included) that
// could run it, preferring those with the resources free now. `turn` is the
// round-robin position; it advances when a node is picked. Infeasible
// everywhere: queue here.
Placement PlaceSpread(const LeaseRequest& r, const ClusterView& view, const LocalNode& local,
                      uint64_t& turn);

// ---- policy_node_affinity.cc: that node. Dead or unknown: an error (hard),
// or nullopt (soft: use the default policy). A soft affinity to a node that
// could never run it is nullopt too.
std::optional<Placement> PlaceNodeAffinity(const LeaseRequest& r, const ClusterView& view,
                                           const LocalNode& local);

}  // namespace fleet::node::scheduling
