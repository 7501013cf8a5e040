// NodeServer implementation; see node_server.h.
#include "node/node_server.h"

#include <algorithm>
#include <thread>

#include <unistd.h>

#include "common/ids.h"
#include "common/logging.h"

namespace fleet::node {

namespace {
int NumCpus(const std::map<std::string, double>& r) {
  auto it = r.find("CPU");
  return it == r.end() ? 0 : static_cast<int>(it->second);
}

WorkerSupervisorOptions SupervisorOptions(const NodeOptions& o, const std::string& node_id) {
  WorkerSupervisorOptions s;
  s.python = o.python;
  s.use_zygote = o.use_zygote;
  s.start_failures_before_error = o.worker_start_failures_before_error;
  s.session_dir = o.session_dir;
  s.node_id = node_id;
  s.node_ip = o.node_ip;
  s.unix_socket = o.unix_socket;
  s.gcs_address = o.gcs_address;
  s.token = o.token;
  return s;
}
}  // namespace

NodeServer::NodeServer(asio::io_context& io, NodeOptions options)
    : io_(io), options_(std::move(options)), node_id_(RandomId()),
      resources_(FromDoubles(options_.resources)),
      pool_(std::max(1, NumCpus(options_.resources)), std::max(2, NumCpus(options_.resources)),
            options_.idle_worker_timeout_ms),
      scheduler_(node_id_, options_.spread_threshold),
      supervisor_(io, SupervisorOptions(options_, node_id_), pool_,
                  {.exited = [this](const std::string& id, const std::string& why) { OnWorkerGone(id, why); },
                   .output = [this](const rpc::Envelope& m) {
                     if (gcs_) gcs_->Send(m);
                   }}),
      leases_(resources_, pool_, scheduler_,
              {.start_workers = [this](int n) { supervisor_.StartWorkers(n); },
               .kill_worker = [this](const std::string& id) { supervisor_.KillWorker(id); },
               .dedicated = [this](const std::string& id,
                                   const std::string& actor_class) { supervisor_.SetLabel(id, actor_class); },
               .resources_changed = [this] { MarkResourcesDirty(); },
               .start_failure = [this]() -> const std::string* {
                 return supervisor_.failing() ? &supervisor_.last_start_failure() : nullptr;
               }}),
      bundles_(resources_, {.revoke = [this](const std::set<std::string>& names) { leases_.RevokeUsing(names); },
                            .resources_changed = [this] { MarkResourcesDirty(); },
                            .schedule = [this] { leases_.Schedule(); }}),
      tick_timer_(io), report_timer_(io) {
  scheduling::NodeLabels labels(options_.labels.begin(), options_.labels.end());
  labels["ray.io/node-id"] = ToHex(node_id_);  // Ray's default label
  scheduler_.SetLocalLabels(std::move(labels));
  RegisterHandlers();
}

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
  store::ClientId transfer_client = sessions_.NewStoreClient();

  store::StoreOptions so = options_.store;
  if (so.spill_dir.empty()) so.spill_dir = options_.session_dir + "/spill/" + ToHex(node_id_).substr(0, 12);
  store_ = std::make_unique<store::ObjectStore>(io_, so);
  if (Status ss = store_->Init(); !ss.ok()) return ss;
  transfer_ = std::make_unique<ObjectTransfer>(
      io_,
      TransferOptions{node_id_, options_.token, options_.transfer_chunk_bytes,
                      options_.transfer_chunks_in_flight},
      *store_, transfer_client, scheduler_.view());
  store_service_ = std::make_unique<StoreService>(*store_, *transfer_, sessions_);

  supervisor_.Start();

  // Register with the control store. Connect synchronously: we are not on a
  // running io thread yet, so wait for the reply by running the loop.
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role("node");
  hello.set_pid(getpid());
  auto conn = rpc::Connect(io_, options_.gcs_address, hello);
  if (!conn.ok()) return conn.status();
  gcs_ = conn.value();
  gcs_session_.conn = gcs_;
  gcs_session_.role = rpc::PeerRole::kGcs;
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
  for (auto& [k, v] : scheduler_.local_labels()) (*info->mutable_labels())[k] = v;
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

  // By default one worker per CPU, but no more than the machine's cores: a
  // node that declares num_cpus=1000 on 2 cores must not fork 1000 workers
  // before it serves (the rest start on demand, as in Ray).
  int prestart = options_.num_prestart;
  if (prestart < 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    prestart = std::min(NumCpus(options_.resources), cores);
  }
  supervisor_.Prestart(prestart);
  Tick();
  return Status::OK();
}

void NodeServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  leases_.Stop();
  if (transfer_) transfer_->Stop();
  supervisor_.Stop();
  if (listener_) listener_->Close();
  if (store_) store_->Shutdown();
  io_.stop();
}

// ---- routing ----------------------------------------------------------------

void NodeServer::RegisterHandlers() {
  using rpc::PeerRole;
  using rpc::RoleBit;
  constexpr rpc::RoleMask kGcs = RoleBit(PeerRole::kGcs);
  constexpr rpc::RoleMask kNode = RoleBit(PeerRole::kNode);
  // Lease requests come from core workers (their node connection, or a
  // submitter's after a spillback) and from fleet-gcs (actors).
  constexpr rpc::RoleMask kLeasers = rpc::kClientRoles | RoleBit(PeerRole::kSubmitter) | kGcs;
  auto& d = dispatcher_;
  FLEET_RPC_HANDLE(d, Hello, hello, HandleHello);
  FLEET_RPC_HANDLE(d, GetNodeStats, get_node_stats, HandleGetNodeStats);  // also every client's ping
  FLEET_RPC_HANDLE(d, RequestLease, request_lease, leases_.HandleRequestLease, kLeasers);
  FLEET_RPC_HANDLE(d, ReturnLease, return_lease, leases_.HandleReturnLease, kLeasers);
  FLEET_RPC_HANDLE(d, CancelLeaseRequests, cancel_lease_requests, leases_.HandleCancelLeaseRequests,
                   kLeasers);
  FLEET_RPC_HANDLE(d, NotifyBlocked, notify_blocked, leases_.HandleNotifyBlocked, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, GetWorkerExit, get_worker_exit, supervisor_.HandleGetWorkerExit, kLeasers);
  FLEET_RPC_HANDLE(d, StoreInfo, store_info, store_service_->HandleStoreInfo, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, StoreCreate, store_create, store_service_->HandleStoreCreate, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, StoreSeal, store_seal, store_service_->HandleStoreSeal, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, StoreGet, store_get, store_service_->HandleStoreGet, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, StoreRelease, store_release, store_service_->HandleStoreRelease, rpc::kClientRoles);
  // From owners, and forwarded by the nodes that hold primaries or served copies.
  FLEET_RPC_HANDLE(d, StoreFree, store_free, store_service_->HandleStoreFree, rpc::kClientRoles | kNode);
  FLEET_RPC_HANDLE(d, StoreList, store_list, store_service_->HandleStoreList, rpc::kClientRoles);
  FLEET_RPC_HANDLE(d, PullObject, pull_object, transfer_->HandlePullObject, kNode);
  FLEET_RPC_HANDLE(d, PrepareBundles, prepare_bundles, bundles_.HandlePrepareBundles, kGcs);
  FLEET_RPC_HANDLE(d, CommitBundles, commit_bundles, bundles_.HandleCommitBundles, kGcs);
  FLEET_RPC_HANDLE(d, ReleaseBundles, release_bundles, bundles_.HandleReleaseBundles, kGcs);

  auto& g = gcs_dispatcher_;
  FLEET_RPC_HANDLE(g, ClusterView, cluster_view, HandleClusterView, kGcs);
  FLEET_RPC_HANDLE(g, PrepareBundles, prepare_bundles, bundles_.HandlePrepareBundles, kGcs);
  FLEET_RPC_HANDLE(g, CommitBundles, commit_bundles, bundles_.HandleCommitBundles, kGcs);
  FLEET_RPC_HANDLE(g, ReleaseBundles, release_bundles, bundles_.HandleReleaseBundles, kGcs);
}

void NodeServer::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  std::shared_ptr<ClientSession> session = sessions_.Open(conn);  // held: a handler may close it
  Status st = dispatcher_.Dispatch(*session, session->role, msg);
  if (!st.ok()) rpc::Refuse(*conn, msg, st);
}

void NodeServer::OnGcsMessage(rpc::Envelope& msg) {
  Status st = gcs_dispatcher_.Dispatch(gcs_session_, rpc::PeerRole::kGcs, msg);
  if (!st.ok()) rpc::Refuse(*gcs_, msg, st);
}

void NodeServer::OnClose(const rpc::ConnectionPtr& conn, const Status&) {
  std::shared_ptr<ClientSession> s = sessions_.Remove(conn.get());
  if (store_ && s) {
    if (s->store_client != 0) store_->ClientGone(s->store_client);
    if (!s->address.empty()) store_->OwnerGone(s->address);  // its objects die with it
  }
  if (s && !s->worker_id.empty()) {
    // The process is gone or going; SIGCHLD will reap it.
    OnWorkerGone(s->worker_id, "its connection closed");
  }
  // As a client (a driver, or a worker that submitted tasks of its own):
  // drop its queued requests and revoke its leases, whose workers may run
  // its tasks (they were leaked until another client left).
  leases_.OnClientGone(conn);
}

// ---- the router's own messages -----------------------------------------------

void NodeServer::HandleHello(ClientSession& s, uint64_t, const rpc::Hello& h) {
  if ((h.role() == "worker" || h.role() == "driver") && !h.address().empty()) s.address = h.address();
  if (h.role() != "worker") return;
  if (!pool_.OnRegistered(h.worker_id(), h.address(), std::chrono::steady_clock::now())) {
    FLEET_LOG(WARNING) << "unknown worker " << ToHex(h.worker_id()) << " (pid " << h.pid()
                       << ") tried to register; closing it";
    s.conn->Close();
    return;
  }
  supervisor_.OnRegistered();
  sessions_.BindWorker(s, h.worker_id());
  leases_.Schedule();
  supervisor_.MaybeStartZygote(false);
}

void NodeServer::HandleGetNodeStats(ClientSession& s, uint64_t rid, const rpc::GetNodeStats&) {
  if (rid == 0) return;
  rpc::Envelope reply;
  auto* r = reply.mutable_get_node_stats_reply();
  for (auto& [k, v] : ToDoubles(resources_.total())) (*r->mutable_total())[k] = v;
  for (auto& [k, v] : ToDoubles(resources_.available())) (*r->mutable_available())[k] = v;
  r->set_num_workers(pool_.size());
  r->set_num_idle_workers(pool_.num_idle());
  for (int pid : pool_.Pids()) r->add_worker_pids(pid);
  r->set_pending_leases(leases_.num_pending());
  r->set_node_id(node_id_);
  if (int zpid = supervisor_.zygote_pid(); zpid != 0) r->set_zygote_pid(zpid);
  s.conn->Reply(rid, reply);
}

void NodeServer::HandleClusterView(ClientSession&, uint64_t, rpc::ClusterView& m) {
  scheduler_.SetView(m);
  if (transfer_) transfer_->OnClusterChanged();  // peers that left: their connections go
  leases_.Schedule();
}

void NodeServer::OnWorkerGone(const std::string& worker_id, const std::string& why) {
  auto w = pool_.Remove(worker_id);
  if (!w) return;
  if (w->state == WorkerState::kStarting && supervisor_.OnStartFailure(worker_id, w->pid, why)) {
    leases_.FailPendingRequests(supervisor_.last_start_failure());
  }
  leases_.OnWorkerGone(worker_id);
  if (auto conn = sessions_.UnbindWorker(worker_id)) conn->Close();
  leases_.Schedule();
}

// ---- periodic work ----------------------------------------------------------

void NodeServer::Tick() {
  auto now = std::chrono::steady_clock::now();
  supervisor_.Tick(now);
  // Surplus idle workers exit.
  for (auto& w : pool_.ReapCandidates(now)) {
    if (ClientSession* s = sessions_.FindWorker(w.id)) {
      rpc::Envelope m;
      m.mutable_exit_worker();
      s->conn->Send(m);
    }
    pool_.Remove(w.id);  // no longer leasable; SIGCHLD reaps it
    sessions_.UnbindWorker(w.id);
  }
  transfer_->Tick();
  leases_.WarnInfeasible(now, std::chrono::milliseconds(options_.infeasible_warning_ms));
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
  leases_.AddDemands(r);  // what waits here, by shape, for `fleet status`
  gcs_->Send(m);
}

}  // namespace fleet::node
