// TaskReceiver: the worker side of task execution. Tasks pushed here
// (PushTask) wait in a queue for the Python execution loop, which takes them
// with NextTask (blocking) or TryNextTask (event-loop mode, woken through an
// eventfd) and answers each with FinishTask, which builds the reply.
//
// Invariants: every pushed task gets exactly one reply (its result, or
// "cancelled" when a cancel finds it still queued or overtook the push),
// unless its submitter's connection is gone. Replies of short pipelined tasks
// are held back (at most 32, at most 1 ms, never past the moment this worker
// waits for work) so that a batch costs one write.
// Thread-safe: one mutex (mu_), never held while calling out (sockets,
// the store client, the cancel-children hook), so it takes no lock order.
#pragma once

#include <pthread.h>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/thread_annotations.h"
#include "fleet.pb.h"
#include "rpc/connection.h"
#include "rpc/dispatcher.h"

namespace fleet {

// A task handed to the Python execution loop.
struct ExecutableTask {
  uint64_t handle = 0;
  rpc::TaskSpec spec;
};

class TaskReceiver {
 public:
  // Frees objects of ours in the node's store (returns replaced by an error).
  using FreeStoredFn = std::function<void(const std::vector<std::string>& ids)>;
  // A recursive cancel of `task_id` arrived: cancel what it submitted.
  using CancelChildrenFn = std::function<void(const std::string& task_id)>;

  TaskReceiver(asio::io_context& io, FreeStoredFn free_stored, CancelChildrenFn cancel_children);
  TaskReceiver(const TaskReceiver&) = delete;
  TaskReceiver& operator=(const TaskReceiver&) = delete;

  // ---- messages (io thread) --------------------------------------------------
  // Adds PushTask and CancelTask (from submitters; PushTask also from
  // fleet-gcs: an actor's creation task) to the listener's table, and
  // ExitWorker to the fleet-node connection's.
  void RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener,
                        rpc::Dispatcher<const rpc::ConnectionPtr>& node);
  void HandlePushTask(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::PushTask& m)
      EXCLUDES(mu_);
  void HandleCancelTask(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::CancelTask& m)
      EXCLUDES(mu_);
  void HandleExitWorker(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::ExitWorker& m)
      EXCLUDES(mu_);

  // ---- the execution loop ---------------------------------------------------
  // Blocks until a task arrives; nullopt once the worker must exit. A task
  // with handle 0 is a cancel notice (concurrent execution).
  std::optional<ExecutableTask> NextTask() EXCLUDES(mu_);
  // From now on every task pushed here (and the exit) also makes the
  // returned eventfd readable (see CoreWorker::EnableTaskEvents).
  int EnableTaskEvents() EXCLUDES(mu_);
  // Non-blocking NextTask: nullopt if nothing is queued; handle UINT64_MAX:
  // the worker must exit.
  std::optional<ExecutableTask> TryNextTask() EXCLUDES(mu_);
  // Sends the reply for `handle` (no-op if unknown or its caller is gone).
  void FinishTask(uint64_t handle, std::vector<std::pair<std::string, uint32_t>>&& returns,
                  bool retryable_error, bool worker_exiting) EXCLUDES(mu_);
  // Streaming generator: sends item `index` of the task behind `handle`.
  void SendGeneratorItem(uint64_t handle, int index, std::string data, uint32_t flags)
      EXCLUDES(mu_);
  void SetConcurrent(bool concurrent) EXCLUDES(mu_);
  bool TakeCancelRequest(const std::string& task_id, bool keep) EXCLUDES(mu_);
  // The worker must exit: wakes NextTask and the task-event fd.
  void SetExiting() EXCLUDES(mu_);

  // ---- the running tasks ----------------------------------------------------
  // The task behind `handle` and its caller (who owns its returns); false
  // if it is not running here.
  bool Lookup(uint64_t handle, std::string* task_id, std::string* caller) EXCLUDES(mu_);
  // Return `index` of `handle` was written to the node's store as `id`.
  void RecordStored(uint64_t handle, uint32_t index, const std::string& id) EXCLUDES(mu_);
  // Return (or generator item) `index` of `handle` holds refs `nested`
  // (id, owner): sent with its reply.
  void AddNested(uint64_t handle, uint32_t index, bool generator_item,
                 const std::vector<std::pair<std::string, std::string>>& nested) EXCLUDES(mu_);
  // The task the main thread runs ("" if none, or concurrent execution).
  std::string CurrentTaskId() EXCLUDES(mu_);
  // True if the calling thread is the main thread running a normal task (not
  // an actor call, not concurrent execution): the task lends its resources
  // back to its node while it blocks in get/wait.
  bool BlockingReleasesResources() EXCLUDES(mu_);

  // Sends the held replies now.
  void FlushHeldReplies() EXCLUDES(mu_);
  // Flushes held replies and wakes the loop for exit (CoreWorker::Shutdown).
  void Shutdown() EXCLUDES(mu_);
  // Cancels the hold timer (io thread).
  void CancelTimer();

 private:
  struct Pending {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
    std::chrono::steady_clock::time_point started;
    std::string task_id;
    std::string owner_address;  // the caller, who owns the returns
    // Refs inside return i (or generator item i), with their owners.
    std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> nested;
    std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> item_nested;
    // Returns written to the node's store (index -> id): freed by FinishTask
    // if the reply carries something else there (a later return failed).
    std::map<uint32_t, std::string> stored;
  };
  void ReplyCancelled(uint64_t handle, const rpc::TaskSpec& spec) EXCLUDES(mu_);
  void SignalTaskEventLocked() REQUIRES(mu_);

  // Constant after construction.
  asio::io_context& io_;
  const FreeStoredFn free_stored_;
  const CancelChildrenFn cancel_children_;
  std::unique_ptr<asio::steady_timer> hold_timer_;  // io thread only

  Mutex mu_;
  CondVar cv_;  // a task was queued, or exiting_ was set
  std::deque<ExecutableTask> queue_ GUARDED_BY(mu_);
  std::map<uint64_t, Pending> executing_ GUARDED_BY(mu_);
  uint64_t next_handle_ GUARDED_BY(mu_) = 1;
  bool exiting_ GUARDED_BY(mu_) = false;
  bool in_task_ GUARDED_BY(mu_) = false;
  std::string current_task_id_ GUARDED_BY(mu_);  // run by the main thread
  pthread_t main_thread_ GUARDED_BY(mu_){};       // the thread that calls NextTask
  bool concurrent_ GUARDED_BY(mu_) = false;
  int task_event_fd_ GUARDED_BY(mu_) = -1;
  bool current_is_actor_call_ GUARDED_BY(mu_) = false;
  std::string cancel_requested_ GUARDED_BY(mu_);
  std::deque<std::string> early_cancels_ GUARDED_BY(mu_);  // cancels of tasks not (yet) here
  // Replies held back while more tasks are queued here, so several go out in
  // one write: at most 32 of them, flushed before this worker waits for work
  // and by the io thread at most 1 ms after the first was held (a queued task
  // that runs long must not delay the replies before it).
  std::vector<std::shared_ptr<rpc::Connection>> held_replies_ GUARDED_BY(mu_);
  size_t num_held_ GUARDED_BY(mu_) = 0;
  bool hold_timer_armed_ GUARDED_BY(mu_) = false;
};

}  // namespace fleet
