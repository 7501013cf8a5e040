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
#include "rpc/dispatcher.h"
#include "rpc/listener.h"

namespace fleet::gcs {

struct GcsOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string token;
  int health_check_period_ms = 1000;
  int health_timeout_ms = 10000;
  double spread_threshold = 0.5;  // Ray's scheduler_spread_threshold (actor placement)
};

class GcsServer {
 public:
  GcsServer(asio::io_context& io, GcsOptions options);
  // Binds and starts serving; returns the bound port.
  Result<int> Start();
  void Stop();
  // Messages refused so far (outside fleet-gcs's table, or from a role
  // that may not send them).
  uint64_t refused_messages() const { return dispatcher_.refused(); }

 private:
  struct NodeEntry {
    rpc::NodeInfo info;
    std::weak_ptr<rpc::Connection> conn;
    std::chrono::steady_clock::time_point last_report;
  };
  void RegisterHandlers();
  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  // Sends `reply` to a request (nothing for a push: request_id 0).
  static void Answer(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::Envelope& reply);
  // ---- handlers, one per message fleet-gcs accepts (see RegisterHandlers)
  using Conn = rpc::ConnectionPtr;
  void HandleHello(const Conn& c, uint64_t rid, rpc::Hello& m);
  void HandleLogLines(const Conn& c, uint64_t rid, rpc::LogLines& m);
  void HandleRegisterNode(const Conn& c, uint64_t rid, rpc::RegisterNode& m);
  void HandleReportResources(const Conn& c, uint64_t rid, rpc::ReportResources& m);
  void HandleGetNodes(const Conn& c, uint64_t rid, rpc::GetNodes& m);
  void HandleGetNodeStats(const Conn& c, uint64_t rid, rpc::GetNodeStats& m);
  void HandleRegisterJob(const Conn& c, uint64_t rid, rpc::RegisterJob& m);
  void HandleGetJobs(const Conn& c, uint64_t rid, rpc::GetJobs& m);
  void HandleKvPut(const Conn& c, uint64_t rid, rpc::KvPut& m);
  void HandleKvGet(const Conn& c, uint64_t rid, rpc::KvGet& m);
  void HandleKvDel(const Conn& c, uint64_t rid, rpc::KvDel& m);
  void HandleKvKeys(const Conn& c, uint64_t rid, rpc::KvKeys& m);
  void HandleRegisterActor(const Conn& c, uint64_t rid, rpc::RegisterActor& m);
  void HandleCreateActor(const Conn& c, uint64_t rid, rpc::CreateActor& m);
  void HandleSubscribeActor(const Conn& c, uint64_t rid, rpc::SubscribeActor& m);
  void HandleKillActor(const Conn& c, uint64_t rid, rpc::KillActor& m);
  void HandleGetNamedActor(const Conn& c, uint64_t rid, rpc::GetNamedActor& m);
  void HandleListActors(const Conn& c, uint64_t rid, rpc::ListActors& m);
  void HandleActorExiting(const Conn& c, uint64_t rid, rpc::ActorExiting& m);
  void HandleCreatePlacementGroup(const Conn& c, uint64_t rid, rpc::CreatePlacementGroup& m);
  void HandleRemovePlacementGroup(const Conn& c, uint64_t rid, rpc::RemovePlacementGroup& m);
  void HandleWaitPlacementGroup(const Conn& c, uint64_t rid, rpc::WaitPlacementGroup& m);
  void HandleGetPlacementGroups(const Conn& c, uint64_t rid, rpc::GetPlacementGroups& m);
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

  std::map<NodeId, NodeEntry> nodes_;
  std::map<std::string, std::string> kv_;
  std::map<uint32_t, rpc::JobInfo> jobs_;
  std::map<const rpc::Connection*, uint32_t> job_of_conn_;
  std::map<uint32_t, std::weak_ptr<rpc::Connection>> driver_of_job_;
  uint32_t next_job_id_ = 1;
  ActorManager actors_;
  PlacementGroupManager groups_;
  // Session: the connection a message came on.
  rpc::Dispatcher<const rpc::ConnectionPtr> dispatcher_{"fleet-gcs"};
};

}  // namespace fleet::gcs
