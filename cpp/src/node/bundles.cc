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
      const auto& p = msg.prepare_bundles();
      std::string hex = ToHex(p.pg_id());
      BundleReservation res;
      std::string error;
      for (const auto& b : p.bundles()) {
        ResourceSet want = FromDoubles({b.resources().begin(), b.resources().end()});
        auto alloc = resources_.TryAcquire(want);
        if (!alloc) {
          error = "bundle " + std::to_string(b.index()) + " " + Describe(want) +
                  " does not fit what is free on this node (" + Describe(resources_.available()) + ")";
          break;
        }
        res.allocs.push_back(std::move(*alloc));
        std::string idx = std::to_string(b.index());
        for (auto& [k, v] : want) {
          res.group[k + "_group_" + idx + "_" + hex] += v;
          res.group[k + "_group_" + hex] += v;
        }
        res.group["bundle_group_" + idx + "_" + hex] += kBundleUnits;
        res.group["bundle_group_" + hex] += kBundleUnits;
      }
      if (!error.empty()) {
        for (auto& a : res.allocs) resources_.Release(a);
        reply.mutable_prepare_bundles_reply()->set_error(error);
      } else {
        ReleaseBundles(p.pg_id());  // a retried prepare replaces the old one
        bundles_[p.pg_id()] = std::move(res);
        reply.mutable_prepare_bundles_reply()->set_ok(true);
        MarkResourcesDirty();
      }
      break;
    }
    case rpc::Envelope::kCommitBundles: {
      auto it = bundles_.find(msg.commit_bundles().pg_id());
      if (it != bundles_.end() && !it->second.committed) {
        it->second.committed = true;
        resources_.Add(it->second.group);
        MarkResourcesDirty();
        Schedule();
      }
      reply.mutable_commit_bundles_reply();
      break;
    }
    case rpc::Envelope::kReleaseBundles:
      ReleaseBundles(msg.release_bundles().pg_id());
      reply.mutable_release_bundles_reply();
      break;
    default:
      return;
  }
  if (msg.request_id() != 0) conn->Reply(msg.request_id(), reply);
}

void NodeServer::ReleaseBundles(const std::string& pg_id) {
  auto it = bundles_.find(pg_id);
  if (it == bundles_.end()) return;
  BundleReservation res = std::move(it->second);
  bundles_.erase(it);
  if (res.committed) {
    // Leases that hold the group's resources end with it.
    std::vector<std::string> revoked;
    for (auto& [wid, lease] : leases_) {
      for (auto& [k, v] : lease.alloc.amounts) {
        if (res.group.count(k)) {
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
    resources_.Remove(res.group);
    // Requests waiting for the group's resources can never be served now.
    for (auto p = pending_.begin(); p != pending_.end();) {
      bool uses = false;
      for (auto& [k, v] : p->resources) uses = uses || res.group.count(k);
      if (!uses) {
        ++p;
        continue;
      }
      if (auto c = p->conn.lock()) {
        rpc::Envelope r;
        r.mutable_lease_granted()->set_error("its placement group was removed");
        c->Reply(p->request_id, r);
      }
      p = pending_.erase(p);
    }
  }
  for (auto& a : res.allocs) resources_.Release(a);
  MarkResourcesDirty();
  Schedule();
}

}  // namespace fleet::node
