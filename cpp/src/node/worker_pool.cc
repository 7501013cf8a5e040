// WorkerPool implementation; see worker_pool.h.
#include "node/worker_pool.h"

#include <algorithm>

namespace fleet::node {

void WorkerPool::AddStarting(const std::string& id, int pid) {
  WorkerInfo w;
  w.id = id;
  w.pid = pid;
  workers_[id] = w;
  num_starting_++;
}

bool WorkerPool::OnRegistered(const std::string& id, const std::string& address,
                              Clock::time_point now) {
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.state != WorkerState::kStarting) return false;
  num_starting_--;
  it->second.address = address;
  it->second.state = WorkerState::kIdle;
  it->second.idle_since = now;
  idle_.push_back(id);
  return true;
}

std::optional<WorkerInfo> WorkerPool::Remove(const std::string& id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return std::nullopt;
  WorkerInfo w = it->second;
  if (w.state == WorkerState::kStarting) num_starting_--;
  if (w.dedicated) num_dedicated_--;
  if (w.state == WorkerState::kIdle) idle_.erase(std::remove(idle_.begin(), idle_.end(), id), idle_.end());
  workers_.erase(it);
  return w;
}

std::optional<std::string> WorkerPool::IdOfPid(int pid) const {
  for (auto& [id, w] : workers_)
    if (w.pid == pid) return id;
  return std::nullopt;
}

std::string GpuKey(const std::vector<int>& gpu_ids) {
  if (gpu_ids.empty()) return "-";
  std::string key;
  for (int id : gpu_ids) key += (key.empty() ? "" : ",") + std::to_string(id);
  return key;
}

std::optional<WorkerInfo> WorkerPool::PopIdle(const std::string& gpu_key) {
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    auto& w = workers_.at(*it);
    if (!w.gpu_key.empty() && w.gpu_key != gpu_key) continue;
    idle_.erase(std::next(it).base());
    w.state = WorkerState::kLeased;
    w.gpu_key = gpu_key;
    return w;
  }
  return std::nullopt;
}

void WorkerPool::PushIdle(const std::string& id, Clock::time_point now) {
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.state != WorkerState::kLeased) return;
  it->second.state = WorkerState::kIdle;
  it->second.idle_since = now;
  idle_.push_back(id);
}

int WorkerPool::NumToStart(int wanted) const {
  int need = wanted - num_starting_;
  int room = max_starting_ - num_starting_;
  return std::max(0, std::min(need, room));
}

std::vector<WorkerInfo> WorkerPool::ReapCandidates(Clock::time_point now) const {
  std::vector<WorkerInfo> out;
  int surplus = size() - num_dedicated_ - soft_limit_;
  // Oldest idle first.
  for (const auto& id : idle_) {
    if (surplus <= 0) break;
    const auto& w = workers_.at(id);
    if (now - w.idle_since >= std::chrono::milliseconds(idle_timeout_ms_)) {
      out.push_back(w);
      surplus--;
    }
  }
  return out;
}

void WorkerPool::MarkDedicated(const std::string& id) {
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.dedicated) return;
  it->second.dedicated = true;
  num_dedicated_++;
}

const WorkerInfo* WorkerPool::Find(const std::string& id) const {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<int> WorkerPool::Pids() const {
  std::vector<int> pids;
  for (auto& [id, w] : workers_) pids.push_back(w.pid);
  return pids;
}

}  // namespace fleet::node
