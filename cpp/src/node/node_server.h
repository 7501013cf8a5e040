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
  int port = 0;                      // TCP port for other nodes and remote drivers (0: any)
  bool is_head = false;
  std::string unix_socket;           // path
  std::map<std::string, double> resources;  // CPU, GPU, memory, custom...
  std::string python = "python3";    // worker interpreter
  int num_prestart = -1;             // -1: num CPUs
  int idle_worker_timeout_ms = 1000;
  int infeasible_warning_ms = 3000;
  int worker_start_failures_before_error = 3;
  bool use_zygote = true;            // fork workers from a pre-imported process
  store::StoreOptions store;         // spill_dir empty: <session_dir>/spill/<node id>
  uint64_t transfer_chunk_bytes = 1 << 20;  // object transfer between nodes (measured: 1 MiB x 16 best here)
  int transfer_chunks_in_flight = 16;
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
    std::string strategy;     // "", "SPREAD", "NODE_AFFINITY"
    std::string affinity_node_id;
    bool affinity_soft = false;
    bool spilled = false;     // another node sent it here: never spill it again
    bool placed = false;      // decided to run here
    std::chrono::steady_clock::time_point since;
    bool warned = false;
  };
  // Where a request goes: here (node_id empty), another node, or nowhere (error).
  struct Placement {
    std::string node_id;
    std::string error;
  };
  struct Pull;
  struct LeaseEntry {
    Allocation alloc;
    std::weak_ptr<rpc::Connection> holder;
    bool blocked = false;
  };
  struct WorkerIo;

  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnGcsMessage(rpc::Envelope& msg);
  // Scheduling policy (see docs/architecture.md): whether `e` runs here or
  // spills to another node. `fits_here`: free resources cover it now.
  Placement Place(LeaseRequestEntry& e, bool fits_here);
  std::string LeastLoadedRemote(const LeaseRequestEntry& e, bool need_free) const;
  bool FeasibleRemote(const std::string& node_id, const LeaseRequestEntry& e) const;
  bool FeasibleAnywhere(const LeaseRequestEntry& e) const;
  // ---- object transfer between nodes
  Result<rpc::ConnectionPtr> PeerNode(const std::string& node_id);
  // What this node says when it connects to another node or to an owner.
  rpc::Hello NodeHello() const;
  // Makes the objects local (pulling those whose primary copy is elsewhere),
  // then calls `done` with an error per id ("" when local now) and the ids
  // pulled for this caller, which stay pinned (by transfer_client_) until
  // the caller releases them once it has pinned them itself.
  void EnsureLocal(const std::vector<std::string>& ids, const std::vector<std::string>& sources,
                   std::function<void(std::vector<std::string>, std::vector<std::string>)> done);
  void StartPull(const std::string& id, const std::string& source);
  void PullNextChunks(const std::shared_ptr<Pull>& pull);
  void FinishPull(const std::shared_ptr<Pull>& pull, const std::string& error);
  void ServePull(const rpc::ConnectionPtr& conn, uint64_t rid, const rpc::PullObject& req);
  // A connection to the process that owns objects here (cached); its close
  // frees them. Null (and the objects freed) if it cannot be reached.
  rpc::ConnectionPtr OwnerConnection(const std::string& owner);
  // ---- placement group bundles (two-phase, driven by fleet-gcs)
  void OnBundleMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  // Releases those bundles of the group here (all if `indexes` is empty).
  void ReleaseBundles(const std::string& pg_id, const std::vector<int>& indexes);
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
  // Whether a driver or worker connected to this node has that address.
  bool IsLocalClient(const std::string& address) const;
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
  std::string address_;                               // "ip:port,unix:/path"
  std::map<std::string, rpc::NodeInfo> cluster_;      // other alive nodes, from fleet-gcs
  std::map<std::string, ResourceSet> cluster_free_;   // their free resources, less our spills since
  uint64_t spread_next_ = 0;
  std::map<std::string, rpc::ConnectionPtr> peer_nodes_;     // by node id
  std::map<std::string, std::shared_ptr<Pull>> pulls_;       // by object id
  std::map<std::string, std::set<std::string>> copies_;      // object id -> nodes that pulled it
  store::ClientId transfer_client_ = 0;                      // pins while serving pulls
  std::map<std::string, rpc::ConnectionPtr> owner_conns_;    // remote owners of objects here
  struct BundleReservation {
    Allocation alloc;        // taken from what was free at prepare
    ResourceSet group;       // the "<R>_group_..." resources it adds once committed
    bool committed = false;
  };
  // By placement group id, then bundle index.
  std::map<std::string, std::map<int, BundleReservation>> bundles_;
  std::map<const rpc::Connection*, store::ClientId> store_clients_;
  store::ClientId next_store_client_ = 1;
  std::map<const rpc::Connection*, std::string> client_addresses_;  // drivers and workers
  int consecutive_start_failures_ = 0;
  std::string last_start_failure_;
};

}  // namespace fleet::node
