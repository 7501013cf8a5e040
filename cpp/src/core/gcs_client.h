// GcsClient: this process's connection to fleet-gcs, the control store, and
// the requests made over it (KV, node table, named actors, jobs).
//
// The connection is made on first use and again after it closed; messages
// fleet-gcs pushes (actor updates, relayed worker output, warnings) go to
// the handler given at construction (io thread).
// Thread-safe: one mutex (mu_) guards the connection pointer only; calls
// block the calling thread (never the io thread) until the reply, at most
// 60 s unless told otherwise.
#pragma once

#include <asio/io_context.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet {

struct GcsClientOptions {
  std::string address;  // "host:port"
  std::string token;
  bool is_worker = false;
  std::string worker_id;
  bool log_to_driver = true;  // a driver asks for its workers' output
  int connect_timeout_ms = 10000;
};

class GcsClient {
 public:
  GcsClient(asio::io_context& io, GcsClientOptions options, rpc::Connection::MessageHandler on_message);
  GcsClient(const GcsClient&) = delete;
  GcsClient& operator=(const GcsClient&) = delete;

  // The open connection, connecting first if needed (not on the io thread:
  // connecting blocks). Errors name fleet-gcs.
  Result<rpc::ConnectionPtr> Connection() EXCLUDES(mu_);
  // One request; timeout_ms < 0: the default (60 s). An error reply comes
  // back as its Status.
  Result<rpc::Envelope> Call(rpc::Envelope req, int64_t timeout_ms) EXCLUDES(mu_);
  // Registers this driver's job; returns its id.
  Result<uint32_t> RegisterJob(int pid, const std::string& namespace_name) EXCLUDES(mu_);

  Status KvPut(const std::string& key, const std::string& value, bool overwrite, bool* added);
  Result<std::optional<std::string>> KvGet(const std::string& key);
  Result<int> KvDel(const std::string& key);
  Result<std::vector<std::string>> KvKeys(const std::string& prefix);
  Result<rpc::GetNodesReply> GetNodes();
  Status KillActor(const std::string& actor_id, bool no_restart, const std::string& reason);
  Result<std::optional<rpc::ActorInfo>> GetNamedActor(const std::string& name,
                                                      const std::string& ns);
  Result<std::vector<rpc::ActorInfo>> ListActors();
  Status ReportActorExiting(const std::string& actor_id, const std::string& reason);

  // Closes the connection (io thread; Shutdown).
  void Close() EXCLUDES(mu_);

 private:
  // One request; an error reply is returned as a reply.
  Result<rpc::Envelope> CallSync(rpc::Envelope& req) EXCLUDES(mu_);

  asio::io_context& io_;
  const GcsClientOptions options_;
  const rpc::Connection::MessageHandler on_message_;
  Mutex mu_;
  rpc::ConnectionPtr conn_ GUARDED_BY(mu_);
};

// The node table of the cluster at `gcs_address`, without joining it (to
// find this machine's fleet-node before connecting).
Result<rpc::GetNodesReply> ProbeNodes(const std::string& gcs_address, const std::string& token,
                                      int timeout_ms);

}  // namespace fleet
