// CoreWorker implementation; see core_worker.h.
#include "core/core_worker.h"

#include <cstring>

#include <malloc.h>
#include <signal.h>
#include <sys/eventfd.h>
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

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}
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
  log_timer_ = std::make_unique<asio::steady_timer>(io_);  // before any connection delivers lines
  io_thread_ = std::thread([this] { io_.run(); });

  // Our own listener: submitters push tasks here, borrowers fetch objects.
  listener_ = std::make_unique<rpc::Listener>(
      io_, options_.token,
      [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnMessage(c, m); },
      [this](const rpc::ConnectionPtr& c, const Status&) {
        // A borrower's connection closed: it is gone, and so are its borrows.
        peer_addresses_.erase(c.get());
        auto it = borrower_conns_.find(c.get());
        if (it == borrower_conns_.end()) return;
        store_.DropBorrower(it->second);
        borrower_conns_.erase(it);
      });
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
          // Our node daemon is gone: a worker has nothing left to do.
          std::lock_guard<std::mutex> lk(exec_mu_);
          exiting_ = true;
          exec_cv_.notify_all();
          SignalTaskEventLocked();
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
    std::lock_guard<std::mutex> lk(loc_mu_);
    copy_locations_.erase(id);
  });
  store_.SetReleaseBorrowHook(
      [this](const std::string& id, const std::string& owner, int count, bool unconfirmed) {
        std::lock_guard<std::mutex> lk(borrow_mu_);
        if (unconfirmed) {  // must not overtake its own registration
          deferred_releases_.emplace_back(owner, id, count);
          if (registrations_in_flight_ == 0) ReleaseDeferredLocked();
          return;
        }
        QueueReleaseLocked(owner, id, count);
      });
  auto stats = GetNodeStats();
  if (stats.ok()) node_id_ = stats->node_id();

  // Connected up front (workers too): actor updates arrive on it, and the io
  // thread may need it, where connecting is not allowed.
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  if (!options_.is_worker) {
    rpc::Envelope req;
    req.mutable_register_job()->set_driver_pid(getpid());
    req.mutable_register_job()->set_namespace_(options_.namespace_name);
    auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
    if (!r.ok()) return r.status();
    job_id_ = r.value().register_job_reply().job_id();
  }

  rpc::Hello submit_hello = hello;
  submit_hello.set_role("submitter");
  submitter_ = std::make_unique<TaskSubmitter>(
      io_, store_, node_, submit_hello, options_.submitter,
      [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
        if (m.has_warning()) OnNodeMessage(c, m);
      });
  actor_submitter_ = std::make_unique<ActorSubmitter>(
      io_, store_, [this] { return Gcs(); }, submit_hello);
  trim_timer_ = std::make_unique<asio::steady_timer>(io_);
  hold_timer_ = std::make_unique<asio::steady_timer>(io_);
  asio::post(io_, [this] { TrimMemory(); });
  return Status::OK();
}

void CoreWorker::Shutdown() {
  if (shut_down_) return;
  FlushLogs();
  shut_down_ = true;
  FlushHeldReplies();  // replies held for batching must not be lost (actor exit)
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    exiting_ = true;
    exec_cv_.notify_all();
  }
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
      if (hold_timer_) hold_timer_->cancel();
      if (node_ && !keep_node) node_->Close();
      std::lock_guard<std::mutex> lk(conn_mu_);
      if (gcs_) gcs_->Close();
      for (auto& [a, c] : peers_) c->Close();
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
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return Status::NotFound("the task is no longer running here");
    task_id = it->second.task_id;
    owner = it->second.owner_address;
  }
  std::string id =
      generator_item ? GeneratorItemId(task_id, index) : ReturnObjectId(task_id, index + 1);
  auto v = EncodeValue(id, owner, inband, buffers, "");
  if (v.ok() && (v->flags & kFlagInStore) && !generator_item) {
    std::lock_guard<std::mutex> lk(exec_mu_);
    if (auto it = executing_.find(handle); it != executing_.end()) it->second.stored[index] = id;
  }
  return v;
}

void CoreWorker::RegisterReturnRefs(uint64_t handle, uint32_t index,
                                    const std::vector<std::string>& ids, bool generator_item) {
  std::string caller;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return;
    caller = it->second.owner_address;
  }
  std::vector<std::pair<std::string, std::string>> nested;
  std::map<std::string, rpc::Envelope> remote;  // owner -> AddBorrowers
  for (const auto& id : ids) {
    if (!store_.Contains(id)) {
      store_.MarkEscaped(id);
      continue;
    }
    auto owner = store_.OwnerOf(id);
    if (!owner) {  // ours
      store_.AddBorrower(id, caller, 1);
      WatchBorrower(caller);
      nested.emplace_back(id, address_);
    } else {
      auto& m = remote[*owner];
      m.mutable_add_borrowers()->add_object_ids(id);
      m.mutable_add_borrowers()->set_borrower(caller);
      nested.emplace_back(id, *owner);
    }
  }
  for (auto& [owner, m] : remote) {
    auto conn = ConnectionTo(owner);
    if (conn.ok()) (void)conn.value()->CallSync(m, kRpcTimeoutMs);
  }
  std::lock_guard<std::mutex> lk(exec_mu_);
  auto it = executing_.find(handle);
  if (it == executing_.end()) return;
  auto& dst = generator_item ? it->second.item_nested[index] : it->second.nested[index];
  dst.insert(dst.end(), nested.begin(), nested.end());
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

Result<rpc::StoreListReply> CoreWorker::StoreList() { return store_client_->List(); }

void CoreWorker::QueueReleaseLocked(const std::string& owner, const std::string& id, int count) {
  borrows_to_release_[owner].emplace_back(id, count);
  if (!release_flush_posted_) {
    release_flush_posted_ = true;
    asio::post(io_, [this] { FlushBorrowReleases(); });
  }
}

void CoreWorker::ReleaseDeferredLocked() {
  if (registrations_in_flight_ > 0 || deferred_releases_.empty()) return;
  std::vector<std::tuple<std::string, std::string, int>> keep;
  for (auto& [owner, id, count] : deferred_releases_) {
    bool queued = std::any_of(borrows_to_register_.begin(), borrows_to_register_.end(),
                              [&](const auto& r) { return r.second == id && r.first == owner; });
    if (queued) {
      keep.emplace_back(owner, id, count);  // goes after the flush that sends it
    } else {
      QueueReleaseLocked(owner, id, count);
    }
  }
  deferred_releases_.swap(keep);
}

void CoreWorker::QueueBorrowRegistration(const std::string& owner, const std::string& id) {
  std::lock_guard<std::mutex> lk(borrow_mu_);
  borrows_to_register_.emplace_back(owner, id);
}

void CoreWorker::FlushBorrowRegistrations() {
  std::vector<std::pair<std::string, std::string>> todo;
  {
    std::unique_lock<std::mutex> lk(borrow_mu_);
    todo.swap(borrows_to_register_);
    if (todo.empty()) {
      // Ours may be in a batch another thread is sending: wait for it.
      registrations_done_.wait(lk, [this] { return registrations_in_flight_ == 0; });
      ReleaseDeferredLocked();
      return;
    }
    registrations_in_flight_++;
  }
  std::map<std::string, rpc::Envelope> by_owner;
  std::vector<std::string> ids;
  for (auto& [owner, id] : todo) {
    auto& m = by_owner[owner];
    m.mutable_add_borrowers()->add_object_ids(id);
    m.mutable_add_borrowers()->set_borrower(address_);
    ids.push_back(id);
  }
  for (auto& [owner, m] : by_owner) {
    auto conn = ConnectionTo(owner);
    // An unreachable owner: its objects are lost anyway (get says so).
    if (conn.ok()) (void)conn.value()->CallSync(m, kRpcTimeoutMs);
  }
  store_.ConfirmRegistered(ids);
  std::unique_lock<std::mutex> lk(borrow_mu_);
  registrations_in_flight_--;
  registrations_done_.notify_all();
  registrations_done_.wait(lk, [this] { return registrations_in_flight_ == 0; });
  ReleaseDeferredLocked();
}

void CoreWorker::WatchBorrower(const std::string& borrower) {
  {
    std::lock_guard<std::mutex> lk(borrow_mu_);
    if (!watched_borrowers_.insert(borrower).second) return;
  }
  if (!ConnectionTo(borrower).ok()) {  // gone already
    {
      std::lock_guard<std::mutex> lk(borrow_mu_);
      watched_borrowers_.erase(borrower);
    }
    store_.DropBorrower(borrower);
  }
}

void CoreWorker::FlushBorrowReleases() {
  std::map<std::string, std::vector<std::pair<std::string, int>>> todo;
  {
    std::lock_guard<std::mutex> lk(borrow_mu_);
    todo.swap(borrows_to_release_);
    release_flush_posted_ = false;
  }
  for (auto& [owner, items] : todo) {
    rpc::ConnectionPtr conn;
    {
      std::lock_guard<std::mutex> lk(conn_mu_);
      auto it = peers_.find(owner);
      if (it != peers_.end() && !it->second->closed()) conn = it->second;
    }
    if (!conn) {  // registered for us by an executor: connect now (Unix: immediate)
      auto c = ConnectionTo(owner);
      if (!c.ok()) continue;  // the owner is gone, and its objects with it
      conn = c.value();
    }
    rpc::Envelope m;
    auto* r = m.mutable_remove_borrowers();
    r->set_borrower(address_);
    for (auto& [id, count] : items) {
      r->add_object_ids(id);
      r->add_counts(count);
    }
    conn->Send(m);
  }
}

void CoreWorker::OnBlocked(bool blocked) {
  if (!options_.is_worker) return;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    if (!in_task_) return;
  }
  rpc::Envelope m;
  m.mutable_notify_blocked()->set_blocked(blocked);
  node_->Send(m);
}

Result<std::vector<StoredObject>> CoreWorker::Get(const std::vector<std::string>& ids,
                                                  int64_t timeout_ms) {
  return store_.Get(ids, timeout_ms, [this](bool b) { OnBlocked(b); });
}

Result<std::vector<bool>> CoreWorker::Wait(const std::vector<std::string>& ids, int num_returns,
                                           int64_t timeout_ms, bool fetch_local) {
  return store_.Wait(ids, num_returns, timeout_ms, fetch_local);
}

void CoreWorker::FetchFromOwner(const std::string& id, const std::string& owner) {
  auto conn = ConnectionTo(owner);
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

Result<rpc::ConnectionPtr> CoreWorker::ConnectionTo(const std::string& address) {
  std::lock_guard<std::mutex> lk(conn_mu_);
  auto it = peers_.find(address);
  if (it != peers_.end() && !it->second->closed()) return it->second;
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role("peer");
  hello.set_worker_id(worker_id_);
  hello.set_pid(getpid());
  hello.set_address(address_);
  auto c = rpc::Connect(io_, address, hello);
  if (!c.ok()) return c.status();
  c.value()->Start(nullptr, [this, address](const rpc::ConnectionPtr&, const Status&) {
    bool watched;
    {
      std::lock_guard<std::mutex> lk(borrow_mu_);
      watched = watched_borrowers_.erase(address) > 0;
    }
    if (watched) store_.DropBorrower(address);  // that process is gone
  });
  peers_[address] = c.value();
  return c.value();
}

Result<rpc::ConnectionPtr> CoreWorker::Gcs() {
  {
    std::lock_guard<std::mutex> lk(conn_mu_);
    if (gcs_ && !gcs_->closed()) return gcs_;
  }
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role(options_.is_worker ? "worker" : "driver");
  hello.set_worker_id(worker_id_);
  hello.set_pid(getpid());
  hello.set_log_to_driver(options_.log_to_driver && !options_.is_worker);
  auto c = rpc::ConnectAndStart(
      io_, options_.gcs_address, hello,
      [this](const rpc::ConnectionPtr& conn, rpc::Envelope& m) { OnGcsMessage(conn, m); }, nullptr,
      options_.connect_timeout_ms);
  if (!c.ok()) {
    return Status(c.status().code(),
                  "cannot reach the fleet control store (fleet-gcs): " + c.status().message());
  }
  std::lock_guard<std::mutex> lk(conn_mu_);
  gcs_ = c.value();
  return gcs_;
}

// ---- object locations ------------------------------------------------------------

rpc::ObjectLocations CoreWorker::LocateOwned(const std::string& id) {
  rpc::ObjectLocations out;
  StoredObject v;
  auto r = store_.GetOrSubscribe(id, &v, nullptr);
  if (!r.ok() || !r.value()) return out;
  out.set_found(true);
  if (v.flags & kFlagInStore) {
    uint64_t size = 0;
    if (v.data.size() >= 8) std::memcpy(&size, v.data.data(), 8);  // little-endian, as written
    out.set_object_size(size);
    std::string primary = v.data.size() > 8 ? v.data.substr(8) : node_id_;
    out.add_node_ids(primary);
    std::lock_guard<std::mutex> lk(loc_mu_);
    if (auto it = copy_locations_.find(id); it != copy_locations_.end()) {
      for (const auto& n : it->second) {
        if (n != primary) out.add_node_ids(n);
      }
    }
  } else {
    // A small value lives in its owner's memory (inline), on this node.
    out.set_object_size(v.data.size());
    out.add_node_ids(node_id_);
  }
  return out;
}

Result<std::vector<rpc::ObjectLocations>> CoreWorker::ObjectLocations(
    const std::vector<std::string>& ids, int64_t timeout_ms) {
  std::vector<rpc::ObjectLocations> out(ids.size());
  std::map<std::string, std::vector<size_t>> by_owner;
  for (size_t i = 0; i < ids.size(); i++) {
    auto owner = store_.OwnerOf(ids[i]);
    if (owner && !owner->empty() && *owner != address_) {
      by_owner[*owner].push_back(i);
    } else {
      out[i] = LocateOwned(ids[i]);
    }
  }
  for (auto& [owner, idx] : by_owner) {
    auto conn = ConnectionTo(owner);
    if (!conn.ok()) continue;  // the owner is gone: not found
    rpc::Envelope req;
    for (size_t i : idx) req.mutable_get_object_locations()->add_object_ids(ids[i]);
    auto r = conn.value()->CallSync(req, timeout_ms < 0 ? kRpcTimeoutMs : static_cast<int>(timeout_ms));
    if (!r.ok()) return r.status();
    const auto& locs = r.value().get_object_locations_reply().locations();
    for (size_t k = 0; k < idx.size() && k < static_cast<size_t>(locs.size()); k++) {
      out[idx[k]] = locs[static_cast<int>(k)];
    }
  }
  return out;
}

// ---- worker output -----------------------------------------------------------------

void CoreWorker::PrintLogLines(const rpc::LogLines& l) {
  // As Ray: "(pid=N) ..." for tasks, "(Counter pid=N) ..." for an actor, and
  // the node for output from another node: "(pid=N, node=10.0.0.2) ...".
  std::string prefix = "(" + (l.label().empty() ? std::string() : l.label() + " ") +
                       "pid=" + std::to_string(l.pid());
  if (!l.node_id().empty() && l.node_id() != node_id_) prefix += ", node=" + l.node_ip();
  prefix += ") ";
  LogOutput out;
  {
    std::lock_guard<std::mutex> lk(log_mu_);
    auto now = std::chrono::steady_clock::now();
    for (const auto& line : l.lines()) {
      LogOutput o = log_dedup_.Add(prefix, line, l.is_stderr(), now);
      out.out += o.out;
      out.err += o.err;
    }
    ArmLogFlushLocked();
  }
  if (!out.out.empty()) WriteAll(1, out.out);
  if (!out.err.empty()) WriteAll(2, out.err);
}

void CoreWorker::ArmLogFlushLocked() {
  auto next = log_dedup_.NextDeadline();
  if (!next || log_flush_armed_ || !log_timer_) return;
  log_flush_armed_ = true;
  log_timer_->expires_at(*next);
  log_timer_->async_wait([this](const asio::error_code& ec) {
    LogOutput out;
    {
      std::lock_guard<std::mutex> lk(log_mu_);
      log_flush_armed_ = false;
      if (ec) return;
      out = log_dedup_.Flush(std::chrono::steady_clock::now());
      ArmLogFlushLocked();
    }
    if (!out.out.empty()) WriteAll(1, out.out);
    if (!out.err.empty()) WriteAll(2, out.err);
  });
}

void CoreWorker::FlushLogs() {
  LogOutput out;
  {
    std::lock_guard<std::mutex> lk(log_mu_);
    out = log_dedup_.FlushAll();
  }
  if (!out.out.empty()) WriteAll(1, out.out);
  if (!out.err.empty()) WriteAll(2, out.err);
}

// ---- incoming messages ----------------------------------------------------------

void CoreWorker::OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kPushTask:
      HandlePushTask(conn, msg);
      break;
    case rpc::Envelope::kGetObject:
      HandleGetObject(conn, msg);
      break;
    case rpc::Envelope::kCancelTask:
      HandleCancelTask(msg);
      break;
    case rpc::Envelope::kHello:
      if (!msg.hello().address().empty()) peer_addresses_[conn.get()] = msg.hello().address();
      break;
    case rpc::Envelope::kAddBorrowers: {
      const auto& b = msg.add_borrowers();
      // Registered by the borrower itself: its connection closing means it
      // died. (An executor registering its caller does not speak for it.)
      if (auto a = peer_addresses_.find(conn.get());
          a != peer_addresses_.end() && a->second == b.borrower()) {
        borrower_conns_[conn.get()] = b.borrower();
      } else {
        WatchBorrower(b.borrower());  // registered for it by an executor
      }
      for (const auto& id : b.object_ids()) store_.AddBorrower(id, b.borrower(), 1);
      rpc::Envelope reply;
      reply.mutable_add_borrowers_reply();
      conn->Reply(msg.request_id(), reply);
      break;
    }
    case rpc::Envelope::kAddObjectLocation: {
      const auto& a = msg.add_object_location();
      if (!store_.Contains(a.object_id())) break;  // freed meanwhile
      std::lock_guard<std::mutex> lk(loc_mu_);
      copy_locations_[a.object_id()].insert(a.node_id());
      break;
    }
    case rpc::Envelope::kGetObjectLocations: {
      rpc::Envelope reply;
      auto* r = reply.mutable_get_object_locations_reply();
      for (const auto& id : msg.get_object_locations().object_ids()) *r->add_locations() = LocateOwned(id);
      conn->Reply(msg.request_id(), reply);
      break;
    }
    case rpc::Envelope::kRemoveBorrowers: {
      const auto& b = msg.remove_borrowers();
      for (int i = 0; i < b.object_ids_size() && i < b.counts_size(); i++) {
        store_.AddBorrower(b.object_ids(i), b.borrower(), -b.counts(i));
      }
      break;
    }
    default:
      if (msg.request_id() != 0) {
        rpc::Envelope reply;
        reply.mutable_error()->set_code(static_cast<int>(StatusCode::kInvalidArgument));
        reply.mutable_error()->set_message("unsupported request");
        conn->Reply(msg.request_id(), reply);
      }
  }
}

void CoreWorker::HandlePushTask(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  std::unique_lock<std::mutex> lk(exec_mu_);
  uint64_t handle = next_handle_++;
  ExecutableTask t;
  t.handle = handle;
  t.spec = std::move(*msg.mutable_push_task()->mutable_spec());
  executing_[handle] = Pending{conn, msg.request_id(), {}, t.spec.task_id(), t.spec.owner_address(), {}, {}, {}};
  if (!early_cancels_.empty()) {
    auto c = std::find(early_cancels_.begin(), early_cancels_.end(), t.spec.task_id());
    if (c != early_cancels_.end()) {
      early_cancels_.erase(c);
      rpc::TaskSpec spec = std::move(t.spec);
      lk.unlock();
      ReplyCancelled(handle, spec);
      return;
    }
  }
  exec_queue_.push_back(std::move(t));
  exec_cv_.notify_one();
  SignalTaskEventLocked();
}

void CoreWorker::HandleGetObject(const rpc::ConnectionPtr& conn, rpc::Envelope& msg) {
  std::string id = msg.get_object().object_id();
  uint64_t rid = msg.request_id();
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

void CoreWorker::OnGcsMessage(const rpc::ConnectionPtr&, rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kActorUpdate:
      if (actor_submitter_) actor_submitter_->OnUpdate(msg.actor_update().info());
      break;
    case rpc::Envelope::kLogLines:
      PrintLogLines(msg.log_lines());
      break;
    case rpc::Envelope::kWarning:
      WriteAll(2, "fleet: WARNING: " + msg.warning().message() + "\n");
      break;
    default:
      break;
  }
}

void CoreWorker::ReplyCancelled(uint64_t handle, const rpc::TaskSpec& spec) {
  // requires exec_mu_ not held
  std::vector<std::pair<std::string, uint32_t>> returns;
  std::string text = "Task " + spec.function_name() + " (id " + ToHex(spec.task_id()) +
                     ") was cancelled by fleet.cancel() before it started.";
  for (int i = 0; i < std::max(1, spec.num_returns()); ++i) {
    returns.emplace_back(text, kFlagTaskCancelled);
  }
  FinishTask(handle, std::move(returns), false);
}

void CoreWorker::HandleCancelTask(rpc::Envelope& msg) {
  const std::string& task_id = msg.cancel_task().task_id();
  std::optional<ExecutableTask> dropped;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    for (auto it = exec_queue_.begin(); it != exec_queue_.end(); ++it) {
      if (it->handle != 0 && it->spec.task_id() == task_id) {
        dropped = std::move(*it);
        exec_queue_.erase(it);
        break;
      }
    }
    bool running_here = executing_.end() != std::find_if(executing_.begin(), executing_.end(),
                                                          [&](const auto& e) {
                                                            return e.second.task_id == task_id;
                                                          });
    if (!dropped && !running_here) {
      // Not here yet (the cancel overtook the push) or already done:
      // remember it, so a push that comes later is answered as cancelled.
      early_cancels_.push_back(task_id);
      if (early_cancels_.size() > 256) early_cancels_.pop_front();
    } else if (!dropped) {
      if (concurrent_) {
        // Running on a pool thread or the event loop: the Python loop cancels it.
        ExecutableTask notice;
        notice.handle = 0;
        notice.spec.set_task_id(task_id);
        exec_queue_.push_front(std::move(notice));
        exec_cv_.notify_one();
        SignalTaskEventLocked();
      } else if (in_task_ && current_task_id_ == task_id) {
        // Running on the main thread. A task gets KeyboardInterrupt there;
        // an actor call is not interrupted (the actor has state), it only
        // sees the flag (get_runtime_context().is_canceled()).
        cancel_requested_ = task_id;
        if (!current_is_actor_call_) pthread_kill(main_thread_, SIGINT);
      }
    }
  }
  if (dropped) ReplyCancelled(dropped->handle, dropped->spec);
  if (msg.cancel_task().recursive()) {
    submitter_->CancelChildren(task_id, /*force=*/false);
    actor_submitter_->CancelChildren(task_id);
  }
}

bool CoreWorker::TakeCancelRequest(const std::string& task_id, bool keep) {
  std::lock_guard<std::mutex> lk(exec_mu_);
  if (cancel_requested_.empty() || cancel_requested_ != task_id) return false;
  if (!keep) cancel_requested_.clear();
  return true;
}

void CoreWorker::SetConcurrent(bool concurrent) {
  std::lock_guard<std::mutex> lk(exec_mu_);
  concurrent_ = concurrent;
}

void CoreWorker::SendGeneratorItem(uint64_t handle, int index, std::string data, uint32_t flags) {
  std::shared_ptr<rpc::Connection> conn;
  std::string task_id;
  std::vector<std::pair<std::string, std::string>> nested;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return;
    conn = it->second.conn.lock();
    task_id = it->second.task_id;
    if (auto n = it->second.item_nested.find(static_cast<uint32_t>(index));
        n != it->second.item_nested.end()) {
      nested = std::move(n->second);
      it->second.item_nested.erase(n);
    }
  }
  if (!conn) return;
  rpc::Envelope m;
  auto* g = m.mutable_generator_item();
  for (auto& [id, owner] : nested) {
    g->add_nested_ids(id);
    g->add_nested_owners(owner);
  }
  g->set_task_id(task_id);
  g->set_index(index);
  g->set_data(std::move(data));
  g->set_flags(flags);
  conn->Send(m);
}

bool CoreWorker::CancelTask(const std::string& task_id, bool force, bool recursive) {
  if (submitter_->Cancel(task_id, force, recursive)) return true;
  return actor_submitter_->Cancel(task_id, recursive);
}

std::vector<std::string> CoreWorker::SubmitActorTask(TaskSubmission&& call, int max_task_retries) {
  StampCaller(&call.spec);
  return actor_submitter_->Submit(std::move(call), max_task_retries);
}

Status CoreWorker::KillActor(const std::string& actor_id, bool no_restart, const std::string& reason) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  auto* k = req.mutable_kill_actor();
  k->set_actor_id(actor_id);
  k->set_no_restart(no_restart);
  k->set_reason(reason);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  if (!r.value().kill_actor_reply().found()) return Status::NotFound("no such actor");
  return Status::OK();
}

Result<std::optional<rpc::ActorInfo>> CoreWorker::GetNamedActor(const std::string& name,
                                                               const std::string& ns) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_get_named_actor()->set_name(name);
  req.mutable_get_named_actor()->set_namespace_(ns);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  auto* g = r.value().mutable_get_named_actor_reply();
  if (!g->found()) return std::optional<rpc::ActorInfo>();
  return std::optional<rpc::ActorInfo>(std::move(*g->mutable_info()));
}

Result<std::vector<rpc::ActorInfo>> CoreWorker::ListActors() {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_list_actors();
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  const auto& l = r.value().list_actors_reply().actors();
  return std::vector<rpc::ActorInfo>(l.begin(), l.end());
}

Status CoreWorker::ReportActorExiting(const std::string& actor_id, const std::string& reason) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_actor_exiting()->set_actor_id(actor_id);
  req.mutable_actor_exiting()->set_reason(reason);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  return r.ok() ? Status::OK() : r.status();
}

void CoreWorker::OnNodeMessage(const rpc::ConnectionPtr&, rpc::Envelope& msg) {
  switch (msg.body_case()) {
    case rpc::Envelope::kWarning:
      WriteAll(2, "fleet: WARNING: " + msg.warning().message() + "\n");
      break;
    case rpc::Envelope::kExitWorker: {
      std::lock_guard<std::mutex> lk(exec_mu_);
      exiting_ = true;
      exec_cv_.notify_all();
      SignalTaskEventLocked();
      break;
    }
    default:
      break;
  }
}

// ---- tasks ----------------------------------------------------------------------

void CoreWorker::StampCaller(rpc::TaskSpec* spec) {
  spec->set_owner_address(address_);
  if (options_.is_worker) {  // a nested submission: its parent, for recursive cancel
    std::lock_guard<std::mutex> lk(exec_mu_);
    spec->set_parent_task_id(current_task_id_);
  }
}

std::vector<std::string> CoreWorker::SubmitTask(TaskSubmission&& task) {
  StampCaller(&task.spec);
  return submitter_->Submit(std::move(task));
}

void CoreWorker::FlushHeldReplies() {
  std::vector<std::shared_ptr<rpc::Connection>> held;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    held.swap(held_replies_);
    num_held_ = 0;
  }
  for (auto& c : held) c->Flush();
}

void CoreWorker::SignalTaskEventLocked() {
  if (task_event_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = ::write(task_event_fd_, &one, sizeof(one));
  (void)n;  // a full counter still leaves the fd readable
}

int CoreWorker::EnableTaskEvents() {
  std::lock_guard<std::mutex> lk(exec_mu_);
  if (task_event_fd_ < 0) task_event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!exec_queue_.empty() || exiting_) SignalTaskEventLocked();
  return task_event_fd_;
}

std::optional<ExecutableTask> CoreWorker::TryNextTask() {
  std::lock_guard<std::mutex> lk(exec_mu_);
  if (exec_queue_.empty()) {
    if (!exiting_) return std::nullopt;
    ExecutableTask exit;
    exit.handle = UINT64_MAX;
    return exit;
  }
  ExecutableTask t = std::move(exec_queue_.front());
  exec_queue_.pop_front();
  if (t.handle != 0) {
    auto it = executing_.find(t.handle);
    if (it != executing_.end()) it->second.started = std::chrono::steady_clock::now();
  }
  return t;
}

std::optional<ExecutableTask> CoreWorker::NextTask() {
  std::unique_lock<std::mutex> lk(exec_mu_);
  in_task_ = false;
  current_task_id_.clear();
  main_thread_ = pthread_self();
  if (exec_queue_.empty() && num_held_ > 0) {
    lk.unlock();
    FlushHeldReplies();
    lk.lock();
  }
  exec_cv_.wait(lk, [this] { return exiting_ || !exec_queue_.empty(); });
  if (exec_queue_.empty()) return std::nullopt;  // exiting with nothing queued
  ExecutableTask t = std::move(exec_queue_.front());
  exec_queue_.pop_front();
  if (t.handle == 0) return t;  // a cancel notice (concurrent execution)
  in_task_ = true;
  if (!concurrent_) current_task_id_ = t.spec.task_id();
  current_is_actor_call_ = t.spec.kind() != rpc::NORMAL_TASK;
  auto it = executing_.find(t.handle);
  if (it != executing_.end()) it->second.started = std::chrono::steady_clock::now();
  return t;
}

void CoreWorker::FinishTask(uint64_t handle,
                            std::vector<std::pair<std::string, uint32_t>>&& returns,
                            bool retryable_error, bool worker_exiting) {
  Pending p;
  bool more_queued;
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return;
    p = it->second;
    executing_.erase(it);
    more_queued = !exec_queue_.empty();
  }
  // Returns already written to the store but replaced by an error (a later
  // return failed): nobody will own them, so they go now.
  std::vector<std::string> orphaned;
  for (auto& [index, id] : p.stored) {
    if (index >= returns.size() || !(returns[index].second & kFlagInStore)) orphaned.push_back(id);
  }
  store_client_->Free(orphaned);
  auto conn = p.conn.lock();
  if (!conn) return;  // the submitter went away; nobody wants the result
  rpc::Envelope reply;
  auto* r = reply.mutable_push_task_reply();
  r->set_retryable_error(retryable_error);
  r->set_worker_exiting(worker_exiting);
  r->set_exec_us(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::steady_clock::now() - p.started)
                                            .count()));
  uint32_t index = 0;
  for (auto& [data, flags] : returns) {
    auto* o = r->add_returns();
    o->set_data(std::move(data));
    o->set_flags(flags);
    if (auto n = p.nested.find(index++); n != p.nested.end()) {
      for (auto& [id, owner] : n->second) {
        o->add_nested_ids(id);
        o->add_nested_owners(owner);
      }
    }
  }
  // Hold the reply back while more (short, pipelined) tasks wait here, so a
  // batch of replies costs one write and one wake-up of the submitter.
  constexpr size_t kMaxHeldReplies = 32;
  bool hold = false;
  bool arm_timer = false;
  // Queued before it is registered as held: a flush that runs in between
  // (the timer) then takes it along instead of leaving it stranded.
  conn->Reply(p.request_id, reply, /*flush=*/false);
  {
    std::lock_guard<std::mutex> lk(exec_mu_);
    hold = more_queued && !worker_exiting && !concurrent_ && num_held_ < kMaxHeldReplies;
    if (hold) {
      num_held_++;
      if (std::find(held_replies_.begin(), held_replies_.end(), conn) == held_replies_.end()) {
        held_replies_.push_back(conn);
      }
      arm_timer = !hold_timer_armed_;
      hold_timer_armed_ = true;
    }
  }
  if (!hold) {
    conn->Flush();
    FlushHeldReplies();
  } else if (arm_timer) {
    asio::post(io_, [this] {
      hold_timer_->expires_after(std::chrono::milliseconds(1));
      hold_timer_->async_wait([this](const asio::error_code& ec) {
        {
          std::lock_guard<std::mutex> lk(exec_mu_);
          hold_timer_armed_ = false;
        }
        if (!ec) FlushHeldReplies();
      });
    });
  }
}

// ---- control store ----------------------------------------------------------------

Status CoreWorker::KvPut(const std::string& key, const std::string& value, bool overwrite,
                         bool* added) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  auto* p = req.mutable_kv_put();
  p->set_key(key);
  p->set_value(value);
  p->set_overwrite(overwrite);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  if (added) *added = r.value().kv_put_reply().added();
  return Status::OK();
}

Result<std::optional<std::string>> CoreWorker::KvGet(const std::string& key) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_kv_get()->set_key(key);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  auto* g = r.value().mutable_kv_get_reply();
  if (!g->found()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(*g->mutable_value()));
}

Result<int> CoreWorker::KvDel(const std::string& key) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_kv_del()->set_key(key);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  return r.value().kv_del_reply().deleted();
}

Result<std::vector<std::string>> CoreWorker::KvKeys(const std::string& prefix) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_kv_keys()->set_prefix(prefix);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  const auto& k = r.value().kv_keys_reply().keys();
  return std::vector<std::string>(k.begin(), k.end());
}

Result<rpc::Envelope> CoreWorker::GcsCall(rpc::Envelope req, int64_t timeout_ms) {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  auto r = gcs.value()->CallSync(req, timeout_ms < 0 ? kRpcTimeoutMs : static_cast<int>(timeout_ms));
  if (!r.ok()) return r.status();
  if (r.value().has_error()) {
    return Status(static_cast<StatusCode>(r.value().error().code()), r.value().error().message());
  }
  return std::move(r).value();
}

Result<rpc::GetNodesReply> ProbeNodes(const std::string& gcs_address, const std::string& token,
                                      int timeout_ms) {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread t([&] { io.run(); });
  rpc::Hello hello;
  hello.set_token(token);
  hello.set_role("cli");
  hello.set_pid(getpid());
  Result<rpc::GetNodesReply> out = Status::Internal("not asked");
  auto c = rpc::ConnectAndStart(io, gcs_address, hello, nullptr, nullptr, timeout_ms);
  if (!c.ok()) {
    out = c.status();
  } else {
    rpc::Envelope req;
    req.mutable_get_nodes();
    auto r = c.value()->CallSync(req, timeout_ms);
    if (r.ok()) {
      out = std::move(*r.value().mutable_get_nodes_reply());
    } else {
      out = r.status();
    }
    c.value()->Close();
  }
  work.reset();
  io.stop();
  t.join();
  return out;
}

Result<rpc::GetNodesReply> CoreWorker::GetNodes() {
  auto gcs = Gcs();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  req.mutable_get_nodes();
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  return std::move(*r.value().mutable_get_nodes_reply());
}

Result<rpc::GetNodeStatsReply> CoreWorker::GetNodeStats() {
  rpc::Envelope req;
  req.mutable_get_node_stats();
  auto r = node_->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  return std::move(*r.value().mutable_get_node_stats_reply());
}

}  // namespace fleet
