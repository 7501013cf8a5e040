// GcsClient implementation; see gcs_client.h.
#include "core/gcs_client.h"

#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <thread>

namespace fleet {

namespace {
constexpr int kRpcTimeoutMs = 60000;
}  // namespace

GcsClient::GcsClient(asio::io_context& io, GcsClientOptions options,
                     rpc::Connection::MessageHandler on_message)
    : io_(io), options_(std::move(options)), on_message_(std::move(on_message)) {}

Result<rpc::ConnectionPtr> GcsClient::Connection() {
  {
    MutexLock lk(&mu_);
    if (conn_ && !conn_->closed()) return conn_;
  }
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role(options_.is_worker ? "worker" : "driver");
  hello.set_worker_id(options_.worker_id);
  hello.set_pid(getpid());
  hello.set_log_to_driver(options_.log_to_driver && !options_.is_worker);
  auto c = rpc::ConnectAndStart(io_, options_.address, hello, on_message_, nullptr,
                                options_.connect_timeout_ms);
  if (!c.ok()) {
    return Status(c.status().code(),
                  "cannot reach the fleet control store (fleet-gcs): " + c.status().message());
  }
  MutexLock lk(&mu_);
  conn_ = c.value();
  return conn_;
}

void GcsClient::Close() {
  MutexLock lk(&mu_);
  if (conn_) conn_->Close();
}

Result<rpc::Envelope> GcsClient::CallSync(rpc::Envelope& req) {
  auto gcs = Connection();
  if (!gcs.ok()) return gcs.status();
  return gcs.value()->CallSync(req, kRpcTimeoutMs);
}

Result<rpc::Envelope> GcsClient::Call(rpc::Envelope req, int64_t timeout_ms) {
  auto gcs = Connection();
  if (!gcs.ok()) return gcs.status();
  auto r = gcs.value()->CallSync(req, timeout_ms < 0 ? kRpcTimeoutMs : static_cast<int>(timeout_ms));
  if (!r.ok()) return r.status();
  if (r.value().has_error()) {
    return Status(static_cast<StatusCode>(r.value().error().code()), r.value().error().message());
  }
  return std::move(r).value();
}

Result<uint32_t> GcsClient::RegisterJob(int pid, const std::string& namespace_name) {
  rpc::Envelope req;
  req.mutable_register_job()->set_driver_pid(pid);
  req.mutable_register_job()->set_namespace_(namespace_name);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  return r.value().register_job_reply().job_id();
}

Status GcsClient::KvPut(const std::string& key, const std::string& value, bool overwrite,
                        bool* added) {
  rpc::Envelope req;
  auto* p = req.mutable_kv_put();
  p->set_key(key);
  p->set_value(value);
  p->set_overwrite(overwrite);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  if (added) *added = r.value().kv_put_reply().added();
  return Status::OK();
}

Result<std::optional<std::string>> GcsClient::KvGet(const std::string& key) {
  rpc::Envelope req;
  req.mutable_kv_get()->set_key(key);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  auto* g = r.value().mutable_kv_get_reply();
  if (!g->found()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(*g->mutable_value()));
}

Result<int> GcsClient::KvDel(const std::string& key) {
  rpc::Envelope req;
  req.mutable_kv_del()->set_key(key);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  return r.value().kv_del_reply().deleted();
}

Result<std::vector<std::string>> GcsClient::KvKeys(const std::string& prefix) {
  rpc::Envelope req;
  req.mutable_kv_keys()->set_prefix(prefix);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  const auto& k = r.value().kv_keys_reply().keys();
  return std::vector<std::string>(k.begin(), k.end());
}

Result<rpc::GetNodesReply> GcsClient::GetNodes() {
  rpc::Envelope req;
  req.mutable_get_nodes();
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  return std::move(*r.value().mutable_get_nodes_reply());
}

Status GcsClient::KillActor(const std::string& actor_id, bool no_restart,
                            const std::string& reason) {
  rpc::Envelope req;
  auto* k = req.mutable_kill_actor();
  k->set_actor_id(actor_id);
  k->set_no_restart(no_restart);
  k->set_reason(reason);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  if (!r.value().kill_actor_reply().found()) return Status::NotFound("no such actor");
  return Status::OK();
}

Result<std::optional<rpc::ActorInfo>> GcsClient::GetNamedActor(const std::string& name,
                                                              const std::string& ns) {
  rpc::Envelope req;
  req.mutable_get_named_actor()->set_name(name);
  req.mutable_get_named_actor()->set_namespace_(ns);
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  auto* g = r.value().mutable_get_named_actor_reply();
  if (!g->found()) return std::optional<rpc::ActorInfo>();
  return std::optional<rpc::ActorInfo>(std::move(*g->mutable_info()));
}

Result<std::vector<rpc::ActorInfo>> GcsClient::ListActors() {
  rpc::Envelope req;
  req.mutable_list_actors();
  auto r = CallSync(req);
  if (!r.ok()) return r.status();
  const auto& l = r.value().list_actors_reply().actors();
  return std::vector<rpc::ActorInfo>(l.begin(), l.end());
}

Status GcsClient::ReportActorExiting(const std::string& actor_id, const std::string& reason) {
  rpc::Envelope req;
  req.mutable_actor_exiting()->set_actor_id(actor_id);
  req.mutable_actor_exiting()->set_reason(reason);
  auto r = CallSync(req);
  return r.ok() ? Status::OK() : r.status();
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

}  // namespace fleet
