// WorkerPool: the bookkeeping of a node's worker processes, without I/O.
//
// A worker is Starting (spawned, not yet connected), Idle or Leased. The pool
// decides how many to start (at most `max_starting` at once) and which idle
// ones to reap: only idle workers beyond `soft_limit` alive workers (not
// counting those dedicated to an actor), idle for at least `idle_timeout_ms`. Process spawning and killing are done by the
// caller from the pool's answers. Not thread-safe (fleet-node's io thread).
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fleet::node {

enum class WorkerState { kStarting, kIdle, kLeased };

struct WorkerInfo {
  std::string id;  // binary worker id
  int pid = 0;
  WorkerState state = WorkerState::kStarting;
  bool dedicated = false;  // hosts an actor: leased for its life, never idle again
  std::string address;
  std::chrono::steady_clock::time_point idle_since;
  // The GPU ids of its first lease ("-": none), "" before it. A process's
  // CUDA_VISIBLE_DEVICES cannot change once CUDA is initialized, so a worker
  // only ever serves leases with the same GPU assignment.
  std::string gpu_key;
};

// The pool key of a lease's GPU ids: "-" for none, else "0,1".
std::string GpuKey(const std::vector<int>& gpu_ids);

class WorkerPool {
 public:
  using Clock = std::chrono::steady_clock;
  WorkerPool(int soft_limit, int max_starting, int idle_timeout_ms)
      : soft_limit_(soft_limit), max_starting_(max_starting), idle_timeout_ms_(idle_timeout_ms) {}

  void AddStarting(const std::string& id, int pid);
  // A starting worker connected. Returns false for an unknown id.
  bool OnRegistered(const std::string& id, const std::string& address, Clock::time_point now);
  // Removes the worker (exited/killed); returns its info if it was known.
  std::optional<WorkerInfo> Remove(const std::string& id);
  std::optional<std::string> IdOfPid(int pid) const;

  // Takes an idle worker for a lease with these GPUs (GpuKey), most recently
  // idle first (warm caches): one that served this GPU assignment before, or
  // a fresh one (which is then keyed to it). Marks it leased.
  std::optional<WorkerInfo> PopIdle(const std::string& gpu_key = "-");
  void PushIdle(const std::string& id, Clock::time_point now);
  // The leased worker now hosts an actor (it does not count toward soft_limit).
  void MarkDedicated(const std::string& id);

  // How many more to start so that `wanted` leases could be served.
  int NumToStart(int wanted) const;
  // Idle workers to ask to exit now.
  std::vector<WorkerInfo> ReapCandidates(Clock::time_point now) const;

  const WorkerInfo* Find(const std::string& id) const;
  int num_starting() const { return num_starting_; }
  int num_idle() const { return static_cast<int>(idle_.size()); }
  int size() const { return static_cast<int>(workers_.size()); }
  std::vector<int> Pids() const;

 private:
  const int soft_limit_;
  const int max_starting_;
  const int idle_timeout_ms_;
  std::map<std::string, WorkerInfo> workers_;
  std::deque<std::string> idle_;  // back = most recently idle
  int num_starting_ = 0;
  int num_dedicated_ = 0;
};

}  // namespace fleet::node
