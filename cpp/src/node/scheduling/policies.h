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
// Fraction of CPUs in use (0 when the node has none).
double Load(const ResourceSet& total, const ResourceSet& free);
// The least loaded other node that could run it (and, with `need_free`, has
// it free now); empty if none. O(nodes).
std::string LeastLoadedRemote(const LeaseRequest& r, const ClusterView& view, bool need_free);

// ---- policy_default.cc: hybrid, as Ray's, simplified. Here while it fits
// free resources here; else the least loaded node with them free; else here
// if this node could ever run it; else the least loaded node that could;
// else queue here (infeasible: warned, placed again when the view changes).
Placement PlaceDefault(const LeaseRequest& r, const ClusterView& view, const LocalNode& local);

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
