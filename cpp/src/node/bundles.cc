// NodeServer: placement group bundles on this node. See node_server.h.
//
// fleet-gcs reserves a group's bundles in two phases, so that a group is
// placed on all its nodes or on none:
//  - PrepareBundles takes each bundle's resources from what is free here
//    (all of this node's bundles of the group, or none) and holds them;
//  - CommitBundles makes them usable: for each bundle i and resource R of
//    amount a it adds "R_group_i_<pg>" and "R_group_<pg>" (a each), plus
//    "bundle_group_i_<pg>" and "bundle_group_<pg>" (1000 each), as Ray names
//    them. Tasks and actors in the group ask for those resources;
//  - ReleaseBundles undoes either: the group resources go, the held
//    resources come back, and workers still leased with the group's
//    resources are killed (their tasks and actors end with the group).
#include <algorithm>
#include <set>

#include "common/ids.h"
#include "common/logging.h"
#include "node/node_server.h"

namespace fleet::node {

namespace {
constexpr int64_t kBundleUnits = 1000 * kUnit;
}

void NodeServer::OnBundleMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  rpc::Envelope reply;
  switch (msg.body_case()) {
    case rpc::Envelope::kPrepareBundles: {
      // Adds to what the group already holds here (a lost bundle placed
      // again lands beside the group's others); all of this round or none.
      const auto& p = msg.prepare_bundles();
      std::string hex = ToHex(p.pg_id());
      std::map<int, BundleReservation> round;
      std::string error;
      for (const auto& b : p.bundles()) {
        ResourceSet want = FromDoubles({b.resources().begin(), b.resources().end()});
        auto alloc = resources_.TryAcquire(want);
        if (!alloc) {
          error = "bundle " + std::to_string(b.index()) + " " + Describe(want) +
                  " does not fit what is free on this node (" + Describe(resources_.available()) + ")";
          break;
        }
        BundleReservation res;
        res.alloc = std::move(*alloc);
        std::string idx = std::to_string(b.index());
        for (auto& [k, v] : want) {
          res.group[k + "_group_" + idx + "_" + hex] += v;
          res.group[k + "_group_" + hex] += v;
        }
        res.group["bundle_group_" + idx + "_" + hex] += kBundleUnits;
        res.group["bundle_group_" + hex] += kBundleUnits;
        round[b.index()] = std::move(res);
      }
      if (!error.empty()) {
        for (auto& [i, r] : round) resources_.Release(r.alloc);
        reply.mutable_prepare_bundles_reply()->set_error(error);
      } else {
        std::vector<int> indexes;
        for (auto& [i, r] : round) indexes.push_back(i);
        ReleaseBundles(p.pg_id(), indexes);  // a retried prepare replaces the same bundles
        auto& group = bundles_[p.pg_id()];
        for (auto& [i, r] : round) group[i] = std::move(r);
        reply.mutable_prepare_bundles_reply()->set_ok(true);
        MarkResourcesDirty();
      }
      break;
    }
    case rpc::Envelope::kCommitBundles: {
      auto it = bundles_.find(msg.commit_bundles().pg_id());
      bool changed = false;
      if (it != bundles_.end()) {
        for (auto& [i, r] : it->second) {
          if (r.committed) continue;
          r.committed = true;
          resources_.Add(r.group);
          changed = true;
        }
      }
      if (changed) {
        MarkResourcesDirty();
        Schedule();
      }
      reply.mutable_commit_bundles_reply();
      break;
    }
    case rpc::Envelope::kReleaseBundles: {
      const auto& r = msg.release_bundles();
      ReleaseBundles(r.pg_id(), {r.indexes().begin(), r.indexes().end()});
      reply.mutable_release_bundles_reply();
      break;
    }
    default:
      return;
  }
  if (msg.request_id() != 0) conn->Reply(msg.request_id(), reply);
}

void NodeServer::ReleaseBundles(const std::string& pg_id, const std::vector<int>& indexes) {
  auto it = bundles_.find(pg_id);
  if (it == bundles_.end()) return;
  std::vector<std::pair<int, BundleReservation>> released;
  for (auto b = it->second.begin(); b != it->second.end();) {
    if (indexes.empty() || std::find(indexes.begin(), indexes.end(), b->first) != indexes.end()) {
      released.emplace_back(b->first, std::move(b->second));
      b = it->second.erase(b);
    } else {
      ++b;
    }
  }
  bool all = it->second.empty();
  if (all) bundles_.erase(it);
  // Resources that identify the released bundles: their own
  // "<R>_group_<i>_<pg>" ones, and the group-wide ones when the whole group
  // goes (a lease holding only group-wide amounts may run in another bundle).
  const std::string hex = ToHex(pg_id);
  std::set<std::string> names;
  ResourceSet removed;
  for (auto& [index, r] : released) {
    if (!r.committed) continue;
    const std::string own = "_group_" + std::to_string(index) + "_" + hex;
    for (auto& [k, v] : r.group) {
      removed[k] += v;
      bool specific = k.size() >= own.size() && k.compare(k.size() - own.size(), own.size(), own) == 0;
      if (specific || all) names.insert(k);
    }
  }
  if (!removed.empty()) {
    // Leases that hold the released bundles' resources end with them.
    std::vector<std::string> revoked;
    for (auto& [wid, lease] : leases_) {
      for (auto& [k, v] : lease.alloc.amounts) {
        if (names.count(k)) {
          revoked.push_back(wid);
          break;
        }
      }
    }
    for (auto& wid : revoked) {
      resources_.Release(leases_[wid].alloc);
      leases_.erase(wid);
      KillWorker(wid);
    }
    resources_.Remove(removed);
    // Requests waiting for those resources can never be served now.
    for (auto p = pending_.begin(); p != pending_.end();) {
      bool uses = false;
      for (auto& [k, v] : p->resources) uses = uses || names.count(k);
      if (!uses) {
        ++p;
        continue;
      }
      if (auto c = p->conn.lock()) {
        rpc::Envelope r;
        r.mutable_lease_granted()->set_error("its placement group bundle was removed");
        c->Reply(p->request_id, r);
      }
      p = pending_.erase(p);
    }
  }
  for (auto& [index, r] : released) resources_.Release(r.alloc);
  if (released.empty()) return;
  MarkResourcesDirty();
  Schedule();
}

}  // namespace fleet::node
