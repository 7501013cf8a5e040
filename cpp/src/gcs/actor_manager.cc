// ActorManager implementation; see actor_manager.h.
#include "gcs/actor_manager.h"

#include <unistd.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "common/ids.h"
#include "gcs/actor_placement.h"
#include "common/logging.h"
#include "core/object_flags.h"

namespace fleet::gcs {

namespace {

constexpr int kInfeasibleWarningMs = 3000;

std::string DescribeResources(const google::protobuf::Map<std::string, double>& r) {
  std::map<std::string, double> sorted(r.begin(), r.end());
  std::ostringstream os;
  os << "{";
  bool first = true;
  for (auto& [k, v] : sorted) {
    if (v <= 0) continue;
    if (!first) os << ", ";
    first = false;
    os << k << ": " << v;
  }
  os << "}";
  return os.str();
}

}  // namespace

ActorManager::ActorManager(asio::io_context& io, std::string token,
                           std::function<std::vector<rpc::NodeInfo>()> alive_nodes,
                           std::function<rpc::ConnectionPtr(uint32_t)> driver_of_job)
    : io_(io), token_(std::move(token)), alive_nodes_(std::move(alive_nodes)),
      driver_of_job_(std::move(driver_of_job)) {
  const char* env = std::getenv("RAY_maximum_gcs_destroyed_actor_cached_count");
  long n = env ? std::strtol(env, nullptr, 10) : 0;
  max_dead_ = n > 0 ? static_cast<size_t>(n) : 100000;
}

void ActorManager::PruneDead() {
  prune_posted_ = false;
  while (dead_.size() > max_dead_) {
    auto it = actors_.find(dead_.front());
    dead_.pop_front();
    if (it != actors_.end() && it->second.info.state() == rpc::ActorInfo::DEAD) actors_.erase(it);
  }
}

std::string ActorManager::Describe(const Actor& a) const {
  std::string s = "actor " + a.info.class_name();
  if (!a.info.name().empty()) s += " '" + a.info.name() + "'";
  return s + " (id " + ToHex(a.info.actor_id()) + ")";
}

// ---- requests -------------------------------------------------------------------

void ActorManager::Register(const rpc::RegisterActor& req, rpc::Envelope& reply,
                            const rpc::ConnectionPtr& owner) {
  auto* r = reply.mutable_register_actor_reply();
  const rpc::ActorInfo& in = req.info();
  if (!in.name().empty()) {
    auto it = named_.find({in.namespace_(), in.name()});
    if (it != named_.end()) {
      const Actor& existing = actors_[it->second];
      if (req.get_if_exists()) {
        r->set_actor_id(existing.info.actor_id());
        r->set_existed(true);
        r->set_handle_meta(existing.info.handle_meta());
      } else {
        r->set_error("The name '" + in.name() + "' (namespace '" + in.namespace_() +
                     "') is already taken by " + Describe(existing) +
                     ". Pick another name, or pass get_if_exists=True to get the existing actor.");
      }
      return;
    }
  }
  ActorId id = ActorId::FromBinary(in.actor_id());
  Actor& a = actors_[id];
  a.info = in;
  a.info.set_state(rpc::ActorInfo::PENDING);
  a.owner = owner.get();
  if (!in.name().empty()) named_[{in.namespace_(), in.name()}] = id;
  r->set_actor_id(in.actor_id());
  if (!in.detached() && !in.owner_address().empty()) WatchOwner(in.owner_address(), id);
}

void ActorManager::WatchOwner(const std::string& address, const ActorId& actor_id) {
  auto it = owners_.find(address);
  if (it == owners_.end()) {
    rpc::Hello hello;
    hello.set_token(token_);
    hello.set_role("gcs");
    hello.set_pid(getpid());
    auto c = rpc::Connect(io_, address, hello);
    if (!c.ok()) {  // it registered a moment ago, so it just died
      FLEET_LOG(WARNING) << "cannot reach the owner " << address << " of actor "
                         << ToHex(actor_id.Binary()) << ": " << c.status().message();
      it = owners_.emplace(address, Owner{}).first;
      it->second.actors.push_back(actor_id);
      asio::post(io_, [this, address] { OnOwnerDied(address); });
      return;
    }
    c.value()->Start(nullptr, [this, address](const rpc::ConnectionPtr&, const Status&) {
      asio::post(io_, [this, address] { OnOwnerDied(address); });
    });
    it = owners_.emplace(address, Owner{c.value(), {}}).first;
  }
  Owner& o = it->second;
  if (o.actors.size() >= o.prune_at) {
    // Forget the actors that are dead already (a long-lived owner makes
    // many); amortized: the list at least doubles between two prunes.
    std::erase_if(o.actors, [&](const ActorId& id) {
      auto a = actors_.find(id);
      return a == actors_.end() || a->second.info.state() == rpc::ActorInfo::DEAD;
    });
    o.prune_at = std::max<size_t>(64, 2 * o.actors.size());
  }
  o.actors.push_back(actor_id);
}

void ActorManager::OnOwnerDied(const std::string& address) {
  auto it = owners_.find(address);
  if (it == owners_.end()) return;
  std::vector<ActorId> ids = std::move(it->second.actors);
  owners_.erase(it);
  for (const auto& id : ids) {
    auto a = actors_.find(id);
    if (a == actors_.end() || a->second.info.detached()) continue;
    MarkDead(a->second, "its owner has died (the process that created it, at " + address +
                            ", exited); only lifetime=\"detached\" actors outlive their owner");
  }
}

void ActorManager::Create(rpc::CreateActor& req) {
  auto it = actors_.find(ActorId::FromBinary(req.spec().actor_id()));
  if (it == actors_.end()) return;
  Actor& a = it->second;
  if (a.info.state() == rpc::ActorInfo::DEAD || a.has_spec) return;
  a.spec = std::move(*req.mutable_spec());
  a.has_spec = true;
  Schedule(a);
}

void ActorManager::Subscribe(const rpc::ConnectionPtr& conn, const ActorId& actor_id) {
  rpc::Envelope m;
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) {
    // Unknown here (the control store restarted, or a forged id): dead.
    auto* info = m.mutable_actor_update()->mutable_info();
    info->set_actor_id(actor_id.Binary());
    info->set_state(rpc::ActorInfo::DEAD);
    info->set_death_reason("the control store does not know this actor");
    info->set_death_flags(kFlagActorDied);
    conn->Send(m);
    return;
  }
  it->second.subscribers.push_back(conn);
  *m.mutable_actor_update()->mutable_info() = it->second.info;
  conn->Send(m);
}

void ActorManager::Kill(const rpc::KillActor& req, rpc::Envelope& reply) {
  auto it = actors_.find(ActorId::FromBinary(req.actor_id()));
  reply.mutable_kill_actor_reply()->set_found(it != actors_.end());
  if (it == actors_.end()) return;
  Actor& a = it->second;
  if (a.info.state() == rpc::ActorInfo::DEAD) return;
  std::string reason =
      req.reason().empty() ? "it was killed by `ray.kill` (fleet.kill)" : req.reason();
  if (req.no_restart()) {
    MarkDead(a, reason);
    return;
  }
  // Kill the process; the death is then handled like a crash (restart if allowed).
  a.restart_reason = reason;
  if (a.worker_conn) {
    ReleaseWorker(a, /*kill=*/true);
  }
}

void ActorManager::GetNamed(const rpc::GetNamedActor& req, rpc::Envelope& reply) {
  auto* r = reply.mutable_get_named_actor_reply();
  auto it = named_.find({req.namespace_(), req.name()});
  if (it == named_.end()) return;
  r->set_found(true);
  *r->mutable_info() = actors_[it->second].info;
}

void ActorManager::List(rpc::Envelope& reply) {
  auto* r = reply.mutable_list_actors_reply();
  for (auto& [id, a] : actors_) *r->add_actors() = a.info;
}

void ActorManager::Exiting(const rpc::ActorExiting& req) {
  auto it = actors_.find(ActorId::FromBinary(req.actor_id()));
  if (it == actors_.end()) return;
  it->second.exit_reason = req.reason();
}

// ---- events ----------------------------------------------------------------------

void ActorManager::OnJobFinished(uint32_t job_id) {
  for (auto& [id, a] : actors_) {
    if (a.info.job_id() == job_id && !a.info.detached() &&
        a.info.state() != rpc::ActorInfo::DEAD) {
      MarkDead(a, "its owner (the job's driver) exited; only lifetime=\"detached\" actors "
                  "outlive their job");
    }
  }
}

void ActorManager::OnConnectionClosed(const rpc::Connection* conn) {
  for (auto& [id, a] : actors_) {
    if (a.owner == conn) {
      a.owner = nullptr;
      // Its creation task was still waiting for arguments that only the
      // owner could resolve: it can never be created. (Ray also ends the
      // created actors of a dead owner; fleet keeps those for now, since an
      // idle worker may still be reaped while it owns actors.)
      if (!a.info.detached() && !a.has_spec) {
        MarkDead(a, "its owner (the process that created it) died before the actor's "
                    "arguments were ready");
      }
    }
    std::erase_if(a.subscribers, [&](const std::weak_ptr<rpc::Connection>& w) {
      auto c = w.lock();
      return !c || c.get() == conn;
    });
  }
}

void ActorManager::OnNodesChanged() {
  for (auto& [id, a] : actors_) {
    if (a.has_spec && !a.lease_pending && !a.worker_conn &&
        (a.info.state() == rpc::ActorInfo::PENDING || a.info.state() == rpc::ActorInfo::RESTARTING)) {
      Schedule(a);
    }
  }
}

void ActorManager::Tick() {
  auto now = std::chrono::steady_clock::now();
  for (auto& [id, a] : actors_) {
    if (a.warned || a.unplaceable_since == std::chrono::steady_clock::time_point{}) continue;
    if (a.info.state() == rpc::ActorInfo::DEAD) continue;
    if (now - a.unplaceable_since < std::chrono::milliseconds(kInfeasibleWarningMs)) continue;
    a.warned = true;
    std::string text = "The " + Describe(a) + " requires " + DescribeResources(a.info.resources()) +
                       (a.info.placement().empty()
                            ? std::string()
                            : " (and a node with " + DescribeResources(a.info.placement()) + ")") +
                       ", which no node in the cluster can satisfy. It stays pending until a "
                       "node with these resources joins.";
    FLEET_LOG(WARNING) << text;
    if (auto driver = driver_of_job_(a.info.job_id())) {
      rpc::Envelope w;
      w.mutable_warning()->set_message(text);
      driver->Send(w);
    }
  }
}

// ---- placement ---------------------------------------------------------------------

Result<rpc::ConnectionPtr> ActorManager::NodeConnection(const rpc::NodeInfo& node) {
  NodeId node_id = NodeId::FromBinary(node.node_id());
  auto it = node_conns_.find(node_id);
  if (it != node_conns_.end() && !it->second->closed()) return it->second;
  rpc::Hello hello;
  hello.set_token(token_);
  hello.set_role("gcs");
  hello.set_pid(getpid());
  std::string address = node.address();
  if (address.empty()) {
    address = node.unix_socket();
    if (address.rfind("unix:", 0) != 0) address = "unix:" + address;
  }
  auto c = rpc::Connect(io_, address, hello);
  if (!c.ok()) return c.status();
  c.value()->Start(nullptr, nullptr);
  node_conns_[node_id] = c.value();
  return c.value();
}

void ActorManager::Schedule(Actor& a) {
  // Where: see actor_placement.h (labels, strategies, Ray's hybrid policy).
  auto nodes = alive_nodes_();
  for (auto* unseen : {&in_flight_, &granted_unreported_}) {
    if (unseen->empty()) continue;
    for (auto& n : nodes) {
      auto f = unseen->find(NodeId::FromBinary(n.node_id()));
      if (f == unseen->end()) continue;
      for (auto& [k, v] : f->second) (*n.mutable_available())[k] -= v;
    }
  }
  ActorPlacement where = PlaceActor({a.info, nodes, spread_threshold_, rng_()}, spread_next_);
  if (!where.dead_reason.empty()) {
    MarkDead(a, where.dead_reason);
    return;
  }
  const rpc::NodeInfo* best = where.node;
  if (!best) {
    if (a.unplaceable_since == std::chrono::steady_clock::time_point{}) {
      a.unplaceable_since = std::chrono::steady_clock::now();
    }
    return;
  }
  a.unplaceable_since = {};
  auto conn = NodeConnection(*best);
  if (!conn.ok()) {
    FLEET_LOG(WARNING) << "cannot reach node " << ToHex(best->node_id()) << " to place "
                       << Describe(a) << ": " << conn.status().message();
    a.unplaceable_since = std::chrono::steady_clock::now();
    return;
  }
  rpc::Envelope req;
  auto* r = req.mutable_request_lease();
  *r->mutable_resources() = a.info.resources();
  *r->mutable_placement() = a.info.placement();
  r->set_description("actor " + a.info.class_name());
  r->set_scheduling_key("actor:" + a.info.actor_id());
  r->set_actor_class(a.info.class_name());
  r->set_spilled(true);  // placed here by us: the node must not send it on
  a.lease_pending = true;
  a.lease_node_id = NodeId::FromBinary(best->node_id());
  uint64_t inc = ++a.incarnation;
  ActorId id = ActorId::FromBinary(a.info.actor_id());
  std::map<std::string, double> held(a.info.resources().begin(), a.info.resources().end());
  auto& pending = in_flight_[a.lease_node_id];
  for (auto& [k, v] : held) pending[k] += v;
  conn.value()->Call(req, [this, id, inc, node = a.lease_node_id,
                           held = std::move(held)](const Status& s, rpc::Envelope& reply) {
    auto f = in_flight_.find(node);
    if (f != in_flight_.end()) {
      for (auto& [k, v] : held) {
        if ((f->second[k] -= v) <= 1e-9) f->second.erase(k);
      }
      if (f->second.empty()) in_flight_.erase(f);
    }
    if (s.ok() && !reply.lease_granted().worker_id().empty()) {
      auto& granted = granted_unreported_[node];
      for (auto& [k, v] : held) granted[k] += v;
    }
    OnLeaseReply(id, inc, s, reply);
  });
}

void ActorManager::OnLeaseReply(const ActorId& actor_id, uint64_t incarnation, const Status& s,
                                rpc::Envelope& reply) {
  auto it = actors_.find(actor_id);
  const auto& g = reply.lease_granted();
  auto give_back = [&](bool kill) {
    auto nc = node_conns_.find(it == actors_.end() ? NodeId() : it->second.lease_node_id);
    if (nc == node_conns_.end() || g.worker_id().empty()) return;
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(g.worker_id());
    ret.mutable_return_lease()->set_worker_failed(kill);
    nc->second->Send(ret);
  };
  if (it == actors_.end()) return;
  Actor& a = it->second;
  if (a.incarnation != incarnation) {  // killed (or re-placed) meanwhile
    if (s.ok()) give_back(true);
    return;
  }
  a.lease_pending = false;
  if (!s.ok() && s.code() == StatusCode::kDisconnected) {
    // The node went away before granting (it died): place the actor again
    // once the node table has caught up.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    timer->async_wait([this, timer, actor_id](const asio::error_code& ec) {
      if (ec) return;
      auto it = actors_.find(actor_id);
      if (it == actors_.end()) return;
      Actor& a = it->second;
      if (a.has_spec && !a.lease_pending && !a.worker_conn &&
          (a.info.state() == rpc::ActorInfo::PENDING || a.info.state() == rpc::ActorInfo::RESTARTING)) {
        Schedule(a);
      }
    });
    return;
  }
  if (!s.ok()) {
    MarkDead(a, "no worker could be started for it: " + s.message());
    return;
  }
  if (a.info.state() == rpc::ActorInfo::DEAD) {
    give_back(true);
    return;
  }
  if (!g.error().empty()) {  // can never be served (e.g. its placement group was removed)
    MarkDead(a, "it cannot be scheduled: " + g.error());
    return;
  }
  if (g.worker_id().empty()) return;  // canceled
  rpc::Hello hello;
  hello.set_token(token_);
  hello.set_role("gcs");
  hello.set_pid(getpid());
  auto conn = rpc::Connect(io_, g.worker_address(), hello);
  if (!conn.ok()) {
    give_back(true);
    Restart(a, "its worker could not be reached: " + conn.status().message());
    return;
  }
  a.worker_conn = conn.value();
  a.info.set_worker_id(g.worker_id());
  a.info.set_pid(g.worker_pid());
  a.info.set_node_id(g.node_id());
  a.info.set_address(g.worker_address());
  a.worker_conn->Start(nullptr, [this, actor_id, incarnation](const rpc::ConnectionPtr&, const Status&) {
    asio::post(io_, [this, actor_id, incarnation] { OnWorkerLost(actor_id, incarnation); });
  });
  rpc::Envelope push;
  rpc::TaskSpec* spec = push.mutable_push_task()->mutable_spec();
  *spec = a.spec;
  spec->clear_gpu_ids();
  for (int gid : g.gpu_ids()) spec->add_gpu_ids(gid);
  spec->set_attempt(a.info.num_restarts());
  a.worker_conn->Call(push, [this, actor_id, incarnation](const Status& st, rpc::Envelope& r) {
    OnCreated(actor_id, incarnation, st, r);
  });
}

void ActorManager::OnCreated(const ActorId& actor_id, uint64_t incarnation, const Status& s,
                             rpc::Envelope& reply) {
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) return;
  Actor& a = it->second;
  if (a.incarnation != incarnation || a.info.state() == rpc::ActorInfo::DEAD) return;
  if (!s.ok()) return;  // the worker died while constructing: OnWorkerLost handles it
  const auto& r = reply.push_task_reply();
  if (r.returns_size() > 0 && (r.returns(0).flags() & kErrorFlags)) {
    // The constructor raised: the actor is dead with that error as the cause
    // (a restart would raise it again).
    std::string error = r.returns(0).data();
    bool pickled = r.returns(0).flags() & kFlagPickledError;
    MarkDead(a, "its constructor raised an exception", pickled ? error : "");
    return;
  }
  a.info.set_state(rpc::ActorInfo::ALIVE);
  a.warned = false;
  Publish(a);
}

void ActorManager::OnWorkerLost(const ActorId& actor_id, uint64_t incarnation) {
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) return;
  Actor& a = it->second;
  if (a.incarnation != incarnation || !a.worker_conn) return;
  a.worker_conn.reset();
  if (a.info.state() == rpc::ActorInfo::DEAD) return;
  if (!a.exit_reason.empty()) {
    MarkDead(a, a.exit_reason);
    return;
  }
  // Ask the node how the process ended, so the reason explains itself.
  std::string worker_id = a.info.worker_id();
  auto nc = node_conns_.find(a.lease_node_id);
  std::string fallback = a.restart_reason.empty() ? "its worker process died unexpectedly"
                                                  : a.restart_reason;
  if (nc == node_conns_.end() || nc->second->closed()) {
    Restart(a, fallback + " (its node is unreachable)");
    return;
  }
  rpc::Envelope req;
  req.mutable_get_worker_exit()->set_worker_id(worker_id);
  nc->second->Call(req, [this, actor_id, incarnation, fallback](const Status& s, rpc::Envelope& r) {
    auto it2 = actors_.find(actor_id);
    if (it2 == actors_.end()) return;
    Actor& a2 = it2->second;
    if (a2.incarnation != incarnation || a2.info.state() == rpc::ActorInfo::DEAD) return;
    std::string reason = fallback;
    const auto& e = r.get_worker_exit_reply();
    if (s.ok() && e.known()) {
      reason += " (the process (pid=" + std::to_string(a2.info.pid()) + ") " + e.reason() + ")";
      if (e.last_lines_size() > 0) {
        reason += ". Its last output on stderr:";
        for (const auto& l : e.last_lines()) reason += "\n    " + l;
      }
    }
    Restart(a2, reason);
  });
}

void ActorManager::Restart(Actor& a, const std::string& reason) {
  a.restart_reason.clear();
  int max = a.info.max_restarts();
  if (max >= 0 && a.info.num_restarts() >= max) {
    std::string why = reason;
    if (max > 0) why += "; it was restarted " + std::to_string(max) + " time(s) (max_restarts=" +
                        std::to_string(max) + ")";
    MarkDead(a, why);
    return;
  }
  a.info.set_num_restarts(a.info.num_restarts() + 1);
  a.info.set_state(rpc::ActorInfo::RESTARTING);
  a.info.set_death_reason(reason);
  a.info.clear_address();
  FLEET_LOG(INFO) << Describe(a) << " restarting (" << a.info.num_restarts() << "): " << reason;
  Publish(a);
  Schedule(a);
}

void ActorManager::MarkDead(Actor& a, const std::string& reason, const std::string& error) {
  if (a.info.state() == rpc::ActorInfo::DEAD) return;
  a.info.set_state(rpc::ActorInfo::DEAD);
  a.info.set_death_reason(reason);
  a.info.set_death_error(error);
  a.info.set_death_flags(kFlagActorDied | (error.empty() ? 0u : kFlagPickledError));
  a.info.clear_address();
  if (!a.info.name().empty()) {
    auto it = named_.find({a.info.namespace_(), a.info.name()});
    if (it != named_.end() && it->second.Binary() == a.info.actor_id()) named_.erase(it);
  }
  ReleaseWorker(a, /*kill=*/true);
  a.incarnation++;  // late replies of the last placement are ignored
  a.lease_pending = false;
  Publish(a);
  a.spec.Clear();  // the arguments are not needed any more
  dead_.push_back(ActorId::FromBinary(a.info.actor_id()));
  if (dead_.size() > max_dead_ && !prune_posted_) {
    prune_posted_ = true;
    asio::post(io_, [this] { PruneDead(); });
  }
}

void ActorManager::ReleaseWorker(Actor& a, bool kill) {
  if (a.info.worker_id().empty()) return;
  auto nc = node_conns_.find(a.lease_node_id);
  if (nc != node_conns_.end()) {
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(a.info.worker_id());
    ret.mutable_return_lease()->set_worker_failed(kill);
    nc->second->Send(ret);
  }
  if (a.info.state() == rpc::ActorInfo::DEAD && a.worker_conn) {
    a.worker_conn->Close();
    a.worker_conn.reset();
  }
}

void ActorManager::Publish(Actor& a) {
  rpc::Envelope m;
  *m.mutable_actor_update()->mutable_info() = a.info;
  m.mutable_actor_update()->mutable_info()->clear_handle_meta();  // callers have it
  std::erase_if(a.subscribers, [&](const std::weak_ptr<rpc::Connection>& w) {
    auto c = w.lock();
    if (!c || c->closed()) return true;
    c->Send(m);
    return false;
  });
}

}  // namespace fleet::gcs
