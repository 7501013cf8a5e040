// WorkerSupervisor: the worker processes of this node as processes. Starts
// them (through the zygote when it is ready, else fork + exec), reads their
// stdout/stderr (to logs/worker-*.log and, as LogLines, to fleet-gcs),
// reaps them (SIGCHLD, or the zygote's exit reports), records why each ended
// with its last stderr lines (the last 256 workers) and answers
// GetWorkerExit, waiting up to 2 s for an exit that is still being drained.
// Counts consecutive start failures: past `worker_start_failures_before_error`
// the node fails lease requests instead of queueing them.
// WorkerPool keeps the leasing state; this class only adds and removes
// starting workers in it. Single-threaded: io thread only.
#pragma once

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fleet.pb.h"
#include "node/client_session.h"
#include "node/worker_pool.h"
#include "node/zygote.h"

namespace fleet::node {

struct WorkerSupervisorOptions {
  std::string python = "python3";  // worker interpreter
  bool use_zygote = true;
  int start_failures_before_error = 3;
  std::string session_dir;         // logs go to <session_dir>/logs
  // The environment of every worker.
  std::string node_id;             // binary
  std::string node_ip;
  std::string unix_socket;         // fleet-node's
  std::string gcs_address;
  std::string token;
};

class WorkerSupervisor {
 public:
  struct Hooks {
    // The process of a worker the pool knows ended (`why`: "exited with code 1"...).
    std::function<void(const std::string& worker_id, const std::string& why)> exited;
    // Worker output to send on (LogLines).
    std::function<void(const rpc::Envelope& log_lines)> output;
  };
  // Watches SIGCHLD from now on (reaped once Start runs).
  WorkerSupervisor(asio::io_context& io, WorkerSupervisorOptions options, WorkerPool& pool,
                   Hooks hooks);
  ~WorkerSupervisor();

  // Begins reaping children (SIGCHLD).
  void Start();
  // Starts the first `n` workers, then the zygote (now if n is 0).
  void Prestart(int n);
  // Periodic: starts the zygote a second after Prestart at the latest.
  void Tick(std::chrono::steady_clock::time_point now);
  // Kills every worker and waits for those that are its children; stops the zygote.
  void Stop();
  // Starts `n` workers; a spawn that fails counts as a start failure.
  void StartWorkers(int n);
  // Starts the zygote once the prestarted workers are up (or `force`).
  void MaybeStartZygote(bool force);
  void KillWorker(const std::string& worker_id);
  // Labels that worker's output ("(Counter pid=N) ...").
  void SetLabel(const std::string& worker_id, const std::string& label);
  // A worker connected: workers start fine again.
  void OnRegistered() { consecutive_start_failures_ = 0; }
  // A worker ended before connecting; records why. True if workers now
  // count as failing to start (see failing()).
  bool OnStartFailure(const std::string& worker_id, int pid, const std::string& why);
  bool failing() const { return consecutive_start_failures_ >= options_.start_failures_before_error; }
  const std::string& last_start_failure() const { return last_start_failure_; }
  int zygote_pid() const { return zygote_ && zygote_->ready() ? zygote_->pid() : 0; }

  // Answers with why that worker ended, once it has (at most 2 s later);
  // "unknown" at once for workers that were never this node's.
  void HandleGetWorkerExit(ClientSession& s, uint64_t request_id, const rpc::GetWorkerExit& m);

 private:
  struct WorkerIo;
  struct ExitInfo {
    std::string reason;
    std::vector<std::string> last_lines;
  };
  struct ExitWaiter {
    std::weak_ptr<rpc::Connection> conn;
    uint64_t request_id;
  };
  void OnSigchld();
  // A worker (or the zygote) ended with `status` (from waitpid).
  void OnProcessExit(int pid, int status);
  void ReadOutput(std::shared_ptr<WorkerIo> io, bool is_stderr);
  // Records why a worker ended once it has exited and its stderr is drained,
  // and answers the GetWorkerExit requests waiting for it.
  void MaybeFinalizeExit(const std::shared_ptr<WorkerIo>& wio);
  void AnswerExit(const rpc::ConnectionPtr& conn, uint64_t request_id, const std::string& worker_id);

  asio::io_context& io_;
  const WorkerSupervisorOptions options_;
  WorkerPool& pool_;
  const Hooks hooks_;
  asio::signal_set sigchld_;
  std::chrono::steady_clock::time_point started_at_;
  bool stopped_ = false;
  std::unique_ptr<Zygote> zygote_;
  bool zygote_started_ = false;
  std::map<std::string, std::shared_ptr<WorkerIo>> worker_io_;  // by worker id, until its exit is recorded
  std::map<std::string, ExitInfo> exited_;                      // by worker id, the last 256
  std::deque<std::string> exited_order_;
  std::map<std::string, std::vector<ExitWaiter>> exit_waiters_;  // by worker id
  int consecutive_start_failures_ = 0;
  std::string last_start_failure_;
};

}  // namespace fleet::node
