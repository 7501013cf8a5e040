// ActorManager: fleet-gcs's actor directory and actor scheduler.
//
// A caller registers an actor (reserving its id and name), then sends the
// creation task once the constructor's arguments are resolved. The manager
// leases a worker for it from a node that can hold it (the lease is held by
// fleet-gcs for the actor's lifetime), pushes the creation task, and publishes
// every state change (PENDING -> ALIVE -> RESTARTING -> ... -> DEAD) to the
// subscribed callers, who then talk to the actor's worker directly.
// An actor whose worker dies is restarted up to max_restarts; one that exits
// on purpose (exit_actor, last handle gone, fleet.kill(no_restart=True)) or
// whose job ends (unless detached) is DEAD for good, with the reason. A
// non-detached actor also shares its owner's fate (Ray's owner-based
// lifetime): fleet-gcs holds a connection to each owner (the creator's
// listener), and when it closes the owner's actors die.
// Single-threaded: everything runs on fleet-gcs's io thread.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/scheduling_strategy.h"
#include "common/typed_id.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet::gcs {

class ActorManager {
 public:
  // `alive_nodes` lists the nodes that can take actors now;
  // `driver_of_job` finds a job's driver connection (for warnings).
  ActorManager(asio::io_context& io, std::string token,
               std::function<std::vector<rpc::NodeInfo>()> alive_nodes,
               std::function<rpc::ConnectionPtr(uint32_t)> driver_of_job);

  // Request handlers: fill `reply` (sent by the caller when the request has an id).
  // `owner`: the connection of the process registering it (its owner; null
  // in unit tests). See OnConnectionClosed.
  void Register(const rpc::RegisterActor& req, rpc::Envelope& reply,
                const rpc::ConnectionPtr& owner = nullptr);
  void Create(rpc::CreateActor& req);
  void Subscribe(const rpc::ConnectionPtr& conn, const ActorId& actor_id);
  void Kill(const rpc::KillActor& req, rpc::Envelope& reply);
  void GetNamed(const rpc::GetNamedActor& req, rpc::Envelope& reply);
  void List(rpc::Envelope& reply);
  void Exiting(const rpc::ActorExiting& req);

  // A job's driver left: its actors end, except detached ones.
  void OnJobFinished(uint32_t job_id);
  // A connection closed: forget its subscriptions; the non-detached actors
  // its process registered whose creation still waits for arguments (which
  // only that owner could resolve) are DEAD.
  void OnConnectionClosed(const rpc::Connection* conn);
  // Nodes changed (one registered): actors waiting for a feasible node retry.
  void OnNodesChanged();
  // Ray's scheduler_spread_threshold for the hybrid policy (see actor_placement.h).
  void set_spread_threshold(double t) { spread_threshold_ = t; }
  // A node reported its resources: the leases granted there before now show.
  void OnNodeReport(const NodeId& node) { granted_unreported_.erase(node); }
  // Once a second: warn about actors no node can hold.
  void Tick();

 // A connection to that node's fleet-node (cached; also used for bundles).
  Result<rpc::ConnectionPtr> NodeConnection(const rpc::NodeInfo& node);

 private:
  struct Actor {
    rpc::ActorInfo info;
    rpc::TaskSpec spec;                 // the creation task; empty until Create
    bool has_spec = false;
    uint64_t incarnation = 0;           // bumped per placement attempt
    bool lease_pending = false;
    NodeId lease_node_id;               // node holding the worker lease
    rpc::ConnectionPtr worker_conn;     // to the actor's worker, while placed
    std::string exit_reason;            // set by an intended exit
    bool kill_no_restart = false;
    std::string restart_reason;         // set by fleet.kill(no_restart=False)
    std::chrono::steady_clock::time_point unplaceable_since{};
    bool warned = false;
    std::vector<std::weak_ptr<rpc::Connection>> subscribers;
    const rpc::Connection* owner = nullptr;  // the registering process (compared only)
  };

  // Owners of non-detached actors, by listener address: one connection each.
  struct Owner {
    rpc::ConnectionPtr conn;
    std::vector<ActorId> actors;  // may list dead ones (pruned as it grows)
    size_t prune_at = 64;
  };
  void WatchOwner(const std::string& address, const ActorId& actor_id);
  void OnOwnerDied(const std::string& address);
  // Forgets the oldest dead actors beyond max_dead_ (posted: MarkDead runs
  // inside loops over actors_).
  void PruneDead();
  void Schedule(Actor& a);
  void OnLeaseReply(const ActorId& actor_id, uint64_t incarnation, const Status& s,
                    rpc::Envelope& reply);
  void OnCreated(const ActorId& actor_id, uint64_t incarnation, const Status& s,
                 rpc::Envelope& reply);
  void OnWorkerLost(const ActorId& actor_id, uint64_t incarnation);
  void Restart(Actor& a, const std::string& reason);
  void MarkDead(Actor& a, const std::string& reason, const std::string& error = "");
  void ReleaseWorker(Actor& a, bool kill);
  void Publish(Actor& a);
  std::string Describe(const Actor& a) const;

  asio::io_context& io_;
  const std::string token_;
  std::function<std::vector<rpc::NodeInfo>()> alive_nodes_;
  std::function<rpc::ConnectionPtr(uint32_t)> driver_of_job_;
  std::map<ActorId, Actor> actors_;
  std::map<std::pair<std::string, std::string>, ActorId> named_;  // (ns, name) -> id
  std::map<NodeId, rpc::ConnectionPtr> node_conns_;
  std::map<std::string, Owner> owners_;
  // Dead actors in the order they died; at most max_dead_ are kept (Ray's
  // RAY_maximum_gcs_destroyed_actor_cached_count, default 100000).
  std::deque<ActorId> dead_;
  size_t max_dead_;
  bool prune_posted_ = false;
  uint64_t spread_next_ = 0;
  double spread_threshold_ = 0.5;  // Ray's scheduler_spread_threshold
  std::minstd_rand rng_{std::random_device{}()};  // zero-resource actors go to a random node
  // Resources of actor leases sent to each node and not answered yet, and of
  // those granted since the node's last resource report: its reported free
  // resources do not show them yet, so placement subtracts them (a burst of
  // actors does not all see the same free node, nor queue at a full one).
  std::map<NodeId, std::map<std::string, double>> in_flight_;
  std::map<NodeId, std::map<std::string, double>> granted_unreported_;
};

}  // namespace fleet::gcs
