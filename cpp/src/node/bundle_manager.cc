// BundleManager implementation; see bundle_manager.h.
#include "node/bundle_manager.h"

#include <algorithm>

#include "common/ids.h"

namespace fleet::node {

namespace {
constexpr int64_t kBundleUnits = 1000 * kUnit;

// The group resources whose leases get device ids from bundle `index`'s GPUs.
std::vector<std::string> GpuNames(const std::string& pg_id, int index) {
  std::string hex = ToHex(pg_id);
  return {"GPU_group_" + std::to_string(index) + "_" + hex, "GPU_group_" + hex};
}
}  // namespace

Status BundleManager::Prepare(const std::string& pg_id, const std::vector<BundleSpec>& bundles) {
  std::string hex = ToHex(pg_id);
  std::map<int, Reservation> round;
  std::string error;
  for (const auto& b : bundles) {
    auto alloc = resources_.TryAcquire(b.resources);
    if (!alloc) {
      error = "bundle " + std::to_string(b.index) + " " + Describe(b.resources) +
              " does not fit what is free on this node (" + Describe(resources_.available()) + ")";
      break;
    }
    Reservation res;
    res.alloc = std::move(*alloc);
    std::string idx = std::to_string(b.index);
    for (auto& [k, v] : b.resources) {
      res.group[k + "_group_" + idx + "_" + hex] += v;
      res.group[k + "_group_" + hex] += v;
    }
    res.group["bundle_group_" + idx + "_" + hex] += kBundleUnits;
    res.group["bundle_group_" + hex] += kBundleUnits;
    round[b.index] = std::move(res);
  }
  if (!error.empty()) {
    for (auto& [i, r] : round) resources_.Release(r.alloc);
    return Status::Invalid(error);
  }
  std::vector<int> indexes;
  for (auto& [i, r] : round) indexes.push_back(i);
  Release(pg_id, indexes);  // a retried prepare replaces the same bundles
  auto& group = bundles_[pg_id];
  for (auto& [i, r] : round) group[i] = std::move(r);
  hooks_.resources_changed();
  return Status::OK();
}

bool BundleManager::Commit(const std::string& pg_id) {
  auto it = bundles_.find(pg_id);
  bool changed = false;
  if (it != bundles_.end()) {
    for (auto& [i, r] : it->second) {
      if (r.committed) continue;
      r.committed = true;
      resources_.Add(r.group);
      for (auto& name : GpuNames(pg_id, i)) resources_.AddDevices(name, r.alloc.gpus);
      changed = true;
    }
  }
  if (changed) {
    hooks_.resources_changed();
    hooks_.schedule();
  }
  return changed;
}

bool BundleManager::Release(const std::string& pg_id, const std::vector<int>& indexes) {
  auto it = bundles_.find(pg_id);
  if (it == bundles_.end()) return false;
  std::vector<std::pair<int, Reservation>> released;
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
    hooks_.revoke(names);  // before the resources go: revoked leases give theirs back first
    resources_.Remove(removed);
  }
  for (auto& [index, r] : released) {
    if (!r.committed) continue;
    for (auto& name : GpuNames(pg_id, index)) resources_.RemoveDevices(name, r.alloc.gpus);
  }
  for (auto& [index, r] : released) resources_.Release(r.alloc);
  if (released.empty()) return false;
  hooks_.resources_changed();
  hooks_.schedule();
  return true;
}

std::vector<int> BundleManager::Indexes(const std::string& pg_id) const {
  std::vector<int> out;
  auto it = bundles_.find(pg_id);
  if (it == bundles_.end()) return out;
  for (auto& [i, r] : it->second) out.push_back(i);
  return out;
}

void BundleManager::HandlePrepareBundles(ClientSession& s, uint64_t request_id,
                                         const rpc::PrepareBundles& p) {
  // Adds to what the group already holds here (a lost bundle placed again
  // lands beside the group's others); all of this round or none.
  std::vector<BundleSpec> specs;
  specs.reserve(p.bundles_size());
  for (const auto& b : p.bundles()) {
    specs.push_back({b.index(), FromDoubles({b.resources().begin(), b.resources().end()})});
  }
  Status st = Prepare(p.pg_id(), specs);
  if (request_id == 0) return;
  rpc::Envelope reply;
  if (!st.ok()) {
    reply.mutable_prepare_bundles_reply()->set_error(st.message());
  } else {
    reply.mutable_prepare_bundles_reply()->set_ok(true);
  }
  s.conn->Reply(request_id, reply);
}

void BundleManager::HandleCommitBundles(ClientSession& s, uint64_t request_id,
                                        const rpc::CommitBundles& m) {
  Commit(m.pg_id());
  if (request_id == 0) return;
  rpc::Envelope reply;
  reply.mutable_commit_bundles_reply();
  s.conn->Reply(request_id, reply);
}

void BundleManager::HandleReleaseBundles(ClientSession& s, uint64_t request_id,
                                         const rpc::ReleaseBundles& m) {
  Release(m.pg_id(), {m.indexes().begin(), m.indexes().end()});
  if (request_id == 0) return;
  rpc::Envelope reply;
  reply.mutable_release_bundles_reply();
  s.conn->Reply(request_id, reply);
}

}  // namespace fleet::node
