// CoreWorker: the core library inside every driver and worker process.
//
// Owns one io thread (Asio), the connections to fleet-gcs and fleet-node, a
// listener other processes use to push tasks here and fetch objects owned
// here, the MemoryStore and the TaskSubmitter. In a worker it also queues the
// tasks pushed to it for the Python execution loop (NextTask/FinishTask).
// Thread-safe: every public method may be called from any Python thread
// (with the GIL released for anything that blocks).
#pragma once

#include <pthread.h>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "core/actor_submitter.h"
#include "core/log_dedup.h"
#include "core/memory_store.h"
#include "core/store_client.h"
#include "core/value_format.h"
#include "core/task_submitter.h"
#include "rpc/connection.h"
#include "rpc/listener.h"

namespace fleet {

struct CoreOptions {
  bool is_worker = false;
  std::string node_address;   // "unix:/path" of the local fleet-node
  std::string gcs_address;    // "host:port"
  std::string token;
  std::string session_dir;
  std::string worker_id;      // binary; workers get theirs from fleet-node
  std::string listen_path;    // where this process accepts connections
  // This node's IP: also listen on TCP there, so processes on other nodes
  // can push tasks and fetch objects ("ip:port,unix:/path"). Empty: Unix only.
  std::string node_ip;
  bool log_to_driver = true;
  bool dedup_logs = true;     // fold identical lines from many workers (as Ray)
  std::string namespace_name;
  int connect_timeout_ms = 10000;
  SubmitterOptions submitter;
};

// A task handed to the Python execution loop.
struct ExecutableTask {
  uint64_t handle = 0;
  rpc::TaskSpec spec;
};

// The node table of the cluster at `gcs_address`, without joining it (to
// find this machine's fleet-node before connecting).
Result<rpc::GetNodesReply> ProbeNodes(const std::string& gcs_address, const std::string& token,
                                      int timeout_ms);

class CoreWorker {
 public:
  // Connects to fleet-gcs and fleet-node, registers (a driver also registers
  // its job) and starts the io thread. Errors name the address that failed.
  static Result<std::unique_ptr<CoreWorker>> Create(const CoreOptions& options);
  ~CoreWorker();

  // ---- objects --------------------------------------------------------------
  // Returns the new object's id, holding one local ref for the caller.
  std::string Put(std::string data, uint32_t flags);
  Result<std::vector<StoredObject>> Get(const std::vector<std::string>& ids, int64_t timeout_ms);
  Result<std::vector<bool>> Wait(const std::vector<std::string>& ids, int num_returns,
                                 int64_t timeout_ms, bool fetch_local);
  MemoryStore& store() { return store_; }

  // ---- the node's shared-memory object store -------------------------------
  // Serialized values up to this size travel inline (in messages and the
  // owner's MemoryStore); larger ones go to the node's object store.
  static constexpr uint64_t kInlineThreshold = 100 * 1024;
  // Encodes a serialized value (pickle bytes + out-of-band buffers) as
  // object `id` owned by `owner_address` (this process if empty): inline
  // bytes (plain pickle, or framed with its buffers), or written to the
  // node's store (then the value is a descriptor with kFlagInStore).
  // kObjectStoreFull if it fits nowhere.
  Result<StoredObject> EncodeValue(const std::string& id, const std::string& owner_address,
                                   std::string_view inband, const std::vector<ByteSpan>& buffers,
                                   const std::string& call_site);
  // EncodeValue for return `index` (0-based; or generator item `index`) of the task
  // behind `handle`, owned by its caller.
  Result<StoredObject> EncodeReturn(uint64_t handle, uint32_t index, bool generator_item,
                                    std::string_view inband, const std::vector<ByteSpan>& buffers);
  // Return `index` of the task behind `handle` holds refs `ids`: registers
  // the caller as their borrower with each owner (waiting for remote owners'
  // answers) and sends the list with the reply, so the caller's return
  // object holds them. Unknown ids escape (kept).
  void RegisterReturnRefs(uint64_t handle, uint32_t index, const std::vector<std::string>& ids,
                          bool generator_item = false);
  // put() of a serialized value: a fresh id, owned here, holding one local ref.
  Result<std::string> PutValue(std::string_view inband, const std::vector<ByteSpan>& buffers,
                               const std::string& call_site);
  // Pinned views of objects in this node's store (one round trip).
  // `sources`: per id, the node holding the primary copy (from its
  // descriptor); the local fleet-node pulls objects that are not here.
  Result<std::vector<StoreRead>> ReadStore(const std::vector<std::string>& ids,
                                           const std::vector<std::string>& sources = {});
  // Prints what is left of folded (deduplicated) worker output.
  void FlushLogs();
  // Where each object's copies are (node ids) and its size; asks the owner
  // of borrowed ones. Unknown objects come back with found = false.
  Result<std::vector<rpc::ObjectLocations>> ObjectLocations(const std::vector<std::string>& ids,
                                                            int64_t timeout_ms);
  Result<rpc::StoreListReply> StoreList();

  // ---- borrowing -------------------------------------------------------------
  // A ref owned by `owner` was deserialized here for the first time: tell
  // the owner at the next FlushBorrowRegistrations.
  void QueueBorrowRegistration(const std::string& owner, const std::string& id);
  // Registers every queued borrow with its owner and waits for the answers
  // (one round trip per owner). Call before the value that carried the refs
  // can be let go (get() returning, a task finishing).
  void FlushBorrowRegistrations();

  // ---- tasks ----------------------------------------------------------------
  // Returns the return ids, each holding one local ref for the caller.
  std::vector<std::string> SubmitTask(TaskSubmission&& task);
  // Worker: blocks until a task arrives; nullopt once the worker must exit.
  std::optional<ExecutableTask> NextTask();
  // Worker, event-loop mode (async actors): from now on every task pushed
  // here (and the exit) also makes `fd` (an eventfd) readable, so an event
  // loop can wait on it and take tasks with TryNextTask, without a thread
  // of its own blocked in NextTask. Returns the fd.
  int EnableTaskEvents();
  // Non-blocking NextTask: nullopt if nothing is queued; a task with
  // handle == UINT64_MAX means the worker must exit.
  std::optional<ExecutableTask> TryNextTask();
  // Worker: sends the reply for `handle`.
  // `worker_exiting`: this worker leaves after the reply (max_calls reached).
  void FinishTask(uint64_t handle, std::vector<std::pair<std::string, uint32_t>>&& returns,
                  bool retryable_error, bool worker_exiting = false);

  // fleet.cancel(ref): the task (normal or actor call) that makes `task_id`.
  // False if it is not pending in this process (finished, or not ours).
  bool CancelTask(const std::string& task_id, bool force, bool recursive);

  // ---- actors (see ActorSubmitter) ------------------------------------------
  ActorSubmitter& actors() { return *actor_submitter_; }
  std::vector<std::string> SubmitActorTask(TaskSubmission&& call, int max_task_retries);
  Status KillActor(const std::string& actor_id, bool no_restart, const std::string& reason);
  Result<std::optional<rpc::ActorInfo>> GetNamedActor(const std::string& name, const std::string& ns);
  Result<std::vector<rpc::ActorInfo>> ListActors();
  // Actor worker: tells fleet-gcs this exit is intended (no restart).
  Status ReportActorExiting(const std::string& actor_id, const std::string& reason);

  // ---- worker execution details ---------------------------------------------
  // Concurrent execution (async or threaded actor): replies are not held
  // back, and cancellation of a running call is queued as a notice for the
  // Python loop (handle 0) instead of interrupting the main thread.
  void SetConcurrent(bool concurrent);
  // True if a cancel arrived for `task_id` while it ran on the main thread
  // (cleared unless `keep`).
  bool TakeCancelRequest(const std::string& task_id, bool keep = false);
  // A dropped ObjectRefGenerator (see MemoryStore::ReleaseGenerator).
  void ReleaseGenerator(const std::string& task_id, uint32_t from_index) {
    store_.ReleaseGenerator(task_id, from_index);
  }
  // Streaming generator: sends item `index` of the task behind `handle`.
  void SendGeneratorItem(uint64_t handle, int index, std::string data, uint32_t flags);

  // ---- control store --------------------------------------------------------
  Status KvPut(const std::string& key, const std::string& value, bool overwrite, bool* added);
  Result<std::optional<std::string>> KvGet(const std::string& key);
  Result<int> KvDel(const std::string& key);
  Result<std::vector<std::string>> KvKeys(const std::string& prefix);
  Result<rpc::GetNodesReply> GetNodes();
  // One request to fleet-gcs; timeout_ms < 0: the default (60 s).
  Result<rpc::Envelope> GcsCall(rpc::Envelope req, int64_t timeout_ms);
  Result<rpc::GetNodeStatsReply> GetNodeStats();

  // ---- identity -------------------------------------------------------------
  const std::string& address() const { return address_; }
  const std::string& worker_id() const { return worker_id_; }
  const std::string& node_id() const { return node_id_; }
  uint32_t job_id() const { return job_id_; }
  void set_job_id(uint32_t id) { job_id_ = id; }
  std::string NextTaskId() { return ids_.NextTaskId(job_id_); }

  // Stops the io thread and closes every connection. Idempotent.
  void Shutdown();

 private:
  explicit CoreWorker(const CoreOptions& options);
  Status Init();
  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnNodeMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void HandlePushTask(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void HandleGetObject(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void HandleCancelTask(rpc::Envelope& msg);
  // Sets who submits `spec`: this process as owner, and the task it runs.
  void StampCaller(rpc::TaskSpec* spec);
  void OnGcsMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  // The locations of an object this process owns (see ObjectLocations).
  rpc::ObjectLocations LocateOwned(const std::string& id);
  // Worker output relayed by fleet-gcs: prefixed, folded, printed.
  void PrintLogLines(const rpc::LogLines& l);
  void ArmLogFlushLocked();
  void ReplyCancelled(uint64_t handle, const rpc::TaskSpec& spec);
  void FetchFromOwner(const std::string& id, const std::string& owner_address);
  Result<rpc::ConnectionPtr> ConnectionTo(const std::string& address);
  // Drops every borrow of `borrower` once our connection to it closes (it
  // died). Connects if needed (Unix: immediate).
  void WatchBorrower(const std::string& borrower);
  Result<rpc::ConnectionPtr> Gcs();
  void OnBlocked(bool blocked);
  // Sends the queued RemoveBorrowers (io thread).
  void FlushBorrowReleases();
  // Every second: after a burst of objects/tasks is freed, give the memory
  // back to the OS (glibc keeps freed heap otherwise).
  void TrimMemory();

  const CoreOptions options_;
  asio::io_context io_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread io_thread_;
  MemoryStore store_;
  IdGenerator ids_;
  std::string address_;
  std::string worker_id_;
  std::string node_id_;
  uint32_t job_id_ = 0;

  rpc::ConnectionPtr node_;
  std::unique_ptr<StoreClient> store_client_;
  std::unique_ptr<rpc::Listener> listener_;
  std::unique_ptr<TaskSubmitter> submitter_;
  std::unique_ptr<ActorSubmitter> actor_submitter_;

  std::mutex borrow_mu_;
  std::vector<std::pair<std::string, std::string>> borrows_to_register_;  // (owner, id)
  // owner -> (id, count) to hand back; guarded by borrow_mu_
  std::map<std::string, std::vector<std::pair<std::string, int>>> borrows_to_release_;
  bool release_flush_posted_ = false;                        // guarded by borrow_mu_
  int registrations_in_flight_ = 0;                          // guarded by borrow_mu_
  // Releases of borrows whose registration was not sent yet: they go once it
  // has been answered. (owner, id, count); guarded by borrow_mu_.
  std::vector<std::tuple<std::string, std::string, int>> deferred_releases_;
  // Moves deferred releases whose registration is no longer queued into the
  // release queue (only while no registration is in flight). Requires borrow_mu_.
  void ReleaseDeferredLocked();
  // Queues a release and makes sure a flush is posted. Requires borrow_mu_.
  void QueueReleaseLocked(const std::string& owner, const std::string& id, int count);
  std::condition_variable registrations_done_;
  // Borrowers registered for them by an executor (not through their own
  // connection): watched through a connection of ours. Guarded by borrow_mu_
  // (not conn_mu_: Shutdown closes connections, running their close
  // handlers, under conn_mu_).
  std::set<std::string> watched_borrowers_;
  // Connections of processes that registered borrows here (owner side).
  std::map<const rpc::Connection*, std::string> borrower_conns_;  // io thread only
  std::map<const rpc::Connection*, std::string> peer_addresses_;  // from Hello; io thread only

  std::mutex conn_mu_;
  rpc::ConnectionPtr gcs_;                                   // guarded by conn_mu_
  std::map<std::string, rpc::ConnectionPtr> peers_;          // guarded by conn_mu_

  // Worker execution queue.
  std::mutex exec_mu_;
  std::condition_variable exec_cv_;
  struct Pending {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
    std::chrono::steady_clock::time_point started;
    std::string task_id;
    std::string owner_address;  // the caller, who owns the returns
    // Refs inside return i (or generator item i), with their owners (see
    // RegisterReturnRefs).
    std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> nested;
    std::map<uint32_t, std::vector<std::pair<std::string, std::string>>> item_nested;
    // Returns written to the node's store (index -> id): freed by FinishTask
    // if the reply carries something else there (a later return failed).
    std::map<uint32_t, std::string> stored;
  };
  std::deque<ExecutableTask> exec_queue_;                    // guarded by exec_mu_
  std::map<uint64_t, Pending> executing_;                    // guarded by exec_mu_
  uint64_t next_handle_ = 1;                                 // guarded by exec_mu_
  bool exiting_ = false;                                     // guarded by exec_mu_
  bool in_task_ = false;                                     // guarded by exec_mu_
  std::string current_task_id_;     // run by the main thread; guarded by exec_mu_
  pthread_t main_thread_{};         // the thread that calls NextTask; guarded by exec_mu_
  bool concurrent_ = false;                                  // guarded by exec_mu_
  int task_event_fd_ = -1;                                   // guarded by exec_mu_
  void SignalTaskEventLocked();
  bool current_is_actor_call_ = false;                       // guarded by exec_mu_
  std::string cancel_requested_;                             // guarded by exec_mu_
  std::deque<std::string> early_cancels_;  // cancels of tasks not (yet) here; guarded by exec_mu_
  // Replies held back while more tasks are queued here, so several go out in
  // one write: at most 32 of them, flushed before this worker waits for work
  // and by the io thread at most 1 ms after the first was held (a queued task
  // that runs long must not delay the replies before it).
  std::vector<std::shared_ptr<rpc::Connection>> held_replies_;  // guarded by exec_mu_
  size_t num_held_ = 0;                                          // guarded by exec_mu_
  bool hold_timer_armed_ = false;                                // guarded by exec_mu_
  std::unique_ptr<asio::steady_timer> hold_timer_;               // io thread only
  void FlushHeldReplies();
  bool shut_down_ = false;
  std::unique_ptr<asio::steady_timer> trim_timer_;  // io thread only
  std::mutex loc_mu_;
  // Nodes that pulled a copy of an owned object (AddObjectLocation); the
  // primary's node is in the object's descriptor.
  std::unordered_map<std::string, std::set<std::string>> copy_locations_;  // guarded by loc_mu_
  std::mutex log_mu_;
  LogDeduplicator log_dedup_{LogDedupOptions{.enabled = options_.dedup_logs}};  // guarded by log_mu_
  std::unique_ptr<asio::steady_timer> log_timer_;  // created in Init
  bool log_flush_armed_ = false;                   // guarded by log_mu_
  size_t peak_objects_ = 0;                          // io thread only
};

}  // namespace fleet
