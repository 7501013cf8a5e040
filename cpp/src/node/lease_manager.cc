// LeaseManager implementation; see lease_manager.h.
#include "node/lease_manager.h"

#include "common/logging.h"
#include "common/status.h"

namespace fleet::node {

using scheduling::Placement;

void LeaseManager::HandleRequestLease(ClientSession& s, uint64_t request_id,
                                      const rpc::RequestLease& r) {
  if (const std::string* why = hooks_.start_failure()) {
    rpc::Envelope reply;
    reply.mutable_error()->set_code(static_cast<int>(StatusCode::kInternal));
    reply.mutable_error()->set_message("workers on this node fail to start: " + *why);
    s.conn->Reply(request_id, reply);
    return;
  }
  Request e;
  e.conn = s.conn;
  e.request_id = request_id;
  e.req.resources = FromDoubles({r.resources().begin(), r.resources().end()});
  e.req.placement = FromDoubles({r.placement().begin(), r.placement().end()});
  e.req.strategy = ParseSchedulingStrategy(r.strategy());
  e.req.affinity_node_id = r.affinity_node_id();
  e.req.affinity_soft = r.affinity_soft();
  e.req.spilled = r.spilled();
  if (!r.label_selector().empty()) e.req.labels = LabelSelector::Parse(r.label_selector());
  e.actor_class = r.actor_class();
  e.description = r.description();
  e.key = r.scheduling_key();
  e.since = std::chrono::steady_clock::now();
  pending_.push_back(std::move(e));
  Schedule();
}

void LeaseManager::HandleReturnLease(ClientSession& s, uint64_t request_id,
                                     const rpc::ReturnLease& r) {
  auto it = leases_.find(r.worker_id());
  if (it != leases_.end() && it->second.holder.lock() == s.conn) {
    resources_.Release(it->second.alloc);
    leases_.erase(it);
    hooks_.resources_changed();
    if (r.worker_failed()) {
      hooks_.kill_worker(r.worker_id());
    } else {
      pool_.PushIdle(r.worker_id(), std::chrono::steady_clock::now());
    }
    Schedule();
  }
  if (request_id != 0) {
    rpc::Envelope reply;
    reply.mutable_return_lease_reply();
    s.conn->Reply(request_id, reply);
  }
}

void LeaseManager::HandleCancelLeaseRequests(ClientSession& s, uint64_t,
                                             const rpc::CancelLeaseRequests& m) {
  const std::string& key = m.scheduling_key();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->key == key && it->conn.lock() == s.conn) {
      rpc::Envelope r;
      r.mutable_lease_granted();  // empty worker id = canceled
      s.conn->Reply(it->request_id, r);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void LeaseManager::HandleNotifyBlocked(ClientSession& s, uint64_t, const rpc::NotifyBlocked& m) {
  if (s.worker_id.empty()) return;
  auto it = leases_.find(s.worker_id);
  if (it == leases_.end()) return;
  bool blocked = m.blocked();
  if (blocked == it->second.blocked) return;
  it->second.blocked = blocked;
  if (blocked) {
    resources_.ReleaseCpu(it->second.alloc);
  } else {
    resources_.ForceAcquireCpu(it->second.alloc);
  }
  hooks_.resources_changed();
  if (blocked) Schedule();
}

void LeaseManager::Schedule() {
  if (stopped_) return;
  int need_workers = 0;
  // Resources of requests that fit but wait for a worker stay reserved for
  // the rest of this pass, so later requests do not count them twice.
  std::vector<Allocation> reserved;
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto conn = it->conn.lock();
    if (!conn || conn->closed()) {
      it = pending_.erase(it);
      continue;
    }
    Placement p = scheduler_.Place(it->req, resources_);
    if (p.kind == Placement::Kind::kFail || p.kind == Placement::Kind::kSpill) {
      rpc::Envelope reply;
      auto* g = reply.mutable_lease_granted();
      if (p.kind == Placement::Kind::kFail) {
        g->set_error(p.error);
      } else {
        g->set_spillback_node_id(p.node_id);
        g->set_spillback_address(p.address);
      }
      conn->Reply(it->request_id, reply);
      it = pending_.erase(it);
      continue;
    }
    if (!resources_.Feasible(it->req.resources) || !resources_.Feasible(it->req.placement) ||
        !scheduler_.LabelsMatchHere(it->req)) {
      ++it;
      continue;
    }
    auto alloc = resources_.TryAcquire(it->req.resources);
    if (!alloc) {
      ++it;
      continue;
    }
    auto worker = pool_.PopIdle(GpuKey(alloc->GpuIds()));
    if (!worker) {
      reserved.push_back(std::move(*alloc));
      need_workers++;
      ++it;
      continue;
    }
    Lease lease;
    lease.alloc = std::move(*alloc);
    lease.holder = conn;
    rpc::Envelope reply;
    auto* g = reply.mutable_lease_granted();
    g->set_worker_id(worker->id);
    g->set_worker_address(worker->address);
    g->set_worker_pid(worker->pid);
    g->set_node_id(scheduler_.local_id());
    for (int id : lease.alloc.GpuIds()) g->add_gpu_ids(id);
    leases_[worker->id] = std::move(lease);
    if (!it->actor_class.empty()) {
      pool_.MarkDedicated(worker->id);
      hooks_.dedicated(worker->id, it->actor_class);
    }
    conn->Reply(it->request_id, reply);
    it = pending_.erase(it);
    hooks_.resources_changed();
  }
  for (auto& a : reserved) resources_.Release(a);
  if (need_workers > 0) hooks_.start_workers(pool_.NumToStart(need_workers));
}

void LeaseManager::OnWorkerGone(const std::string& worker_id) {
  auto it = leases_.find(worker_id);
  if (it == leases_.end()) return;
  resources_.Release(it->second.alloc);
  leases_.erase(it);
  hooks_.resources_changed();
}

void LeaseManager::Revoke(const std::vector<std::string>& worker_ids) {
  for (auto& wid : worker_ids) {
    resources_.Release(leases_[wid].alloc);
    leases_.erase(wid);
    hooks_.kill_worker(wid);
  }
}

void LeaseManager::OnClientGone(const rpc::ConnectionPtr& conn) {
  std::erase_if(pending_, [&](const Request& e) {
    auto c = e.conn.lock();
    return !c || c == conn;
  });
  std::vector<std::string> revoked;
  for (auto& [wid, lease] : leases_) {
    auto h = lease.holder.lock();
    if (!h || h == conn) revoked.push_back(wid);
  }
  Revoke(revoked);  // their workers may still run the departed client's tasks
  if (!revoked.empty()) {
    hooks_.resources_changed();
    Schedule();
  }
}

void LeaseManager::RevokeUsing(const std::set<std::string>& names) {
  std::vector<std::string> revoked;
  for (auto& [wid, lease] : leases_) {
    for (auto& [k, v] : lease.alloc.amounts) {
      if (names.count(k)) {
        revoked.push_back(wid);
        break;
      }
    }
  }
  Revoke(revoked);
  for (auto p = pending_.begin(); p != pending_.end();) {
    bool uses = false;
    for (auto& [k, v] : p->req.resources) uses = uses || names.count(k);
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

void LeaseManager::FailPendingRequests(const std::string& why) {
  for (auto& e : pending_) {
    if (auto c = e.conn.lock()) {
      rpc::Envelope r;
      r.mutable_error()->set_code(static_cast<int>(StatusCode::kInternal));
      r.mutable_error()->set_message("workers on this node fail to start: " + why);
      c->Reply(e.request_id, r);
    }
  }
  pending_.clear();
}

void LeaseManager::WarnInfeasible(std::chrono::steady_clock::time_point now,
                                  std::chrono::milliseconds warning_after) {
  for (auto& e : pending_) {
    if (e.warned || scheduler_.FeasibleAnywhere(e.req, resources_)) continue;
    if (now - e.since < warning_after) continue;
    e.warned = true;
    std::string text = "The task '" + e.description + "' requires " + Describe(e.req.resources) +
                       ", which no node in the cluster can satisfy (" +
                       std::to_string(scheduler_.view().size() + 1) + " node(s) alive; this one has " +
                       Describe(resources_.total()) +
                       "). It stays pending until a node with these resources joins.";
    FLEET_LOG(WARNING) << text;
    if (auto c = e.conn.lock()) {
      rpc::Envelope w;
      w.mutable_warning()->set_message(text);
      c->Send(w);
    }
  }
}

void LeaseManager::AddDemands(rpc::ReportResources* r) const {
  std::map<std::pair<ResourceSet, bool>, std::pair<int, std::string>> demands;
  for (auto& e : pending_) {
    auto& d = demands[{e.req.resources, !scheduler_.FeasibleAnywhere(e.req, resources_)}];
    d.first++;
    if (d.second.empty()) d.second = e.description;
  }
  for (auto& [shape, d] : demands) {
    auto* out = r->add_pending();
    for (auto& [k, v] : ToDoubles(shape.first)) (*out->mutable_shape())[k] = v;
    out->set_infeasible(shape.second);
    out->set_count(d.first);
    out->set_description(d.second);
  }
}

}  // namespace fleet::node
