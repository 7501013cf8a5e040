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
          [this](const rpc::NodeInfo& n) { return actors_.NodeConnection(n); }) {}

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
  std::string id = node.info.node_id();
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

void GcsServer::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  rpc::Envelope reply;
  switch (msg.body_case()) {
    case rpc::Envelope::kHello:
      if (msg.hello().role() == "driver" && msg.hello().log_to_driver()) {
        log_subscribers_[conn.get()] = conn;
      }
      return;
    case rpc::Envelope::kLogLines:  // from a node: to every driver that wants them
      for (auto& [ptr, weak] : log_subscribers_) {
        if (auto c = weak.lock()) c->Send(msg);
      }
      return;
    case rpc::Envelope::kCreatePlacementGroup: {
      auto job = job_of_conn_.find(conn.get());
      groups_.Create(msg.create_placement_group(), job == job_of_conn_.end() ? 0 : job->second, reply);
      break;
    }
    case rpc::Envelope::kRemovePlacementGroup:
      groups_.Remove(msg.remove_placement_group().pg_id(), reply);
      break;
    case rpc::Envelope::kWaitPlacementGroup:
      groups_.Wait(conn, msg.request_id(), msg.wait_placement_group());
      return;  // answered later
    case rpc::Envelope::kGetPlacementGroups:
      groups_.Get(msg.get_placement_groups(), reply);
      break;
    case rpc::Envelope::kRegisterNode: {
      auto& entry = nodes_[msg.register_node().node().node_id()];
      entry.info = msg.register_node().node();
      entry.info.set_alive(true);
      entry.info.set_start_time_ms(NowMs());
      entry.conn = conn;
      entry.last_report = std::chrono::steady_clock::now();
      FLEET_LOG(INFO) << "node " << ToHex(entry.info.node_id()) << " registered from "
                      << entry.info.node_ip();
      reply.mutable_register_node_reply();
      asio::post(io_, [this] { actors_.OnNodesChanged(); });
      ViewChanged();
      break;
    }
    case rpc::Envelope::kReportResources: {
      auto it = nodes_.find(msg.report_resources().node_id());
      if (it != nodes_.end() && it->second.info.alive()) {
        auto& r = *msg.mutable_report_resources();
        auto& info = it->second.info;
        // Compared in place (a node may carry thousands of placement
        // group resources): no copies unless something changed.
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
        if (changed) ViewChanged();
      }
      return;  // push, no reply
    }
    case rpc::Envelope::kGetNodes: {
      auto* r = reply.mutable_get_nodes_reply();
      for (auto& [id, node] : nodes_) *r->add_nodes() = node.info;
      break;
    }
    case rpc::Envelope::kRegisterJob: {
      uint32_t id = next_job_id_++;
      rpc::JobInfo job;
      job.set_job_id(id);
      job.set_driver_pid(msg.register_job().driver_pid());
      job.set_namespace_(msg.register_job().namespace_());
      job.set_start_time_ms(NowMs());
      jobs_[id] = job;
      job_of_conn_[conn.get()] = id;
      driver_of_job_[id] = conn;
      reply.mutable_register_job_reply()->set_job_id(id);
      break;
    }
    case rpc::Envelope::kGetJobs: {
      auto* r = reply.mutable_get_jobs_reply();
      for (auto& [id, job] : jobs_) *r->add_jobs() = job;
      break;
    }
    case rpc::Envelope::kKvPut: {
      const auto& p = msg.kv_put();
      auto it = kv_.find(p.key());
      bool added = it == kv_.end();
      if (added || p.overwrite()) kv_[p.key()] = p.value();
      reply.mutable_kv_put_reply()->set_added(added);
      break;
    }
    case rpc::Envelope::kKvGet: {
      auto it = kv_.find(msg.kv_get().key());
      auto* r = reply.mutable_kv_get_reply();
      if (it != kv_.end()) {
        r->set_found(true);
        r->set_value(it->second);
      }
      break;
    }
    case rpc::Envelope::kKvDel:
      reply.mutable_kv_del_reply()->set_deleted(static_cast<int>(kv_.erase(msg.kv_del().key())));
      break;
    case rpc::Envelope::kKvKeys: {
      auto* r = reply.mutable_kv_keys_reply();
      const std::string& prefix = msg.kv_keys().prefix();
      for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.rfind(prefix, 0) == 0; ++it) {
        r->add_keys(it->first);
      }
      break;
    }
    case rpc::Envelope::kRegisterActor:
      actors_.Register(msg.register_actor(), reply);
      break;
    case rpc::Envelope::kCreateActor:
      actors_.Create(*msg.mutable_create_actor());
      return;  // push
    case rpc::Envelope::kSubscribeActor:
      actors_.Subscribe(conn, msg.subscribe_actor().actor_id());
      return;  // push; updates follow as pushes
    case rpc::Envelope::kKillActor:
      actors_.Kill(msg.kill_actor(), reply);
      break;
    case rpc::Envelope::kGetNamedActor:
      actors_.GetNamed(msg.get_named_actor(), reply);
      break;
    case rpc::Envelope::kListActors:
      actors_.List(reply);
      break;
    case rpc::Envelope::kActorExiting:
      actors_.Exiting(msg.actor_exiting());
      reply.mutable_actor_exiting_reply();
      break;
    case rpc::Envelope::kGetNodeStats:
      reply.mutable_get_node_stats_reply();  // answers connection probes
      break;
    default:
      reply.mutable_error()->set_code(static_cast<int>(StatusCode::kInvalidArgument));
      reply.mutable_error()->set_message("fleet-gcs does not handle this request");
  }
  if (msg.request_id() != 0) conn->Reply(msg.request_id(), reply);
}

}  // namespace fleet::gcs
