// CoreWorker implementation; see core_worker.h.
#include "core/core_worker.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <future>

#include "common/logging.h"
#include "core/object_flags.h"

namespace fleet {

namespace {
constexpr int kRpcTimeoutMs = 60000;
}  // namespace

CoreWorker::CoreWorker(const CoreOptions& options)
    : options_(options),
      store_([this](const std::string& id, const std::string& owner) { FetchFromOwner(id, owner); }) {}

Result<std::unique_ptr<CoreWorker>> CoreWorker::Create(const CoreOptions& options) {
  std::unique_ptr<CoreWorker> core(new CoreWorker(options));
  Status s = core->Init();
  if (!s.ok()) {
    core->Shutdown();
    return s;
  }
  return core;
}

CoreWorker::~CoreWorker() { Shutdown(); }

Status CoreWorker::Init() {
  worker_id_ = options_.worker_id.empty() ? RandomId() : options_.worker_id;
  work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io_.get_executor());
  // Every component exists before the first connection can deliver a message.
  peers_ = std::make_unique<PeerConnections>(
      io_, options_.token, worker_id_, [this](const std::string& a) { refs_->OnPeerClosed(a); });
  refs_ = std::make_unique<ReferenceCounter>(io_, store_, *peers_);
  locator_ = std::make_unique<ObjectLocator>(store_, *peers_);
  log_printer_ = std::make_unique<LogPrinter>(io_, options_.dedup_logs);
  gcs_ = std::make_unique<GcsClient>(
      io_,
      GcsClientOptions{.address = options_.gcs_address,
                       .token = options_.token,
                       .is_worker = options_.is_worker,
                       .worker_id = worker_id_,
                       .log_to_driver = options_.log_to_driver,
                       .connect_timeout_ms = options_.connect_timeout_ms},
      [this](const rpc::ConnectionPtr& conn, rpc::Envelope& m) { OnGcsMessage(conn, m); });
  receiver_ = std::make_unique<TaskReceiver>(
      io_, [this](const std::vector<std::string>& ids) { store_client_->Free(ids); },
      [this](const std::string& task_id) {
        submitter_->CancelChildren(task_id, /*force=*/false);
        actor_submitter_->CancelChildren(task_id);
      });
  RegisterHandlers();
  io_thread_ = std::thread([this] { io_.run(); });

  // Our own listener: submitters push tasks here, borrowers fetch objects.
  listener_ = std::make_unique<rpc::Listener>(
      io_, options_.token,
      [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnMessage(c, m); },
      [this](const rpc::ConnectionPtr& c, const Status&) { refs_->OnConnectionClosed(c); });
  std::promise<Result<std::string>> listening;
  asio::post(io_, [&] {
    auto unix_address = listener_->ListenUnix(options_.listen_path);
    if (!unix_address.ok() || options_.node_ip.empty()) return listening.set_value(unix_address);
    auto port = listener_->ListenTcp(options_.node_ip, 0);
    if (!port.ok()) return listening.set_value(port.status());
    listening.set_value(rpc::JoinAddress(options_.node_ip + ":" + std::to_string(port.value()),
                                         unix_address.value()));
  });
  auto addr = listening.get_future().get();
  if (!addr.ok()) return addr.status();
  address_ = addr.value();
  peers_->set_self_address(address_);
  refs_->set_self_address(address_);

  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role(options_.is_worker ? "worker" : "driver");
  hello.set_worker_id(worker_id_);
  hello.set_pid(getpid());
  hello.set_address(address_);
  hello.set_log_to_driver(options_.log_to_driver);
  auto node = rpc::ConnectAndStart(
      io_, options_.node_address, hello,
      [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnNodeMessage(c, m); },
      [this](const rpc::ConnectionPtr&, const Status& s) {
        if (options_.is_worker) {
          receiver_->SetExiting();  // our node daemon is gone: nothing left to do
        } else if (!shut_down_) {
          FLEET_LOG(WARNING) << "lost the connection to the local fleet-node: " << s.message();
        }
      },
      options_.connect_timeout_ms);
  if (!node.ok()) {
    return Status(node.status().code(),
                  "cannot connect to the fleet-node: " + node.status().message());
  }
  node_ = node.value();
  store_client_ = std::make_unique<StoreClient>(node_);
  // The object may live on another node (a task ran there): the local
  // fleet-node forwards the free to it.
  store_.SetFreeHook([this](const std::string& id, const std::string& descriptor) {
    store_client_->Free({id}, {descriptor.size() > 8 ? descriptor.substr(8) : std::string()});
    locator_->Forget(id);
  });
  store_.SetReleaseBorrowHook(
      [this](const std::string& id, const std::string& owner, int count, bool unconfirmed) {
        refs_->ReleaseBorrow(id, owner, count, unconfirmed);
      });
  auto stats = GetNodeStats();
  if (stats.ok()) node_id_ = stats->node_id();
  locator_->set_self(address_, node_id_);
  log_printer_->set_node_id(node_id_);

  // Connected up front (workers too): actor updates arrive on it, and the io
  // thread may need it, where connecting is not allowed.
  auto gcs = gcs_->Connection();
  if (!gcs.ok()) return gcs.status();
  if (!options_.is_worker) {
    auto job = gcs_->RegisterJob(getpid(), options_.namespace_name);
    if (!job.ok()) return job.status();
    job_id_ = job.value();
  }

  rpc::Hello submit_hello = hello;
  submit_hello.set_role("submitter");
  submitter_ = std::make_unique<TaskSubmitter>(
      io_, store_, node_, submit_hello, options_.submitter,
      [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
        if (m.has_warning()) OnNodeMessage(c, m);
      });
  actor_submitter_ = std::make_unique<ActorSubmitter>(
      io_, store_, [this] { return gcs_->Connection(); }, submit_hello);
  trim_timer_ = std::make_unique<asio::steady_timer>(io_);
  asio::post(io_, [this] { TrimMemory(); });
  return Status::OK();
}

void CoreWorker::Shutdown() {
  if (shut_down_) return;
  if (log_printer_) log_printer_->FlushAll();
  shut_down_ = true;
  if (receiver_) receiver_->Shutdown();  // held replies must not be lost (actor exit)
  if (submitter_) submitter_->Shutdown();
  if (actor_submitter_) actor_submitter_->Shutdown();
  // Views of store objects (numpy arrays from get) outlive shutdown: keep
  // our connection to fleet-node open (a duplicate of its socket, never
  // closed; not shut down) until this process exits, so the node keeps their
  // pins (and our objects) instead of reusing the memory under them.
  bool keep_node = false;
  if (node_ && store_client_ && store_client_->ViewsAlive()) {
    int fd = node_->DupSocket();
    keep_node = fd >= 0;
    if (keep_node) {
      FLEET_LOG(DEBUG) << "store views outlive shutdown; holding fd " << fd;
    }
  }
  if (io_thread_.joinable()) {
    std::promise<void> closed;
    asio::post(io_, [&] {
      if (listener_) listener_->Close();
      if (trim_timer_) trim_timer_->cancel();
      if (receiver_) receiver_->CancelTimer();
      if (node_ && !keep_node) node_->Close();
      if (gcs_) gcs_->Close();
      if (peers_) peers_->CloseAll();
      closed.set_value();
    });
    closed.get_future().wait();
    work_.reset();
    io_.stop();
    io_thread_.join();
  }
}

void CoreWorker::TrimMemory() {
  size_t n = store_.Size();
  if (peak_objects_ >= 10000 && n < peak_objects_ / 4 && submitter_->NumPendingTasks() < 1000) {
    store_.Compact();
    malloc_trim(0);
    peak_objects_ = n;
  }
  peak_objects_ = std::max(peak_objects_, n);
  trim_timer_->expires_after(std::chrono::seconds(1));
  trim_timer_->async_wait([this](const asio::error_code& ec) {
    if (!ec) TrimMemory();
  });
}

// ---- objects ------------------------------------------------------------------

std::string CoreWorker::Put(std::string data, uint32_t flags) {
  std::string id = ids_.NextPutId(job_id_);
  store_.PutReady(id, std::move(data), flags, /*local_refs=*/1);  // taken over by the ObjectRef
  return id;
}

Result<StoredObject> CoreWorker::EncodeValue(const std::string& id,
                                             const std::string& owner_address,
                                             std::string_view inband,
                                             const std::vector<ByteSpan>& buffers,
                                             const std::string& call_site) {
  StoredObject out;
  if (buffers.empty() && inband.size() <= kInlineThreshold) {
    out.data.assign(inband);
    return out;
  }
  uint64_t size = FramedSize(inband.size(), buffers);
  if (size <= kInlineThreshold) {
    out.data.resize(size);
    WriteFramed(reinterpret_cast<uint8_t*>(out.data.data()), inband, buffers);
    return out;
  }
  Status s = store_client_->Put(id, size, owner_address.empty() ? address_ : owner_address,
                                call_site,
                                [&](uint8_t* dst) { WriteFramed(dst, inband, buffers); });
  if (!s.ok()) return s;
  out.data = StoreDescriptor(size, node_id_);
  out.flags = kFlagInStore;
  return out;
}

Result<StoredObject> CoreWorker::EncodeReturn(uint64_t handle, uint32_t index, bool generator_item,
                                              std::string_view inband,
                                              const std::vector<ByteSpan>& buffers) {
  std::string task_id, owner;
  if (!receiver_->Lookup(handle, &task_id, &owner)) {
    return Status::NotFound("the task is no longer running here");
  }
  std::string id =
      generator_item ? GeneratorItemId(task_id, index) : ReturnObjectId(task_id, index + 1);
  auto v = EncodeValue(id, owner, inband, buffers, "");
  if (v.ok() && (v->flags & kFlagInStore) && !generator_item) receiver_->RecordStored(handle, index, id);
  return v;
}

void CoreWorker::RegisterReturnRefs(uint64_t handle, uint32_t index,
                                    const std::vector<std::string>& ids, bool generator_item) {
  std::string caller;
  if (!receiver_->Lookup(handle, nullptr, &caller)) return;
  receiver_->AddNested(handle, index, generator_item, refs_->RegisterReturnRefs(caller, ids));
}

Result<std::string> CoreWorker::PutValue(std::string_view inband,
                                         const std::vector<ByteSpan>& buffers,
                                         const std::string& call_site) {
  std::string id = ids_.NextPutId(job_id_);
  auto v = EncodeValue(id, "", inband, buffers, call_site);
  if (!v.ok()) return v.status();
  store_.PutReady(id, std::move(v->data), v->flags, /*local_refs=*/1);
  return id;
}

Result<std::vector<StoreRead>> CoreWorker::ReadStore(const std::vector<std::string>& ids,
                                                      const std::vector<std::string>& sources) {
  return store_client_->Get(ids, sources);
}

std::vector<StoreRead> CoreWorker::ReadStoredValues(const std::vector<std::string>& ids,
                                                    const std::vector<std::string_view>& descriptors) {
  std::vector<std::string> sources;
  sources.reserve(descriptors.size());
  for (auto d : descriptors) sources.push_back(StoreDescriptorNode(d));
  auto r = ReadStore(ids, sources);
  std::vector<StoreRead> out = r.ok() ? std::move(r).value() : std::vector<StoreRead>(ids.size());
  for (size_t i = 0; i < out.size(); i++) {
    if (!r.ok()) out[i].error = r.status().message();
    if (!out[i].view && !out[i].full) {
      out[i].error = "Object " + ToHex(ids[i]) + " is lost: " + out[i].error;
    }
  }
  return out;
}

Result<rpc::StoreListReply> CoreWorker::StoreList() { return store_client_->List(); }

void CoreWorker::FlushLogs() { log_printer_->FlushAll(); }

Result<std::vector<rpc::ObjectLocations>> CoreWorker::ObjectLocations(
    const std::vector<std::string>& ids, int64_t timeout_ms) {
  return locator_->Locate(ids, timeout_ms);
}

void CoreWorker::QueueBorrowRegistration(const std::string& owner, const std::string& id) {
  refs_->QueueBorrowRegistration(owner, id);
}

void CoreWorker::FlushBorrowRegistrations() { refs_->FlushBorrowRegistrations(); }

void CoreWorker::OnBlocked(bool blocked) {
  // As Ray: only a normal task blocking on its main thread lends its
  // resources (an actor holds its own for life; other threads do not count).
  if (!options_.is_worker) return;
  if (blocked && !receiver_->BlockingReleasesResources()) return;
  if (blocked_.exchange(blocked) == blocked) return;  // no change
  rpc::Envelope m;
  m.mutable_notify_blocked()->set_blocked(blocked);
  node_->Send(m);
}

Result<std::vector<StoredObject>> CoreWorker::Get(const std::vector<std::string>& ids,
                                                  int64_t timeout_ms, bool more_slices) {
  auto r = store_.Get(ids, timeout_ms, [this](bool b) {
    if (b) OnBlocked(true);
  });
  bool another_slice = more_slices && !r.ok() && r.status().code() == StatusCode::kTimedOut;
  if (!another_slice) OnBlocked(false);
  return r;
}

Result<std::vector<bool>> CoreWorker::Wait(const std::vector<std::string>& ids, int num_returns,
                                           int64_t timeout_ms, bool fetch_local,
                                           bool more_slices) {
  auto r = store_.Wait(ids, num_returns, timeout_ms, fetch_local, [this](bool b) {
    if (b) OnBlocked(true);
  });
  bool done = !r.ok();
  if (r.ok()) {
    int ready = 0;
    for (bool b : r.value()) ready += b ? 1 : 0;
    done = ready >= num_returns;
  }
  if (!more_slices || done) OnBlocked(false);
  return r;
}

void CoreWorker::FetchFromOwner(const std::string& id, const std::string& owner) {
  auto conn = peers_->To(owner);
  if (!conn.ok()) {
    store_.Complete(id,
                    "The owner of object " + ToHex(id) + " (at " + owner +
                        ") is unreachable, so the object is lost: " + conn.status().message(),
                    kFlagOwnerDied);
    return;
  }
  rpc::Envelope req;
  req.mutable_get_object()->set_object_id(id);
  conn.value()->Call(req, [this, id, owner](const Status& s, rpc::Envelope& reply) {
    if (!s.ok()) {
      store_.Complete(id,
                      "The owner of object " + ToHex(id) + " (at " + owner +
                          ") died before the object could be fetched: " + s.message(),
                      kFlagOwnerDied);
      return;
    }
    auto* r = reply.mutable_get_object_reply();
    if (!r->found()) {
      store_.Complete(id, "Object " + ToHex(id) + " was freed by its owner (" + owner + ")",
                      kFlagObjectLost);
      return;
    }
    store_.Complete(id, std::move(*r->mutable_data()), r->flags(), /*borrowed=*/true);
  });
}

// ---- incoming messages ----------------------------------------------------------

void CoreWorker::RegisterHandlers() {
  using rpc::PeerRole;
  using rpc::RoleBit;
  FLEET_RPC_HANDLE(listener_table_, Hello, hello, HandleHello);
  FLEET_RPC_HANDLE(listener_table_, GetObject, get_object, HandleGetObject, RoleBit(PeerRole::kPeer));
  FLEET_RPC_HANDLE(listener_table_, CancelOwnedTask, cancel_owned_task, HandleCancelOwnedTask,
                   RoleBit(PeerRole::kPeer));
  receiver_->RegisterHandlers(listener_table_, node_table_);
  refs_->RegisterHandlers(listener_table_);
  locator_->RegisterHandlers(listener_table_);
  log_printer_->RegisterHandlers(gcs_table_, node_table_);
  FLEET_RPC_HANDLE(gcs_table_, ActorUpdate, actor_update, HandleActorUpdate,
                   RoleBit(PeerRole::kGcs));
}

void CoreWorker::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  Status st = listener_table_.Dispatch(conn, rpc::ParseRole(conn->hello().role()), msg);
  if (!st.ok()) rpc::Refuse(*conn, msg, st);
}

// We connected to fleet-node and fleet-gcs, so we know their role; what
// they send that we do not handle is dropped, as it always was.
void CoreWorker::OnNodeMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  if (node_table_.Handles(msg.body_case())) (void)node_table_.Dispatch(conn, rpc::PeerRole::kNode, msg);
}

void CoreWorker::OnGcsMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  if (gcs_table_.Handles(msg.body_case())) (void)gcs_table_.Dispatch(conn, rpc::PeerRole::kGcs, msg);
}

// The peer's Hello is kept by its connection (conn->hello()).
void CoreWorker::HandleHello(const rpc::ConnectionPtr&, uint64_t, rpc::Hello&) {}

void CoreWorker::HandleActorUpdate(const rpc::ConnectionPtr&, uint64_t, rpc::ActorUpdate& m) {
  if (actor_submitter_) actor_submitter_->OnUpdate(m.info());
}

void CoreWorker::HandleGetObject(const rpc::ConnectionPtr& conn, uint64_t rid, rpc::GetObject& m) {
  std::string id = m.object_id();
  std::weak_ptr<rpc::Connection> weak = conn;
  auto reply_with = [weak, rid](const StoredObject& v) {
    auto c = weak.lock();
    if (!c) return;
    rpc::Envelope reply;
    auto* r = reply.mutable_get_object_reply();
    r->set_found(true);
    r->set_data(v.data);
    r->set_flags(v.flags);
    c->Reply(rid, reply);
  };
  StoredObject value;
  auto r = store_.GetOrSubscribe(id, &value, reply_with);
  if (!r.ok()) {
    rpc::Envelope reply;
    reply.mutable_get_object_reply()->set_found(false);
    conn->Reply(rid, reply);
  } else if (r.value()) {
    reply_with(value);
  }
}

// ---- tasks ----------------------------------------------------------------------

void CoreWorker::StampCaller(rpc::TaskSpec* spec) {
  spec->set_owner_address(address_);
  // A nested submission: its parent, for recursive cancel. The binding sets
  // it from the call's context (concurrent actors run several calls at once);
  // otherwise it is the task the main thread runs.
  if (options_.is_worker && spec->parent_task_id().empty()) {
    spec->set_parent_task_id(receiver_->CurrentTaskId());
  }
}

std::vector<std::string> CoreWorker::SubmitTask(TaskSubmission&& task) {
  StampCaller(&task.spec);
  return submitter_->Submit(std::move(task));
}

std::optional<ExecutableTask> CoreWorker::NextTask() { return receiver_->NextTask(); }
int CoreWorker::EnableTaskEvents() { return receiver_->EnableTaskEvents(); }
std::optional<ExecutableTask> CoreWorker::TryNextTask() { return receiver_->TryNextTask(); }

void CoreWorker::FinishTask(uint64_t handle,
                            std::vector<std::pair<std::string, uint32_t>>&& returns,
                            bool retryable_error, bool worker_exiting) {
  receiver_->FinishTask(handle, std::move(returns), retryable_error, worker_exiting);
}

bool CoreWorker::TakeCancelRequest(const std::string& task_id, bool keep) {
  return receiver_->TakeCancelRequest(task_id, keep);
}

void CoreWorker::SetConcurrent(bool concurrent) { receiver_->SetConcurrent(concurrent); }

void CoreWorker::SendGeneratorItem(uint64_t handle, int index, std::string data, uint32_t flags) {
  receiver_->SendGeneratorItem(handle, index, std::move(data), flags);
}

bool CoreWorker::CancelTask(const std::string& task_id, bool force, bool recursive,
                            const std::string& object_id) {
  if (submitter_->Cancel(task_id, force, recursive)) return true;
  if (actor_submitter_->Cancel(task_id, recursive)) return true;
  if (object_id.empty()) return false;
  std::optional<std::string> owner = store_.OwnerOf(object_id);
  if (!owner || owner->empty()) return false;
  auto conn = peers_->To(*owner);
  if (!conn.ok()) return false;  // the owner is gone, and its tasks with it
  rpc::Envelope m;
  auto* c = m.mutable_cancel_owned_task();
  c->set_task_id(task_id);
  c->set_force(force);
  c->set_recursive(recursive);
  conn.value()->Send(m);
  return true;
}

void CoreWorker::HandleCancelOwnedTask(const rpc::ConnectionPtr&, uint64_t,
                                       rpc::CancelOwnedTask& m) {
  // Runs on the io thread: Cancel only queues sends and fails tasks locally.
  CancelTask(m.task_id(), m.force(), m.recursive());
}

std::vector<std::string> CoreWorker::SubmitActorTask(TaskSubmission&& call, int max_task_retries) {
  StampCaller(&call.spec);
  return actor_submitter_->Submit(std::move(call), max_task_retries);
}

// ---- control store ----------------------------------------------------------------

Status CoreWorker::KillActor(const std::string& actor_id, bool no_restart, const std::string& reason) {
  return gcs_->KillActor(actor_id, no_restart, reason);
}

Result<std::optional<rpc::ActorInfo>> CoreWorker::GetNamedActor(const std::string& name,
                                                               const std::string& ns) {
  return gcs_->GetNamedActor(name, ns);
}

Result<std::vector<rpc::ActorInfo>> CoreWorker::ListActors() { return gcs_->ListActors(); }

Status CoreWorker::ReportActorExiting(const std::string& actor_id, const std::string& reason) {
  return gcs_->ReportActorExiting(actor_id, reason);
}

Status CoreWorker::KvPut(const std::string& key, const std::string& value, bool overwrite,
                         bool* added) {
  return gcs_->KvPut(key, value, overwrite, added);
}

Result<std::optional<std::string>> CoreWorker::KvGet(const std::string& key) {
  return gcs_->KvGet(key);
}

Result<int> CoreWorker::KvDel(const std::string& key) { return gcs_->KvDel(key); }

Result<std::vector<std::string>> CoreWorker::KvKeys(const std::string& prefix) {
  return gcs_->KvKeys(prefix);
}

Result<rpc::Envelope> CoreWorker::GcsCall(rpc::Envelope req, int64_t timeout_ms) {
  return gcs_->Call(std::move(req), timeout_ms);
}

Result<rpc::GetNodesReply> CoreWorker::GetNodes() { return gcs_->GetNodes(); }

Result<rpc::GetNodeStatsReply> CoreWorker::GetNodeStats() {
  rpc::Envelope req;
  req.mutable_get_node_stats();
  auto r = node_->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  return std::move(*r.value().mutable_get_node_stats_reply());
}

}  // namespace fleet
