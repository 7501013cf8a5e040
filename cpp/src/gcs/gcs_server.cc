// GcsServer implementation; see gcs_server.h.
#include "gcs/gcs_server.h"

#include <asio/post.hpp>

#include "common/ids.h"
#include "common/logging.h"

namespace fleet::gcs {

namespace {
int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

GcsServer::GcsServer(asio::io_context& io, GcsOptions options)
    : io_(io), options_(std::move(options)), health_timer_(io), view_timer_(io),
      actors_(
          io, options_.token,
          [this] {
            std::vector<rpc::NodeInfo> alive;
            for (auto& [id, n] : nodes_) {
              if (n.info.alive()) alive.push_back(n.info);
            }
            return alive;
          },
          [this](uint32_t job) -> rpc::ConnectionPtr {
            auto it = driver_of_job_.find(job);
            return it == driver_of_job_.end() ? nullptr : it->second.lock();
          }),
      groups_(
          io,
          [this] {
            std::vector<const rpc::NodeInfo*> alive;
            for (auto& [id, n] : nodes_) {
              if (n.info.alive()) alive.push_back(&n.info);
            }
            return alive;
          },
          [this](const rpc::NodeInfo& n) { return actors_.NodeConnection(n); }) {
  actors_.set_spread_threshold(options_.spread_threshold);
  RegisterHandlers();
}

void GcsServer::ViewChanged() {
  if (view_armed_) return;
  view_armed_ = true;
  view_timer_.expires_after(std::chrono::milliseconds(10));
  view_timer_.async_wait([this](const asio::error_code& ec) {
    view_armed_ = false;
    if (!ec) BroadcastView();
  });
}

void GcsServer::BroadcastView() {
  rpc::Envelope m;
  auto* v = m.mutable_cluster_view();
  for (auto& [id, n] : nodes_) {
    if (!n.info.alive()) continue;
    auto* out = v->add_nodes();
    *out = n.info;
    out->clear_pending();
  }
  for (auto& [id, n] : nodes_) {
    if (!n.info.alive()) continue;
    if (auto c = n.conn.lock()) c->Send(m);
  }
  // Resources changed (a bundle committed, work finished): place what waits.
  groups_.OnNodesChanged();
  actors_.OnNodesChanged();
}

Result<int> GcsServer::Start() {
  listener_ = std::make_unique<rpc::Listener>(
      io_, options_.token, [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnMessage(c, m); },
      [this](const rpc::ConnectionPtr& c, const Status& s) { OnClose(c, s); });
  auto port = listener_->ListenTcp(options_.host, options_.port);
  if (!port.ok()) return port.status();
  CheckHealth();
  return port.value();
}

void GcsServer::Stop() {
  if (listener_) listener_->Close();
  health_timer_.cancel();
}

void GcsServer::MarkDead(NodeEntry& node, const std::string& reason) {
  if (!node.info.alive()) return;
  node.info.set_alive(false);
  node.info.set_death_reason(reason);
  node.info.clear_available();
  node.info.clear_pending();
  FLEET_LOG(WARNING) << "node " << ToHex(node.info.node_id()) << " (" << node.info.node_ip()
                     << ") is dead: " << reason;
  NodeId id = NodeId::FromBinary(node.info.node_id());
  asio::post(io_, [this, id] {
    groups_.OnNodeDead(id);
    actors_.OnNodesChanged();
  });
  ViewChanged();
}

void GcsServer::CheckHealth() {
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, node] : nodes_) {
    if (node.info.alive() &&
        now - node.last_report > std::chrono::milliseconds(options_.health_timeout_ms)) {
      MarkDead(node, "missed health checks for " + std::to_string(options_.health_timeout_ms) + " ms");
    }
  }
  actors_.Tick();
  health_timer_.expires_after(std::chrono::milliseconds(options_.health_check_period_ms));
  health_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) CheckHealth();
  });
}

void GcsServer::OnClose(const rpc::ConnectionPtr& conn, const Status&) {
  for (auto& [id, node] : nodes_) {
    if (node.conn.lock() == conn) MarkDead(node, "its fleet-node process exited or disconnected");
  }
  auto it = job_of_conn_.find(conn.get());
  if (it != job_of_conn_.end()) {
    auto& job = jobs_[it->second];
    job.set_finished(true);
    job.set_end_time_ms(NowMs());
    uint32_t job_id = it->second;
    job_of_conn_.erase(it);
    driver_of_job_.erase(job_id);
    actors_.OnJobFinished(job_id);
    groups_.OnJobFinished(job_id);
  }
  log_subscribers_.erase(conn.get());
  actors_.OnConnectionClosed(conn.get());
}

void GcsServer::RegisterHandlers() {
  using rpc::PeerRole;
  using rpc::RoleBit;
  constexpr rpc::RoleMask kNode = RoleBit(PeerRole::kNode);
  constexpr rpc::RoleMask kDriver = RoleBit(PeerRole::kDriver);
  constexpr rpc::RoleMask kCaller = rpc::kClientRoles;  // drivers, workers, the CLI
  FLEET_RPC_HANDLE(dispatcher_, Hello, hello, HandleHello);
  FLEET_RPC_HANDLE(dispatcher_, RegisterNode, register_node, HandleRegisterNode, kNode);
  FLEET_RPC_HANDLE(dispatcher_, ReportResources, report_resources, HandleReportResources, kNode);
  FLEET_RPC_HANDLE(dispatcher_, LogLines, log_lines, HandleLogLines, kNode);
  FLEET_RPC_HANDLE(dispatcher_, GetNodes, get_nodes, HandleGetNodes);
  FLEET_RPC_HANDLE(dispatcher_, GetNodeStats, get_node_stats, HandleGetNodeStats);
  FLEET_RPC_HANDLE(dispatcher_, RegisterJob, register_job, HandleRegisterJob, kDriver);
  FLEET_RPC_HANDLE(dispatcher_, GetJobs, get_jobs, HandleGetJobs);
  FLEET_RPC_HANDLE(dispatcher_, KvPut, kv_put, HandleKvPut);
  FLEET_RPC_HANDLE(dispatcher_, KvGet, kv_get, HandleKvGet);
  FLEET_RPC_HANDLE(dispatcher_, KvDel, kv_del, HandleKvDel);
  FLEET_RPC_HANDLE(dispatcher_, KvKeys, kv_keys, HandleKvKeys);
  FLEET_RPC_HANDLE(dispatcher_, RegisterActor, register_actor, HandleRegisterActor, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, CreateActor, create_actor, HandleCreateActor, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, SubscribeActor, subscribe_actor, HandleSubscribeActor, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, KillActor, kill_actor, HandleKillActor, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, GetNamedActor, get_named_actor, HandleGetNamedActor, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, ListActors, list_actors, HandleListActors, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, ActorExiting, actor_exiting, HandleActorExiting,
                   RoleBit(PeerRole::kWorker));
  FLEET_RPC_HANDLE(dispatcher_, CreatePlacementGroup, create_placement_group,
                   HandleCreatePlacementGroup, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, RemovePlacementGroup, remove_placement_group,
                   HandleRemovePlacementGroup, kCaller);
  FLEET_RPC_HANDLE(dispatcher_, WaitPlacementGroup, wait_placement_group, HandleWaitPlacementGroup,
                   kCaller);
  FLEET_RPC_HANDLE(dispatcher_, GetPlacementGroups, get_placement_groups, HandleGetPlacementGroups,
                   kCaller);
}

void GcsServer::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  Status st = dispatcher_.Dispatch(conn, rpc::ParseRole(conn->hello().role()), msg);
  if (!st.ok()) rpc::Refuse(*conn, msg, st);
}

void GcsServer::Answer(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::Envelope& reply) {
  if (request_id != 0) conn->Reply(request_id, reply);
}

void GcsServer::HandleHello(const rpc::ConnectionPtr& conn, uint64_t, rpc::Hello& m) {
  if (m.role() == "driver" && m.log_to_driver()) log_subscribers_[conn.get()] = conn;
}

// From a node: to every driver that wants them.
void GcsServer::HandleLogLines(const rpc::ConnectionPtr&, uint64_t, rpc::LogLines& m) {
  rpc::Envelope out;
  out.mutable_log_lines()->Swap(&m);
  for (auto& [ptr, weak] : log_subscribers_) {
    if (auto c = weak.lock()) c->Send(out);
  }
}

void GcsServer::HandleRegisterNode(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::RegisterNode& m) {
  auto& entry = nodes_[NodeId::FromBinary(m.node().node_id())];
  entry.info = m.node();
  entry.info.set_alive(true);
  entry.info.set_start_time_ms(NowMs());
  entry.conn = conn;
  entry.last_report = std::chrono::steady_clock::now();
  FLEET_LOG(INFO) << "node " << ToHex(entry.info.node_id()) << " registered from "
                  << entry.info.node_ip();
  rpc::Envelope reply;
  reply.mutable_register_node_reply();
  Answer(conn, rid, reply);
  asio::post(io_, [this] { actors_.OnNodesChanged(); });
  ViewChanged();
}

// A push, no reply.
void GcsServer::HandleReportResources(const rpc::ConnectionPtr&, uint64_t, rpc::ReportResources& r) {
  auto it = nodes_.find(NodeId::FromBinary(r.node_id()));
  if (it == nodes_.end() || !it->second.info.alive()) return;
  auto& info = it->second.info;
  // Compared in place (a node may carry thousands of placement group
  // resources): no copies unless something changed.
  auto same = [](const google::protobuf::Map<std::string, double>& a,
                 const google::protobuf::Map<std::string, double>& b) {
    if (a.size() != b.size()) return false;
    for (auto& [k, v] : a) {
      auto f = b.find(k);
      if (f == b.end() || f->second != v) return false;
    }
    return true;
  };
  bool changed = !same(info.available(), r.available()) ||
                 (r.total_size() > 0 && !same(info.total(), r.total()));
  if (changed) {
    info.mutable_available()->swap(*r.mutable_available());
    if (r.total_size() > 0) info.mutable_total()->swap(*r.mutable_total());
  }
  info.mutable_pending()->Swap(r.mutable_pending());
  it->second.last_report = std::chrono::steady_clock::now();
  actors_.OnNodeReport(it->first);
  if (changed) ViewChanged();
}

void GcsServer::HandleGetNodes(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::GetNodes&) {
  rpc::Envelope reply;
  auto* r = reply.mutable_get_nodes_reply();
  for (auto& [id, node] : nodes_) *r->add_nodes() = node.info;
  Answer(conn, rid, reply);
}

// Answers connection probes.
void GcsServer::HandleGetNodeStats(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::GetNodeStats&) {
  rpc::Envelope reply;
  reply.mutable_get_node_stats_reply();
  Answer(conn, rid, reply);
}

void GcsServer::HandleRegisterJob(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::RegisterJob& m) {
  uint32_t id = next_job_id_++;
  rpc::JobInfo job;
  job.set_job_id(id);
  job.set_driver_pid(m.driver_pid());
  job.set_namespace_(m.namespace_());
  job.set_start_time_ms(NowMs());
  jobs_[id] = job;
  job_of_conn_[conn.get()] = id;
  driver_of_job_[id] = conn;
  rpc::Envelope reply;
  reply.mutable_register_job_reply()->set_job_id(id);
  Answer(conn, rid, reply);
}

void GcsServer::HandleGetJobs(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::GetJobs&) {
  rpc::Envelope reply;
  auto* r = reply.mutable_get_jobs_reply();
  for (auto& [id, job] : jobs_) *r->add_jobs() = job;
  Answer(conn, rid, reply);
}

void GcsServer::HandleKvPut(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::KvPut& p) {
  auto it = kv_.find(p.key());
  bool added = it == kv_.end();
  if (added) {
    kv_.emplace(p.key(), std::move(*p.mutable_value()));
  } else if (p.overwrite()) {
    it->second = std::move(*p.mutable_value());
  }
  rpc::Envelope reply;
  reply.mutable_kv_put_reply()->set_added(added);
  Answer(conn, rid, reply);
}

void GcsServer::HandleKvGet(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::KvGet& m) {
  rpc::Envelope reply;
  auto* r = reply.mutable_kv_get_reply();
  auto it = kv_.find(m.key());
  if (it != kv_.end()) {
    r->set_found(true);
    r->set_value(it->second);
  }
  Answer(conn, rid, reply);
}

void GcsServer::HandleKvDel(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::KvDel& m) {
  rpc::Envelope reply;
  reply.mutable_kv_del_reply()->set_deleted(static_cast<int>(kv_.erase(m.key())));
  Answer(conn, rid, reply);
}

void GcsServer::HandleKvKeys(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::KvKeys& m) {
  rpc::Envelope reply;
  auto* r = reply.mutable_kv_keys_reply();
  const std::string& prefix = m.prefix();
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    r->add_keys(it->first);
  }
  Answer(conn, rid, reply);
}

void GcsServer::HandleRegisterActor(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::RegisterActor& m) {
  rpc::Envelope reply;
  actors_.Register(m, reply, conn);
  Answer(conn, rid, reply);
}

// A push: the actor's state changes follow as ActorUpdate pushes.
void GcsServer::HandleCreateActor(const rpc::ConnectionPtr&, uint64_t, rpc::CreateActor& m) {
  actors_.Create(m);
}

void GcsServer::HandleSubscribeActor(const rpc::ConnectionPtr& conn, uint64_t, rpc::SubscribeActor& m) {
  actors_.Subscribe(conn, ActorId::FromBinary(m.actor_id()));
}

void GcsServer::HandleKillActor(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::KillActor& m) {
  rpc::Envelope reply;
  actors_.Kill(m, reply);
  Answer(conn, rid, reply);
}

void GcsServer::HandleGetNamedActor(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::GetNamedActor& m) {
  rpc::Envelope reply;
  actors_.GetNamed(m, reply);
  Answer(conn, rid, reply);
}

void GcsServer::HandleListActors(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::ListActors&) {
  rpc::Envelope reply;
  actors_.List(reply);
  Answer(conn, rid, reply);
}

void GcsServer::HandleActorExiting(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::ActorExiting& m) {
  actors_.Exiting(m);
  rpc::Envelope reply;
  reply.mutable_actor_exiting_reply();
  Answer(conn, rid, reply);
}

void GcsServer::HandleCreatePlacementGroup(const rpc::ConnectionPtr& conn, uint64_t rid,
                                           rpc::CreatePlacementGroup& m) {
  auto job = job_of_conn_.find(conn.get());
  rpc::Envelope reply;
  groups_.Create(m, job == job_of_conn_.end() ? 0 : job->second, reply);
  Answer(conn, rid, reply);
}

void GcsServer::HandleRemovePlacementGroup(const rpc::ConnectionPtr& conn, uint64_t rid,
                                           rpc::RemovePlacementGroup& m) {
  rpc::Envelope reply;
  groups_.Remove(PlacementGroupId::FromBinary(m.pg_id()), reply);
  Answer(conn, rid, reply);
}

// Answered once the group is ready, removed, or the wait times out.
void GcsServer::HandleWaitPlacementGroup(const rpc::ConnectionPtr& conn, uint64_t rid,
                                         rpc::WaitPlacementGroup& m) {
  groups_.Wait(conn, rid, m);
}

void GcsServer::HandleGetPlacementGroups(const rpc::ConnectionPtr& conn, uint64_t rid,
                                         rpc::GetPlacementGroups& m) {
  rpc::Envelope reply;
  groups_.Get(m, reply);
  Answer(conn, rid, reply);
}

}  // namespace fleet::gcs
