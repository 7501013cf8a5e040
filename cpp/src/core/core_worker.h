// CoreWorker: the core library inside every driver and worker process, and
// the facade Python binds. It owns the io thread (Asio), the listener other
// processes use to push tasks here and fetch objects owned here, the
// connection to fleet-node, and the components that do the work:
//   MemoryStore       small-object values, waiting, and (still) ref counts
//   ReferenceCounter  the borrow protocol with owners and borrowers
//   TaskSubmitter / ActorSubmitter   the caller side of tasks
//   TaskReceiver      the worker side: execution queue, cancel, replies
//   GcsClient         the control-store connection and its requests
//   PeerConnections   connections to other drivers/workers
//   ObjectLocator     where object copies are; LogPrinter: worker output
// CoreWorker itself holds no mutex; it routes messages to the owning component.
// Thread-safe: every public method may be called from any Python thread
// (with the GIL released for anything that blocks).
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/ids.h"
#include "common/status.h"
#include "core/actor_submitter.h"
#include "core/gcs_client.h"
#include "core/log_printer.h"
#include "core/memory_store.h"
#include "core/object_locations.h"
#include "core/peer_connections.h"
#include "core/reference_counter.h"
#include "core/store_client.h"
#include "core/task_receiver.h"
#include "core/task_submitter.h"
#include "core/value_format.h"
#include "rpc/connection.h"
#include "rpc/dispatcher.h"
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

class CoreWorker {
 public:
  // Connects to fleet-gcs and fleet-node, registers (a driver also registers
  // its job) and starts the io thread. Errors name the address that failed.
  static Result<std::unique_ptr<CoreWorker>> Create(const CoreOptions& options);
  ~CoreWorker();

  // ---- objects --------------------------------------------------------------
  // Returns the new object's id, holding one local ref for the caller.
  std::string Put(std::string data, uint32_t flags);
  // A worker's task blocked here lends its CPU to its node (NotifyBlocked)
  // and takes it back when the call returns. `more_slices`: the caller waits
  // in slices (to see signals) and calls again after a timeout, so the CPU
  // stays lent until a call ends otherwise, or EndBlocked.
  Result<std::vector<StoredObject>> Get(const std::vector<std::string>& ids, int64_t timeout_ms,
                                        bool more_slices = false);
  Result<std::vector<bool>> Wait(const std::vector<std::string>& ids, int num_returns,
                                 int64_t timeout_ms, bool fetch_local, bool more_slices = false);
  // A sliced wait ended early (a signal): takes the lent CPU back.
  void EndBlocked() { OnBlocked(false); }
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
  // ReadStore for values kept as store descriptors (kFlagInStore), which
  // name the node holding each. Never fails as a whole: each result is a
  // view, or `full` (no room to restore it now; `error` says why), or
  // `error` = "Object <hex> is lost: <why>" (a failed round trip is every
  // object's error).
  std::vector<StoreRead> ReadStoredValues(const std::vector<std::string>& ids,
                                          const std::vector<std::string_view>& descriptors);
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
  // A ref borrowed from another process (`object_id`, the ref's own id) is
  // forwarded to its owner, as Ray does, and counts as found. False if it is
  // neither pending here nor borrowed (finished, or unknown).
  bool CancelTask(const std::string& task_id, bool force, bool recursive,
                  const std::string& object_id = "");

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
  // Builds the three message tables (each component adds its handlers).
  void RegisterHandlers();
  // Messages on our listener (submitters, borrowers, owners, fleet-nodes),
  // on the fleet-node connection, and from fleet-gcs (io thread), through
  // the tables. A request outside the listener's table is answered with an
  // error; anything else unknown is dropped.
  void OnMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnNodeMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void OnGcsMessage(const rpc::ConnectionPtr& conn, rpc::Envelope& msg);
  void HandleHello(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::Hello& m);
  void HandleGetObject(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::GetObject& m);
  void HandleCancelOwnedTask(const rpc::ConnectionPtr& conn, uint64_t request_id,
                             rpc::CancelOwnedTask& m);
  void HandleActorUpdate(const rpc::ConnectionPtr& conn, uint64_t request_id, rpc::ActorUpdate& m);
  // Sets who submits `spec`: this process as owner, and the task it runs.
  void StampCaller(rpc::TaskSpec* spec);
  void FetchFromOwner(const std::string& id, const std::string& owner_address);
  void OnBlocked(bool blocked);
  // Whether this worker told its node it is blocked (only a task's main
  // thread ever does, so the flag changes on one thread at a time).
  std::atomic<bool> blocked_{false};
  // Every second: after a burst of objects/tasks is freed, give the memory
  // back to the OS (glibc keeps freed heap otherwise).
  void TrimMemory();

  // Constant after Init (set before the io thread can read them).
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
  std::unique_ptr<PeerConnections> peers_;
  std::unique_ptr<ReferenceCounter> refs_;
  std::unique_ptr<ObjectLocator> locator_;
  std::unique_ptr<LogPrinter> log_printer_;
  std::unique_ptr<GcsClient> gcs_;
  std::unique_ptr<TaskReceiver> receiver_;
  std::unique_ptr<TaskSubmitter> submitter_;
  std::unique_ptr<ActorSubmitter> actor_submitter_;
  // Built in Init before the first connection; read by the io thread only.
  rpc::Dispatcher<const rpc::ConnectionPtr> listener_table_{"core worker"};
  rpc::Dispatcher<const rpc::ConnectionPtr> node_table_{"core worker (fleet-node link)"};
  rpc::Dispatcher<const rpc::ConnectionPtr> gcs_table_{"core worker (fleet-gcs link)"};

  bool shut_down_ = false;                          // the calling thread's (Shutdown)
  std::unique_ptr<asio::steady_timer> trim_timer_;  // io thread only
  size_t peak_objects_ = 0;                         // io thread only
};

}  // namespace fleet
