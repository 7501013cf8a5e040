// NodeServer implementation; see node_server.h.
#include "node/node_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/read.hpp>
#include <sstream>

#include "common/ids.h"
#include "common/logging.h"
#include "node/worker_process.h"

namespace fleet::node {

struct NodeServer::WorkerIo {
  std::string worker_id;
  int pid = 0;
  asio::posix::stream_descriptor out, err;
  std::string out_partial, err_partial;
  int log_fd = -1;
  std::deque<std::string> tail;  // last stderr lines, for error messages
  bool err_eof = false;
  bool exited = false;
  std::string exit_reason;
  std::string label;  // "Counter" while it hosts an actor of that class
  std::array<char, 8192> out_buf{}, err_buf{};
  WorkerIo(asio::io_context& io, int o, int e) : out(io, o), err(io, e) {}
  ~WorkerIo() {
    if (log_fd >= 0) ::close(log_fd);
  }
};

namespace {
int NumCpus(const std::map<std::string, double>& r) {
  auto it = r.find("CPU");
  return it == r.end() ? 0 : static_cast<int>(it->second);
}
}  // namespace

NodeServer::NodeServer(asio::io_context& io, NodeOptions options)
    : io_(io), options_(std::move(options)), node_id_(RandomId()),
      resources_(FromDoubles(options_.resources)),
      pool_(std::max(1, NumCpus(options_.resources)), std::max(2, NumCpus(options_.resources)),
            options_.idle_worker_timeout_ms),
      sigchld_(io, SIGCHLD), tick_timer_(io), report_timer_(io) {}

NodeServer::~NodeServer() = default;

Status NodeServer::Start() {
  listener_ = std::make_unique<rpc::Listener>(
      io_, options_.token, [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnMessage(c, m); },
      [this](const rpc::ConnectionPtr& c, const Status& s) { OnClose(c, s); });
  auto addr = listener_->ListenUnix(options_.unix_socket);
  if (!addr.ok()) return addr.status();
  auto port = listener_->ListenTcp(options_.node_ip, options_.port);
  if (!port.ok()) return port.status();
  address_ = rpc::JoinAddress(options_.node_ip + ":" + std::to_string(port.value()), addr.value());
  transfer_client_ = next_store_client_++;

  store::StoreOptions so = options_.store;
  if (so.spill_dir.empty()) so.spill_dir = options_.session_dir + "/spill/" + ToHex(node_id_).substr(0, 12);
  store_ = std::make_unique<store::ObjectStore>(io_, so);
  if (Status ss = store_->Init(); !ss.ok()) return ss;

  sigchld_.async_wait([this](const asio::error_code& ec, int) {
    if (!ec) OnSigchld();
  });

  // Register with the control store. Connect synchronously: we are not on a
  // running io thread yet, so wait for the reply by running the loop.
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role("node");
  hello.set_pid(getpid());
  auto conn = rpc::Connect(io_, options_.gcs_address, hello);
  if (!conn.ok()) return conn.status();
  gcs_ = conn.value();
  bool done = false;
  Status result = Status::OK();
  gcs_->Start([this](const rpc::ConnectionPtr&, rpc::Envelope& m) { OnGcsMessage(m); },
              [this](const rpc::ConnectionPtr&, const Status& s) {
    if (!stopped_) {
      FLEET_LOG(ERROR) << "lost the connection to fleet-gcs (" << s.message() << "); exiting";
      Stop();
    }
  });
  rpc::Envelope reg;
  auto* info = reg.mutable_register_node()->mutable_node();
  info->set_node_id(node_id_);
  info->set_node_ip(options_.node_ip);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  info->set_hostname(host);
  info->set_unix_socket(addr.value());
  info->set_address(address_);
  info->set_is_head(options_.is_head);
  info->set_session_dir(options_.session_dir);
  for (auto& [k, v] : options_.resources) {
    (*info->mutable_total())[k] = v;
    (*info->mutable_available())[k] = v;
  }
  gcs_->Call(reg, [&](const Status& s, rpc::Envelope&) {
    result = s;
    done = true;
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io_.run_one_for(std::chrono::milliseconds(100));
  }
  if (!done) return Status::TimedOut("fleet-gcs at " + options_.gcs_address + " did not answer");
  if (!result.ok()) return result;

  int prestart = options_.num_prestart >= 0 ? options_.num_prestart : NumCpus(options_.resources);
  started_at_ = std::chrono::steady_clock::now();
  StartWorkers(prestart);
  MaybeStartZygote(false);  // nothing to prestart: start it now
  Tick();
  return Status::OK();
}

void NodeServer::MaybeStartZygote(bool force) {
  // The prestarted workers start with fork + exec; the fork server starts
  // once they are up (or after a second), so it does not compete with them
  // for the CPU while init() waits for its first task.
  if (!options_.use_zygote || zygote_started_) return;
  if (!force && pool_.num_starting() > 0) return;
  zygote_started_ = true;
  zygote_ = std::make_unique<Zygote>(io_, [this](int pid, int status) { OnProcessExit(pid, status); });
  Status zs = zygote_->Start({options_.python, "-m", "fleet._private.zygote"},
                             {{"PYTHONUNBUFFERED", "1"}});
  if (!zs.ok()) {
    FLEET_LOG(WARNING) << "cannot start the worker zygote (" << zs.message()
                       << "); workers start with fork + exec";
    zygote_.reset();
  }
}

void NodeServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (int pid : pool_.Pids()) ::kill(pid, SIGKILL);
  for (int pid : pool_.Pids()) ::waitpid(pid, nullptr, 0);  // ECHILD for the zygote's
  if (zygote_) zygote_->Stop();
  if (listener_) listener_->Close();
  if (store_) store_->Shutdown();
  io_.stop();
}

// ---- messages ---------------------------------------------------------------

void NodeServer::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  rpc::Envelope reply;
  switch (msg.body_case()) {
    case rpc::Envelope::kStoreInfo:
    case rpc::Envelope::kStoreCreate:
    case rpc::Envelope::kStoreSeal:
    case rpc::Envelope::kStoreGet:
    case rpc::Envelope::kStoreRelease:
    case rpc::Envelope::kStoreFree:
    case rpc::Envelope::kStoreList:
      OnStoreMessage(conn, msg);
      return;
    case rpc::Envelope::kPullObject:
      ServePull(conn, msg.request_id(), msg.pull_object());
      return;
    case rpc::Envelope::kPrepareBundles:
    case rpc::Envelope::kCommitBundles:
    case rpc::Envelope::kReleaseBundles:
      OnBundleMessage(conn, msg);
      return;
    case rpc::Envelope::kHello: {
      const auto& h = msg.hello();
      if ((h.role() == "worker" || h.role() == "driver") && !h.address().empty()) {
        client_addresses_[conn.get()] = h.address();
      }
      if (h.role() == "worker") {
        if (!pool_.OnRegistered(h.worker_id(), h.address(), std::chrono::steady_clock::now())) {
          FLEET_LOG(WARNING) << "unknown worker " << ToHex(h.worker_id()) << " (pid " << h.pid()
                             << ") tried to register; closing it";
          conn->Close();
          return;
        }
        consecutive_start_failures_ = 0;
        worker_conns_[conn.get()] = h.worker_id();
        worker_conn_by_id_[h.worker_id()] = conn;
        Schedule();
        MaybeStartZygote(false);
      }
      return;
    }
    case rpc::Envelope::kRequestLease: {
      const auto& r = msg.request_lease();
      LeaseRequestEntry e;
      e.conn = conn;
      e.request_id = msg.request_id();
      e.resources = FromDoubles({r.resources().begin(), r.resources().end()});
      e.placement = FromDoubles({r.placement().begin(), r.placement().end()});
      e.actor_class = r.actor_class();
      e.description = r.description();
      e.key = r.scheduling_key();
      e.strategy = r.strategy();
      e.affinity_node_id = r.affinity_node_id();
      e.affinity_soft = r.affinity_soft();
      e.spilled = r.spilled();
      e.since = std::chrono::steady_clock::now();
      if (consecutive_start_failures_ >= options_.worker_start_failures_before_error) {
        reply.mutable_error()->set_code(static_cast<int>(StatusCode::kInternal));
        reply.mutable_error()->set_message("workers on this node fail to start: " +
                                           last_start_failure_);
        conn->Reply(msg.request_id(), reply);
        return;
      }
      pending_.push_back(std::move(e));
      Schedule();
      return;
    }
    case rpc::Envelope::kReturnLease: {
      const auto& r = msg.return_lease();
      auto it = leases_.find(r.worker_id());
      if (it != leases_.end() && it->second.holder.lock() == conn) {
        resources_.Release(it->second.alloc);
        leases_.erase(it);
        MarkResourcesDirty();
        if (r.worker_failed()) {
          KillWorker(r.worker_id());
        } else {
          pool_.PushIdle(r.worker_id(), std::chrono::steady_clock::now());
        }
        Schedule();
      }
      if (msg.request_id() != 0) {
        reply.mutable_return_lease_reply();
        conn->Reply(msg.request_id(), reply);
      }
      return;
    }
    case rpc::Envelope::kCancelLeaseRequests: {
      const std::string& key = msg.cancel_lease_requests().scheduling_key();
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->key == key && it->conn.lock() == conn) {
          rpc::Envelope r;
          r.mutable_lease_granted();  // empty worker id = canceled
          conn->Reply(it->request_id, r);
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
      return;
    }
    case rpc::Envelope::kNotifyBlocked: {
      auto w = worker_conns_.find(conn.get());
      if (w == worker_conns_.end()) return;
      auto it = leases_.find(w->second);
      if (it == leases_.end()) return;
      bool blocked = msg.notify_blocked().blocked();
      if (blocked == it->second.blocked) return;
      it->second.blocked = blocked;
      if (blocked) {
        resources_.ReleaseCpu(it->second.alloc);
      } else {
        resources_.ForceAcquireCpu(it->second.alloc);
      }
      MarkResourcesDirty();
      if (blocked) Schedule();
      return;
    }
    case rpc::Envelope::kGetWorkerExit: {
      const std::string& wid = msg.get_worker_exit().worker_id();
      if (exited_.count(wid) || !worker_io_.count(wid)) {
        AnswerExit(conn, msg.request_id(), wid);  // known, or never ours
        return;
      }
      exit_waiters_[wid].push_back({conn, msg.request_id()});
      // Do not let the asker wait long for a worker that lingers.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(2));
      std::weak_ptr<rpc::Connection> weak = conn;
      uint64_t rid = msg.request_id();
      timer->async_wait([this, timer, weak, rid, wid](const asio::error_code& ec) {
        if (ec || stopped_) return;
        auto it = exit_waiters_.find(wid);
        if (it == exit_waiters_.end()) return;
        auto& list = it->second;
        for (auto w = list.begin(); w != list.end(); ++w) {
          if (w->request_id == rid && w->conn.lock() == weak.lock()) {
            if (auto c = weak.lock()) AnswerExit(c, rid, wid);
            list.erase(w);
            break;
          }
        }
        if (list.empty()) exit_waiters_.erase(it);
      });
      return;
    }
    case rpc::Envelope::kGetNodeStats: {
      auto* s = reply.mutable_get_node_stats_reply();
      for (auto& [k, v] : ToDoubles(resources_.total())) (*s->mutable_total())[k] = v;
      for (auto& [k, v] : ToDoubles(resources_.available())) (*s->mutable_available())[k] = v;
      s->set_num_workers(pool_.size());
      s->set_num_idle_workers(pool_.num_idle());
      for (int pid : pool_.Pids()) s->add_worker_pids(pid);
      s->set_pending_leases(static_cast<int>(pending_.size()));
      s->set_node_id(node_id_);
      if (zygote_ && zygote_->ready()) s->set_zygote_pid(zygote_->pid());
      break;
    }
    default:
      reply.mutable_error()->set_code(static_cast<int>(StatusCode::kInvalidArgument));
      reply.mutable_error()->set_message("fleet-node does not handle this request");
  }
  if (msg.request_id() != 0) conn->Reply(msg.request_id(), reply);
}

void NodeServer::OnClose(const rpc::ConnectionPtr& conn, const Status&) {
  if (store_) {
    if (auto sc = store_clients_.find(conn.get()); sc != store_clients_.end()) {
      store_->ClientGone(sc->second);
      store_clients_.erase(sc);
    }
    if (auto a = client_addresses_.find(conn.get()); a != client_addresses_.end()) {
      store_->OwnerGone(a->second);  // its objects die with it
      client_addresses_.erase(a);
    }
  }
  auto w = worker_conns_.find(conn.get());
  if (w != worker_conns_.end()) {
    std::string id = w->second;
    worker_conns_.erase(w);
    worker_conn_by_id_.erase(id);
    // The process is gone or going; SIGCHLD will reap it.
    OnWorkerGone(id, "its connection closed");
    return;
  }
  // A client: drop its queued requests and revoke its leases.
  std::erase_if(pending_, [&](const LeaseRequestEntry& e) {
    auto c = e.conn.lock();
    return !c || c == conn;
  });
  std::vector<std::string> revoked;
  for (auto& [wid, lease] : leases_) {
    auto h = lease.holder.lock();
    if (!h || h == conn) revoked.push_back(wid);
  }
  for (auto& wid : revoked) {
    resources_.Release(leases_[wid].alloc);
    leases_.erase(wid);
    KillWorker(wid);  // it may still run the departed client's tasks
  }
  if (!revoked.empty()) {
    MarkResourcesDirty();
    Schedule();
  }
}

// ---- object store -----------------------------------------------------------

bool NodeServer::IsLocalClient(const std::string& address) const {
  for (auto& [conn, a] : client_addresses_) {
    if (a == address) return true;
  }
  return false;
}

store::ClientId NodeServer::StoreClientOf(const rpc::ConnectionPtr& conn) {
  auto [it, added] = store_clients_.try_emplace(conn.get(), 0);
  if (added) it->second = next_store_client_++;
  return it->second;
}

void NodeServer::OnStoreMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  store::ClientId client = StoreClientOf(conn);
  uint64_t rid = msg.request_id();
  std::weak_ptr<rpc::Connection> weak = conn;
  auto fail = [weak, rid](const Status& s) {
    auto c = weak.lock();
    if (!c || rid == 0) return;
    rpc::Envelope reply;
    reply.mutable_error()->set_code(static_cast<int>(s.code()));
    reply.mutable_error()->set_message(s.message());
    c->Reply(rid, reply);
  };
  rpc::Envelope reply;
  switch (msg.body_case()) {
    case rpc::Envelope::kStoreInfo: {
      auto* r = reply.mutable_store_info_reply();
      r->set_pid(getpid());
      r->set_fd(store_->fd());
      r->set_capacity(store_->capacity());
      break;
    }
    case rpc::Envelope::kStoreCreate: {
      const auto& c = msg.store_create();
      // An owner on another node (a task's caller): watch it, so its objects
      // go when it does.
      if (!c.owner_address().empty() && !IsLocalClient(c.owner_address())) {
        OwnerConnection(c.owner_address());
      }
      store_->Create(client, c.object_id(), c.size(), c.owner_address(), c.call_site(),
                     [weak, rid, fail](Result<std::pair<uint64_t, bool>> r) {
                       if (!r.ok()) return fail(r.status());
                       auto conn = weak.lock();
                       if (!conn) return;
                       rpc::Envelope reply;
                       reply.mutable_store_create_reply()->set_offset(r.value().first);
                       reply.mutable_store_create_reply()->set_exists(r.value().second);
                       conn->Reply(rid, reply);
                     });
      return;
    }
    case rpc::Envelope::kStoreSeal: {
      Status s = store_->Seal(client, msg.store_seal().object_id());
      if (!s.ok()) return fail(s);
      reply.mutable_store_seal_reply();
      break;
    }
    case rpc::Envelope::kStoreGet: {
      const auto& g = msg.store_get();
      std::vector<std::string> ids(g.object_ids().begin(), g.object_ids().end());
      std::vector<std::string> sources(g.source_node_ids().begin(), g.source_node_ids().end());
      // Objects whose primary copy is on another node are pulled here first.
      EnsureLocal(ids, sources, [this, weak, rid, client, ids](std::vector<std::string> pull_errors,
                                                               std::vector<std::string> held) {
        auto unhold = [this, held] {
          for (const auto& id : held) store_->Release(transfer_client_, id);
        };
        if (!weak.lock()) return unhold();  // the reader left meanwhile: pin nothing for it
        store_->Get(client, ids, [weak, rid, pull_errors, unhold](std::vector<store::ObjectLocation> locs) {
          unhold();
          auto conn = weak.lock();
          if (!conn) return;
          rpc::Envelope reply;
          auto* r = reply.mutable_store_get_reply();
          for (size_t i = 0; i < locs.size(); i++) {
            auto& l = locs[i];
            auto* out = r->add_locations();
            out->set_offset(l.offset);
            out->set_size(l.size);
            out->set_error(l.error.empty() || pull_errors[i].empty() ? l.error : pull_errors[i]);
            out->set_full(l.full);
          }
          conn->Reply(rid, reply);
        });
      });
      return;
    }
    case rpc::Envelope::kStoreRelease:
      for (const auto& id : msg.store_release().object_ids()) store_->Release(client, id);
      return;
    case rpc::Envelope::kStoreFree: {
      // Copies other nodes pulled go too.
      std::map<std::string, rpc::Envelope> forward;
      const auto& f = msg.store_free();
      for (int i = 0; i < f.object_ids_size(); i++) {
        const std::string& id = f.object_ids(i);
        // Held by another node (the primary copy): that node frees it (and
        // the copies it served); a copy here goes now.
        if (i < f.node_ids_size() && !f.node_ids(i).empty() && f.node_ids(i) != node_id_) {
          forward[f.node_ids(i)].mutable_store_free()->add_object_ids(id);
        }
        store_->Free(id);
        auto c = copies_.find(id);
        if (c == copies_.end()) continue;
        for (const auto& node : c->second) {
          if (node != node_id_) forward[node].mutable_store_free()->add_object_ids(id);
        }
        copies_.erase(c);
      }
      for (auto& [node, m] : forward) {
        if (auto peer = PeerNode(node); peer.ok()) peer.value()->Send(m);
      }
      return;
    }
    case rpc::Envelope::kStoreList:
      store_->List(reply.mutable_store_list_reply());
      break;
    default:
      return;
  }
  if (rid != 0) conn->Reply(rid, reply);
}

// ---- scheduling -------------------------------------------------------------

bool NodeServer::Feasible(const LeaseRequestEntry& e) const {
  return resources_.Feasible(e.resources) && resources_.Feasible(e.placement);
}

void NodeServer::Schedule() {
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
    if (!it->spilled && !it->placed) {
      Placement p = Place(*it, Feasible(*it) && resources_.Fits(it->resources));
      if (!p.error.empty() || !p.node_id.empty()) {
        rpc::Envelope reply;
        auto* g = reply.mutable_lease_granted();
        if (!p.error.empty()) {
          g->set_error(p.error);
        } else {
          g->set_spillback_node_id(p.node_id);
          g->set_spillback_address(cluster_[p.node_id].address());
        }
        conn->Reply(it->request_id, reply);
        it = pending_.erase(it);
        continue;
      }
    }
    if (!Feasible(*it)) {
      ++it;
      continue;
    }
    auto alloc = resources_.TryAcquire(it->resources);
    if (!alloc) {
      ++it;
      continue;
    }
    auto worker = pool_.PopIdle();
    if (!worker) {
      reserved.push_back(std::move(*alloc));
      need_workers++;
      ++it;
      continue;
    }
    LeaseEntry lease;
    lease.alloc = std::move(*alloc);
    lease.holder = conn;
    rpc::Envelope reply;
    auto* g = reply.mutable_lease_granted();
    g->set_worker_id(worker->id);
    g->set_worker_address(worker->address);
    g->set_worker_pid(worker->pid);
    g->set_node_id(node_id_);
    for (int id : lease.alloc.GpuIds()) g->add_gpu_ids(id);
    leases_[worker->id] = std::move(lease);
    if (!it->actor_class.empty()) {
      pool_.MarkDedicated(worker->id);
      auto wio = worker_io_.find(worker->id);
      if (wio != worker_io_.end()) wio->second->label = it->actor_class;  // "(Cls pid=N) ..."
    }
    conn->Reply(it->request_id, reply);
    it = pending_.erase(it);
    MarkResourcesDirty();
  }
  for (auto& a : reserved) resources_.Release(a);
  if (need_workers > 0) StartWorkers(pool_.NumToStart(need_workers));
}

void NodeServer::StartWorkers(int n) {
  for (int i = 0; i < n; ++i) {
    std::string id = RandomId();
    std::string hex = ToHex(id);
    std::map<std::string, std::string> env = {
        {"FLEET_WORKER_ID", hex},
        {"FLEET_NODE_ADDRESS", "unix:" + options_.unix_socket},
        {"FLEET_GCS_ADDRESS", options_.gcs_address},
        {"FLEET_CLUSTER_TOKEN", options_.token},
        {"FLEET_SESSION_DIR", options_.session_dir},
        {"FLEET_NODE_ID", ToHex(node_id_)},
        {"FLEET_NODE_IP", options_.node_ip},
        {"PYTHONUNBUFFERED", "1"},
    };
    Result<SpawnedProcess> p = Status::Internal("no zygote");
    if (zygote_ && zygote_->ready()) {
      p = zygote_->Spawn(env);
      if (!p.ok()) {
        FLEET_LOG(WARNING) << "zygote spawn failed: " << p.status().message();
      }
    }
    if (!p.ok()) p = SpawnWorker({options_.python, "-m", "fleet._private.worker_main"}, env);
    if (!p.ok()) {
      FLEET_LOG(ERROR) << "cannot start a worker: " << p.status().message();
      last_start_failure_ = p.status().message();
      consecutive_start_failures_++;
      continue;
    }
    pool_.AddStarting(id, p->pid);
    FLEET_LOG(INFO) << "started worker pid " << p->pid << " (" << pool_.size() << " workers, "
                    << pool_.num_starting() << " starting)";
    auto wio = std::make_shared<WorkerIo>(io_, p->stdout_fd, p->stderr_fd);
    wio->worker_id = id;
    wio->pid = p->pid;
    std::string log = options_.session_dir + "/logs/worker-" + hex.substr(0, 8) + "-" +
                      std::to_string(p->pid) + ".log";
    wio->log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    worker_io_[id] = wio;
    ReadWorkerOutput(wio, false);
    ReadWorkerOutput(wio, true);
  }
}

void NodeServer::ReadWorkerOutput(std::shared_ptr<WorkerIo> wio, bool is_stderr) {
  auto& sd = is_stderr ? wio->err : wio->out;
  auto& buf = is_stderr ? wio->err_buf : wio->out_buf;
  sd.async_read_some(asio::buffer(buf), [this, wio, is_stderr](const asio::error_code& ec, size_t n) {
    if (ec) {  // EOF: the worker exited (or closed its stderr)
      if (is_stderr && !stopped_) {
        wio->err_eof = true;
        MaybeFinalizeExit(wio);
      }
      return;
    }
    auto& buf2 = is_stderr ? wio->err_buf : wio->out_buf;
    auto& partial = is_stderr ? wio->err_partial : wio->out_partial;
    if (wio->log_fd >= 0) {
      ssize_t ignored = ::write(wio->log_fd, buf2.data(), n);
      (void)ignored;
    }
    partial.append(buf2.data(), n);
    rpc::Envelope msg;
    auto* l = msg.mutable_log_lines();
    l->set_pid(wio->pid);
    l->set_is_stderr(is_stderr);
    if (!wio->label.empty()) l->set_label(wio->label);
    size_t start = 0, nl;
    while ((nl = partial.find('\n', start)) != std::string::npos) {
      std::string line = partial.substr(start, nl - start);
      if (is_stderr) {
        wio->tail.push_back(line);
        if (wio->tail.size() > 20) wio->tail.pop_front();
      }
      l->add_lines(std::move(line));
      start = nl + 1;
    }
    partial.erase(0, start);
    if (l->lines_size() > 0) {
      // Through fleet-gcs, which sends them to every driver that wants them
      // (drivers on other nodes too).
      l->set_node_ip(options_.node_ip);
      l->set_node_id(node_id_);
      if (gcs_) gcs_->Send(msg);
    }
    ReadWorkerOutput(wio, is_stderr);
  });
}

void NodeServer::KillWorker(const std::string& worker_id) {
  const WorkerInfo* w = pool_.Find(worker_id);
  if (w && w->pid > 0) ::kill(w->pid, SIGKILL);
}

void NodeServer::OnWorkerGone(const std::string& worker_id, const std::string& why) {
  auto w = pool_.Remove(worker_id);
  if (!w) return;
  if (w->state == WorkerState::kStarting) {
    std::string tail;
    auto it = worker_io_.find(worker_id);
    if (it != worker_io_.end()) {
      for (auto& l : it->second->tail) tail += "\n  " + l;
    }
    last_start_failure_ = "worker pid " + std::to_string(w->pid) + " exited before connecting (" +
                          why + ")" + (tail.empty() ? "" : "; its last output:" + tail);
    consecutive_start_failures_++;
    FLEET_LOG(ERROR) << last_start_failure_;
    if (consecutive_start_failures_ >= options_.worker_start_failures_before_error) {
      FailPendingRequests(last_start_failure_);
    }
  }
  auto it = leases_.find(worker_id);
  if (it != leases_.end()) {
    resources_.Release(it->second.alloc);
    leases_.erase(it);
    MarkResourcesDirty();
  }
  auto c = worker_conn_by_id_.find(worker_id);
  if (c != worker_conn_by_id_.end()) {
    auto conn = c->second;
    worker_conn_by_id_.erase(c);
    worker_conns_.erase(conn.get());
    conn->Close();
  }
  Schedule();
}

void NodeServer::MaybeFinalizeExit(const std::shared_ptr<WorkerIo>& wio) {
  if (!wio->exited || !wio->err_eof) return;
  ExitInfo info;
  info.reason = wio->exit_reason;
  info.last_lines.assign(wio->tail.begin(), wio->tail.end());
  exited_[wio->worker_id] = std::move(info);
  exited_order_.push_back(wio->worker_id);
  if (exited_order_.size() > 256) {
    exited_.erase(exited_order_.front());
    exited_order_.pop_front();
  }
  auto waiters = exit_waiters_.find(wio->worker_id);
  if (waiters != exit_waiters_.end()) {
    auto list = std::move(waiters->second);
    exit_waiters_.erase(waiters);
    for (auto& w : list) {
      if (auto c = w.conn.lock()) AnswerExit(c, w.request_id, wio->worker_id);
    }
  }
  worker_io_.erase(wio->worker_id);
}

void NodeServer::AnswerExit(const rpc::ConnectionPtr& conn, uint64_t request_id,
                            const std::string& worker_id) {
  rpc::Envelope reply;
  auto* r = reply.mutable_get_worker_exit_reply();
  auto it = exited_.find(worker_id);
  if (it != exited_.end()) {
    r->set_known(true);
    r->set_reason(it->second.reason);
    for (auto& l : it->second.last_lines) r->add_last_lines(l);
  }
  conn->Reply(request_id, reply);
}

void NodeServer::FailPendingRequests(const std::string& why) {
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

void NodeServer::OnSigchld() {
  int status;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) OnProcessExit(pid, status);
  sigchld_.async_wait([this](const asio::error_code& ec, int) {
    if (!ec) OnSigchld();
  });
}

void NodeServer::OnProcessExit(int pid, int status) {
  auto id = pool_.IdOfPid(pid);
  std::ostringstream why;
  if (WIFEXITED(status)) {
    why << "exited with code " << WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    why << "was killed by signal " << sig;
    if (sig == SIGKILL) why << " (SIGKILL: killed by a user or another process, or out of memory)";
    if (sig == SIGSEGV) why << " (SIGSEGV: a crash in native code)";
  }
  if (id) {
    FLEET_LOG(INFO) << "worker pid " << pid << " " << why.str();
    OnWorkerGone(*id, why.str());
  }
  for (auto& [wid, wio] : worker_io_) {
    if (wio->pid == pid) {
      wio->exited = true;
      wio->exit_reason = why.str();
      auto keep = wio;
      MaybeFinalizeExit(keep);
      break;
    }
  }
}

void NodeServer::Tick() {
  auto now = std::chrono::steady_clock::now();
  if (now - started_at_ > std::chrono::seconds(1)) MaybeStartZygote(true);
  // Surplus idle workers exit.
  for (auto& w : pool_.ReapCandidates(now)) {
    auto c = worker_conn_by_id_.find(w.id);
    if (c != worker_conn_by_id_.end()) {
      rpc::Envelope m;
      m.mutable_exit_worker();
      c->second->Send(m);
    }
    pool_.Remove(w.id);  // no longer leasable; SIGCHLD reaps it
    auto wc = worker_conn_by_id_.find(w.id);
    if (wc != worker_conn_by_id_.end()) {
      worker_conns_.erase(wc->second.get());
      worker_conn_by_id_.erase(wc);
    }
  }
  // Copies served for objects that are gone here need no forwarding.
  std::erase_if(copies_, [&](const auto& kv) { return !store_->Contains(kv.first); });
  // Requests no node can satisfy: tell the requester, once.
  for (auto& e : pending_) {
    if (e.warned || FeasibleAnywhere(e)) continue;
    if (now - e.since < std::chrono::milliseconds(options_.infeasible_warning_ms)) continue;
    e.warned = true;
    std::string text = "The task '" + e.description + "' requires " + Describe(e.resources) +
                       ", which no node in the cluster can satisfy (" +
                       std::to_string(cluster_.size() + 1) + " node(s) alive; this one has " +
                       Describe(resources_.total()) +
                       "). It stays pending until a node with these resources joins.";
    FLEET_LOG(WARNING) << text;
    if (auto c = e.conn.lock()) {
      rpc::Envelope w;
      w.mutable_warning()->set_message(text);
      c->Send(w);
    }
  }
  ReportResources();
  tick_timer_.expires_after(std::chrono::milliseconds(500));
  tick_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) Tick();
  });
}

void NodeServer::MarkResourcesDirty() {
  if (report_armed_) return;
  report_armed_ = true;
  report_timer_.expires_after(std::chrono::milliseconds(5));
  report_timer_.async_wait([this](const asio::error_code& ec) {
    report_armed_ = false;
    if (!ec) ReportResources();
  });
}

void NodeServer::ReportResources() {
  if (!gcs_) return;
  rpc::Envelope m;
  auto* r = m.mutable_report_resources();
  r->set_node_id(node_id_);
  for (auto& [k, v] : ToDoubles(resources_.available())) (*r->mutable_available())[k] = v;
  for (auto& [k, v] : ToDoubles(resources_.total())) (*r->mutable_total())[k] = v;
  // What waits here, by shape, for `fleet status`.
  std::map<std::pair<ResourceSet, bool>, std::pair<int, std::string>> demands;
  for (auto& e : pending_) {
    auto& d = demands[{e.resources, !FeasibleAnywhere(e)}];
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
  gcs_->Send(m);
}

}  // namespace fleet::node
