// NodeServer: where a lease request runs in a cluster of several nodes
// (spillback), and the cluster view fleet-gcs pushes. See node_server.h.
//
// Policy (as Ray's hybrid policy, simplified):
//  - default: run here while this node has the resources free now; else
//    spill to the least loaded other node that has them free now; else
//    wait here if this node could ever run it; else spill to the least
//    loaded node that could; else wait (infeasible: warned, re-placed when
//    the cluster changes).
//  - SPREAD: round robin over the nodes that could run it, preferring those
//    with the resources free now.
//  - NODE_AFFINITY: that node; if it is dead or unknown, an error (hard) or
//    the default policy (soft). A soft affinity to a node that could never
//    run it also falls back to the default.
// A request another node spilled here is never spilled again (it waits
// here): views are a few milliseconds stale, and ping-pong is worse.
#include <algorithm>

#include "common/ids.h"
#include "common/logging.h"
#include "node/node_server.h"

namespace fleet::node {

namespace {

ResourceSet ToSet(const google::protobuf::Map<std::string, double>& m) {
  return FromDoubles(std::map<std::string, double>(m.begin(), m.end()));
}

// Fraction of CPUs in use (0 when the node has none).
double Load(const ResourceSet& total, const ResourceSet& free) {
  auto t = total.find("CPU");
  if (t == total.end() || t->second <= 0) return 0;
  auto f = free.find("CPU");
  int64_t free_cpu = f == free.end() ? 0 : f->second;
  return 1.0 - static_cast<double>(free_cpu) / static_cast<double>(t->second);
}

}  // namespace

void NodeServer::OnGcsMessage(rpc::Envelope& msg) {
  if (msg.has_cluster_view()) {
    cluster_.clear();
    cluster_free_.clear();
    for (auto& n : *msg.mutable_cluster_view()->mutable_nodes()) {
      if (!n.alive() || n.node_id() == node_id_) continue;
      cluster_free_[n.node_id()] = ToSet(n.available());
      cluster_[n.node_id()] = std::move(n);
    }
    // Peers that left: their connections go (pulls from them fail).
    for (auto it = peer_nodes_.begin(); it != peer_nodes_.end();) {
      if (!cluster_.count(it->first)) {
        it->second->Close();
        it = peer_nodes_.erase(it);
      } else {
        ++it;
      }
    }
    Schedule();
  } else if (msg.has_release_bundles() || msg.has_prepare_bundles() || msg.has_commit_bundles()) {
    OnBundleMessage(gcs_, msg);
  }
}

bool NodeServer::FeasibleRemote(const std::string& node_id, const LeaseRequestEntry& e) const {
  auto it = cluster_.find(node_id);
  if (it == cluster_.end()) return false;
  ResourceSet total = ToSet(it->second.total());
  return Covers(total, e.resources) && Covers(total, e.placement);
}

bool NodeServer::FeasibleAnywhere(const LeaseRequestEntry& e) const {
  if (Feasible(e)) return true;
  for (auto& [id, n] : cluster_) {
    if (FeasibleRemote(id, e)) return true;
  }
  return false;
}

std::string NodeServer::LeastLoadedRemote(const LeaseRequestEntry& e, bool need_free) const {
  std::string best;
  double best_load = 2;
  for (auto& [id, n] : cluster_) {
    if (!FeasibleRemote(id, e)) continue;
    const ResourceSet& free = cluster_free_.at(id);
    if (need_free && !Covers(free, e.resources)) continue;
    double load = Load(ToSet(n.total()), free);
    if (load < best_load) {
      best_load = load;
      best = id;
    }
  }
  return best;
}

NodeServer::Placement NodeServer::Place(LeaseRequestEntry& e, bool fits_here) {
  auto spill_to = [&](const std::string& id) -> Placement {
    // Count it against that node's free resources until the next view.
    auto& free = cluster_free_[id];
    for (auto& [k, v] : e.resources) free[k] -= v;
    return {id, ""};
  };
  if (e.strategy == "NODE_AFFINITY") {
    const std::string& target = e.affinity_node_id;
    if (target == node_id_) {
      if (Feasible(e) || !e.affinity_soft) {
        e.placed = true;
        return {};
      }
    } else if (cluster_.count(target)) {
      if (FeasibleRemote(target, e) || !e.affinity_soft) return spill_to(target);
    } else if (!e.affinity_soft) {
      return {"", "NodeAffinitySchedulingStrategy(node_id=" + ToHex(target) +
                      ", soft=False): that node does not exist or is dead"};
    }
    // soft: as the default policy
  } else if (e.strategy == "SPREAD") {
    std::vector<std::string> feasible, free;
    if (Feasible(e)) {
      feasible.push_back(node_id_);
      if (fits_here) free.push_back(node_id_);
    }
    for (auto& [id, n] : cluster_) {
      if (!FeasibleRemote(id, e)) continue;
      feasible.push_back(id);
      if (Covers(cluster_free_[id], e.resources)) free.push_back(id);
    }
    auto& pool = free.empty() ? feasible : free;
    if (pool.empty()) return {};  // infeasible everywhere: wait here (warned)
    std::sort(pool.begin(), pool.end());
    const std::string& pick = pool[spread_next_++ % pool.size()];
    if (pick == node_id_) {
      e.placed = true;
      return {};
    }
    return spill_to(pick);
  }
  if (fits_here) return {};
  if (std::string id = LeastLoadedRemote(e, true); !id.empty()) return spill_to(id);
  if (Feasible(e)) return {};
  if (std::string id = LeastLoadedRemote(e, false); !id.empty()) return spill_to(id);
  return {};
}

}  // namespace fleet::node
