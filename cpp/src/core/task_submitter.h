// TaskSubmitter: the submitting side of normal tasks (driver or worker).
//
// Tasks are grouped by scheduling key (resource shape + function). For each
// key the submitter leases workers from the local fleet-node (which may send
// it on to another node: spillback; the lease is then held there) and pushes tasks
// straight to them: one at a time per lease until the function's average run
// time is known, then as many as fit in `pipeline_budget_us` of work (at most
// `max_tasks_in_flight_per_worker`). A lease with nothing to do lingers
// `lease_linger_ms` and is then returned.
// Top-level ObjectRef arguments owned here are resolved first and travel
// inline; a failed dependency fails the task with the same error. A worker
// that dies mid-task gets the task retried up to max_retries, then the
// returns become WorkerCrashedError.
// Thread-safe: Submit runs on caller threads, replies on the io thread; one
// mutex (mu_) guards all state, and no callback, store call or socket write
// runs under it (only asio posts and connection starts). Lock order: mu_ is
// never held together with another component's lock.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/thread_annotations.h"
#include "core/generator_backpressure.h"
#include "core/memory_store.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet {

struct SubmitterOptions {
  int max_tasks_in_flight_per_worker = 32;  // for tasks known to be tiny
  double pipeline_budget_us = 2000;         // queued work per worker, by average run time
  int max_pending_lease_requests = 10;
  int lease_linger_ms = 10;
};

struct TaskSubmission {
  rpc::TaskSpec spec;               // task_id, function, args, num_returns... filled by caller
  std::vector<std::string> dep_ids; // top-level ObjectRef arguments, in order
  // Refs nested inside the arguments: held until the task finishes, so the
  // executor can register as their borrower first.
  std::vector<std::string> held_ids;
  int max_retries = 3;
  std::string scheduling_key;       // from SchedulingKey(spec); computed if empty
};

// Stores a PushTaskReply's returns into `return_ids` (moving the bytes); ids
// the reply has no value for get a system error naming `what`.
// Hands the refs listed in a ReturnObject or GeneratorItem to `outer`'s
// entry (MemoryStore::AdoptNested); `self` is this process's address.
template <typename Msg>
void AdoptNestedRefs(MemoryStore& store, const std::string& outer, const Msg& m,
                     const std::string& self) {
  if (m.nested_ids_size() == 0) return;
  std::vector<std::pair<std::string, std::string>> nested;
  for (int k = 0; k < m.nested_ids_size() && k < m.nested_owners_size(); k++) {
    nested.emplace_back(m.nested_ids(k), m.nested_owners(k));
  }
  store.AdoptNested(outer, nested, self);
}

// `self`: this process's address (see MemoryStore::AdoptNested).
void StoreReturns(MemoryStore& store, const std::vector<std::string>& return_ids,
                  rpc::PushTaskReply* reply, const char* what, const std::string& self);

// Asks the executor on `conn` to cancel `task_id` (see CoreWorker's CancelTask).
void SendCancelTask(const rpc::ConnectionPtr& conn, const std::string& task_id, bool recursive);

class TaskSubmitter {
 public:
  // `node` is the connection to the local fleet-node; `hello` is what this
  // process sends when it connects to a leased worker.
  TaskSubmitter(asio::io_context& io, MemoryStore& store, rpc::ConnectionPtr node,
                rpc::Hello hello, SubmitterOptions options,
                rpc::Connection::MessageHandler on_node_message = nullptr);
  ~TaskSubmitter();
  // Generator items that ask for it are reported to `bp` (backpressure).
  // Set once, before the first Submit; `bp` outlives this submitter.
  void SetGeneratorBackpressure(GeneratorBackpressure* bp) { backpressure_ = bp; }

  // Creates the return objects (pending) and queues the task. Returns the
  // return object ids. Never blocks on the network.
  std::vector<std::string> Submit(TaskSubmission&& task) EXCLUDES(mu_);

  // Tasks with equal keys share leases: the resource shape and the function.
  static std::string SchedulingKey(const rpc::TaskSpec& spec);
  // "CPU=1;GPU=0.5" (sorted by name) for a resource map, and back.
  static std::string EncodeResources(const std::map<std::string, double>& resources);
  static std::map<std::string, double> DecodeResources(const std::string& text);

  // fleet.cancel: a queued task fails at once with TaskCancelledError; a
  // running one is interrupted by its worker (force: the worker is killed).
  // Returns false if the task is not pending here (finished, or unknown).
  bool Cancel(const std::string& task_id, bool force, bool recursive) EXCLUDES(mu_);
  // Cancels the pending tasks submitted by `parent_task_id` (recursive cancel).
  void CancelChildren(const std::string& parent_task_id, bool force) EXCLUDES(mu_);

  // Returns every held lease and fails every queued task (at shutdown).
  void Shutdown() EXCLUDES(mu_);
  size_t NumPendingTasks() const EXCLUDES(mu_);

 private:
  struct Task;
  struct Lease;
  struct KeyState;
  using TaskPtr = std::shared_ptr<Task>;
  using LeasePtr = std::shared_ptr<Lease>;

  void Enqueue(const TaskPtr& task) EXCLUDES(mu_);
  // Pushes queued tasks onto leases / asks for leases; collects the socket
  // work into `out`, for Flush to do after unlocking.
  struct Outbox;
  void DispatchLocked(const std::string& key, Outbox& out) REQUIRES(mu_);
  void Flush(Outbox& out) EXCLUDES(mu_);
  // Asks `node` for a lease for `key` (spilled: sent there by another node).
  // `target_node_id`: the node a spilled request goes to (SPREAD accounting).
  void RequestLease(const std::string& key, const rpc::ConnectionPtr& node, bool spilled,
                    const std::string& target_node_id = "") EXCLUDES(mu_);
  void OnLeaseReply(const std::string& key, const rpc::ConnectionPtr& node, const Status& s,
                    rpc::Envelope& reply) EXCLUDES(mu_);
  // A connection to another node's fleet-node (spillback), cached.
  Result<rpc::ConnectionPtr> RemoteNode(const std::string& address) EXCLUDES(mu_);
  void OnTaskReply(const LeasePtr& lease, const TaskPtr& task, const Status& s,
                   rpc::Envelope& reply) EXCLUDES(mu_);
  void FailTask(const TaskPtr& task, uint32_t flags, const std::string& message) EXCLUDES(mu_);
  void FinishTask(const TaskPtr& task) EXCLUDES(mu_);
  static std::string CancelledMessage(const Task& task);
  void ArmLingerTimer() REQUIRES(mu_);
  void ReturnIdleLeases() EXCLUDES(mu_);

  // Constant after construction.
  asio::io_context& io_;
  MemoryStore& store_;
  GeneratorBackpressure* backpressure_ = nullptr;  // set before use (SetGeneratorBackpressure)
  rpc::ConnectionPtr node_;
  rpc::Hello hello_;
  rpc::Connection::MessageHandler on_node_message_;  // pushes from remote nodes (warnings)
  const SubmitterOptions options_;

  mutable Mutex mu_;
  std::map<std::string, rpc::ConnectionPtr> remote_nodes_ GUARDED_BY(mu_);
  // The keys' queues and leases, and through them the tasks' and leases'
  // mutable fields (Task::cancelled..., Lease::in_flight, Lease::dead).
  std::unordered_map<std::string, std::unique_ptr<KeyState>> keys_ GUARDED_BY(mu_);
  size_t num_pending_ GUARDED_BY(mu_) = 0;
  std::unordered_map<std::string, std::weak_ptr<Task>> tasks_by_id_ GUARDED_BY(mu_);
  bool shutdown_ GUARDED_BY(mu_) = false;
  bool linger_armed_ GUARDED_BY(mu_) = false;
  asio::steady_timer linger_timer_;  // io thread only
};

}  // namespace fleet
