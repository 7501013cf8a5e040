// NodeServer: the node daemon (fleet-node). Owns the node's resources, its
// worker pool, and the queue of lease requests; forwards worker output to
// drivers; reports to fleet-gcs.
//
// Lease requests are served in arrival order among those that fit; a request
// that can never fit this node is kept and reported (warning to the requester
// after `infeasible_warning_ms`). A worker blocked in get() lends its CPU back.
// Leases held by a client that disconnects are revoked and their workers
// killed (they may be running that client's tasks).
// Single-threaded: everything runs on the io thread.
#pragma once

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "fleet.pb.h"
#include "node/resources.h"
#include "node/worker_pool.h"
#include "node/zygote.h"
#include "rpc/connection.h"
#include "rpc/listener.h"
#include "store/object_store.h"

namespace fleet::node {

struct NodeOptions {
  std::string gcs_address;
  std::string token;
  std::string session_dir;
  std::string node_ip = "127.0.0.1";
  std::string unix_socket;           // path
  std::map<std::string, double> resources;  // CPU, GPU, memory, custom...
  std::string python = "python3";    // worker interpreter
  int num_prestart = -1;             // -1: num CPUs
  int idle_worker_timeout_ms = 1000;
  int infeasible_warning_ms = 3000;
  int worker_start_failures_before_error = 3;
  bool use_zygote = true;            // fork workers from a pre-imported process
  store::StoreOptions store;         // spill_dir empty: <session_dir>/spill/<node id>
};

class NodeServer {
 public:
  NodeServer(asio::io_context& io, NodeOptions options);
  ~NodeServer();
  // Registers with fleet-gcs, listens, prestarts workers.
  Status Start();
  // Kills every worker and stops serving.
  void Stop();

 private:
  struct LeaseRequestEntry {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
    ResourceSet resources;
    ResourceSet placement;   // must fit the node's total, not held (actors)
    std::string description;
    std::string key;
    std::string actor_class;  // non-empty: the worker will host this actor
    std::chrono::steady_clock::time_point since;
    bool warned = false;
  };
  struct LeaseEntry {
    Allocation alloc;
    std::weak_ptr<rpc::Connection> holder;
    bool blocked = false;
  };
  struct WorkerIo;

  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnClose(const rpc::ConnectionPtr& conn, const Status& s);
  void Schedule();
  // Whether this node could ever serve the request (its totals cover it).
  bool Feasible(const LeaseRequestEntry& e) const;
  void StartWorkers(int n);
  void OnWorkerGone(const std::string& worker_id, const std::string& why);
  void KillWorker(const std::string& worker_id);
  void OnSigchld();
  // Starts the worker zygote once the prestarted workers are up (or `force`).
  void MaybeStartZygote(bool force);
  // A worker (or the zygote) ended with `status` (from waitpid).
  void OnProcessExit(int pid, int status);
  void Tick();
  void MarkResourcesDirty();
  void ReportResources();
  void ReadWorkerOutput(std::shared_ptr<WorkerIo> io, bool is_stderr);
  void FailPendingRequests(const std::string& why);
  // Records why a worker ended once it has exited and its stderr is drained,
  // and answers GetWorkerExit requests waiting for it.
  void MaybeFinalizeExit(const std::shared_ptr<WorkerIo>& wio);
  // Object store requests (StoreCreate ... StoreList).
  void OnStoreMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  store::ClientId StoreClientOf(const rpc::ConnectionPtr& conn);
  void AnswerExit(const rpc::ConnectionPtr& conn, uint64_t request_id, const std::string& worker_id);

  asio::io_context& io_;
  NodeOptions options_;
  std::string node_id_;
  NodeResources resources_;
  WorkerPool pool_;
  std::unique_ptr<Zygote> zygote_;
  bool zygote_started_ = false;
  std::chrono::steady_clock::time_point started_at_;
  std::unique_ptr<rpc::Listener> listener_;
  rpc::ConnectionPtr gcs_;
  asio::signal_set sigchld_;
  asio::steady_timer tick_timer_;
  asio::steady_timer report_timer_;
  bool report_armed_ = false;
  bool stopped_ = false;

  std::deque<LeaseRequestEntry> pending_;
  std::map<std::string, LeaseEntry> leases_;                    // by worker id
  std::map<const rpc::Connection*, std::string> worker_conns_;  // conn -> worker id
  std::map<std::string, rpc::ConnectionPtr> worker_conn_by_id_;
  std::set<rpc::ConnectionPtr> log_subscribers_;
  std::map<std::string, std::shared_ptr<WorkerIo>> worker_io_;  // by worker id
  struct ExitInfo {
    std::string reason;
    std::vector<std::string> last_lines;
  };
  std::map<std::string, ExitInfo> exited_;     // by worker id, the last 256
  std::deque<std::string> exited_order_;
  struct ExitWaiter {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
  };
  std::map<std::string, std::vector<ExitWaiter>> exit_waiters_;  // by worker id
  std::unique_ptr<store::ObjectStore> store_;
  std::map<const rpc::Connection*, store::ClientId> store_clients_;
  store::ClientId next_store_client_ = 1;
  std::map<const rpc::Connection*, std::string> client_addresses_;  // drivers and workers
  int consecutive_start_failures_ = 0;
  std::string last_start_failure_;
};

}  // namespace fleet::node
