// GcsServer: the control store (fleet-gcs). Holds the node table (with health
// checks; the table goes to every node on change), the job table, the actor
// directory (ActorManager), placement groups (PlacementGroupManager), worker
// output relayed to drivers, and a key-value
// store that serves as the function table. State lives in memory.
//
// A node is alive while its connection is open and it reports within
// `health_timeout_ms`; otherwise it is marked dead with a reason. All state is
// touched only on the io thread (single-threaded by construction).
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "fleet.pb.h"
#include "gcs/actor_manager.h"
#include "gcs/placement_group_manager.h"
#include "rpc/connection.h"
#include "rpc/listener.h"

namespace fleet::gcs {

struct GcsOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string token;
  int health_check_period_ms = 1000;
  int health_timeout_ms = 10000;
};

class GcsServer {
 public:
  GcsServer(asio::io_context& io, GcsOptions options);
  // Binds and starts serving; returns the bound port.
  Result<int> Start();
  void Stop();

 private:
  struct NodeEntry {
    rpc::NodeInfo info;
    std::weak_ptr<rpc::Connection> conn;
    std::chrono::steady_clock::time_point last_report;
  };
  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnClose(const rpc::ConnectionPtr& conn, const Status& s);
  void MarkDead(NodeEntry& node, const std::string& reason);
  void CheckHealth();
  // Pushes the node table to every node (coalesced: at most every 10 ms).
  void ViewChanged();
  void BroadcastView();

  asio::io_context& io_;
  const GcsOptions options_;
  std::unique_ptr<rpc::Listener> listener_;
  asio::steady_timer health_timer_;
  asio::steady_timer view_timer_;
  bool view_armed_ = false;
  std::map<const rpc::Connection*, std::weak_ptr<rpc::Connection>> log_subscribers_;  // drivers

  std::map<std::string, NodeEntry> nodes_;                    // by node id
  std::map<std::string, std::string> kv_;
  std::map<uint32_t, rpc::JobInfo> jobs_;
  std::map<const rpc::Connection*, uint32_t> job_of_conn_;
  std::map<uint32_t, std::weak_ptr<rpc::Connection>> driver_of_job_;
  uint32_t next_job_id_ = 1;
  ActorManager actors_;
  PlacementGroupManager groups_;
};

}  // namespace fleet::gcs
