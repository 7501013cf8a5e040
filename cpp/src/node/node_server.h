// NodeServer: the node daemon (fleet-node). A thin router: it registers with
// fleet-gcs, accepts connections, keeps one ClientSession per connection,
// and hands each message to the component that owns its concern:
//   LeaseManager      lease requests, granted leases (scheduling/ decides where)
//   WorkerSupervisor  worker processes: start, output, exits, the zygote
//   StoreService      local object store requests
//   ObjectTransfer    pulls between nodes, owner connections
//   BundleManager     placement group bundles (two-phase, from fleet-gcs)
// It also reports the node's resources to fleet-gcs (on change, coalesced
// 5 ms, and every 500 ms) and reaps surplus idle workers on a 500 ms tick.
// Single-threaded: everything runs on the io thread.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>

#include "fleet.pb.h"
#include "node/bundle_manager.h"
#include "node/client_session.h"
#include "node/lease_manager.h"
#include "node/object_transfer.h"
#include "node/resources.h"
#include "node/scheduling/lease_scheduler.h"
#include "node/store_service.h"
#include "node/worker_pool.h"
#include "node/worker_supervisor.h"
#include "rpc/connection.h"
#include "rpc/dispatcher.h"
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
  // The user's node labels; ray.io/node-id is added (Ray's default label).
  std::map<std::string, std::string> labels;
  double spread_threshold = 0.5;     // Ray's scheduler_spread_threshold (hybrid policy)
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
  // The message tables: who may send what, and which component handles it.
  void RegisterHandlers();
  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnGcsMessage(rpc::Envelope& msg);
  void OnClose(const rpc::ConnectionPtr& conn, const Status& s);
  // ---- handlers of the router's own messages
  void HandleHello(ClientSession& s, uint64_t request_id, const rpc::Hello& m);
  void HandleGetNodeStats(ClientSession& s, uint64_t request_id, const rpc::GetNodeStats& m);
  void HandleClusterView(ClientSession& s, uint64_t request_id, rpc::ClusterView& m);
  // A worker process or its connection ended: its lease and session go.
  void OnWorkerGone(const std::string& worker_id, const std::string& why);
  void Tick();
  void MarkResourcesDirty();
  void ReportResources();

  // Constant after construction.
  asio::io_context& io_;
  const NodeOptions options_;
  const std::string node_id_;

  NodeResources resources_;
  WorkerPool pool_;
  scheduling::LeaseScheduler scheduler_;
  SessionTable sessions_;
  WorkerSupervisor supervisor_;
  LeaseManager leases_;
  BundleManager bundles_;
  // Created by Start (they need the store).
  std::unique_ptr<store::ObjectStore> store_;
  std::unique_ptr<ObjectTransfer> transfer_;
  std::unique_ptr<StoreService> store_service_;

  std::unique_ptr<rpc::Listener> listener_;
  rpc::ConnectionPtr gcs_;
  ClientSession gcs_session_;  // messages fleet-gcs sends on our connection to it
  std::string address_;        // "ip:port,unix:/path"
  asio::steady_timer tick_timer_;
  asio::steady_timer report_timer_;
  bool report_armed_ = false;
  bool stopped_ = false;
  rpc::Dispatcher<ClientSession> dispatcher_{"fleet-node"};      // connections to us
  rpc::Dispatcher<ClientSession> gcs_dispatcher_{"fleet-node"};  // our connection to fleet-gcs
};

}  // namespace fleet::node
