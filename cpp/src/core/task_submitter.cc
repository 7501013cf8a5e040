// TaskSubmitter implementation; see task_submitter.h.
#include "core/task_submitter.h"
#include <algorithm>
#include <asio/post.hpp>
#include <cstdlib>
#include <sstream>

#include "common/ids.h"
#include "common/logging.h"
#include "common/scheduling_strategy.h"
#include "core/dependency_resolver.h"
#include "core/object_flags.h"

namespace fleet {

struct TaskSubmitter::Task {
  rpc::Envelope push;  // body = push_task; reused across attempts
  std::vector<std::string> return_ids;
  std::vector<std::string> dep_ids;
  std::vector<std::string> held_ids;
  int max_retries = 0;
  int retries_left = 0;
  bool cancelled = false;      // fleet.cancel: never retried; fails as TaskCancelledError
  bool force = false;          // ... with force=True: its worker was killed
  bool finished = false;       // FinishTask ran
  bool free_retry = false;     // its worker was killed to force-cancel another task
  std::weak_ptr<Lease> lease;  // where it runs, once pushed
  std::string key;
  const rpc::TaskSpec& spec() const { return push.push_task().spec(); }
  rpc::TaskSpec* mutable_spec() { return push.mutable_push_task()->mutable_spec(); }
};

struct TaskSubmitter::Lease {
  std::string key;
  std::string worker_id;
  int worker_pid = 0;
  std::vector<int> gpu_ids;
  rpc::ConnectionPtr conn;
  rpc::ConnectionPtr node;  // the fleet-node that granted it (local, or after spillback)
  std::string node_id;
  std::unordered_map<std::string, TaskPtr> in_flight;  // by task id
  std::chrono::steady_clock::time_point idle_since;
  bool dead = false;
};

struct TaskSubmitter::KeyState {
  std::deque<TaskPtr> queue;
  // Moving average of how long this key's tasks run (us); < 0 until known.
  // Only tasks known to be short are pipelined several deep on one worker:
  // a long task queued behind another would lose parallelism.
  double avg_exec_us = -1;
  std::vector<LeasePtr> leases;
  int pending_lease_requests = 0;
  bool cancel_sent = false;
  std::map<std::string, double> resources;
  std::string description;
  SchedulingStrategy strategy = SchedulingStrategy::kDefault;  // TaskSpec's scheduling_strategy
  // SPREAD: tasks pushed per node, so each task goes to the node with the
  // fewest (leases are reused, so spreading the leases alone is not enough).
  std::map<std::string, uint64_t> spread_counts;
  // Lease requests spilled to a node and not answered yet, by node: for
  // SPREAD such a node counts as taking part (its tasks wait for its lease).
  std::map<std::string, int> spread_pending;
  std::string affinity_node_id;
  bool affinity_soft = false;
  std::map<std::string, std::string> label_selector;  // TaskSpec's, passed on to the node
};

struct TaskSubmitter::Outbox {
  std::vector<std::pair<LeasePtr, TaskPtr>> pushes;
  std::vector<std::string> lease_requests;
  std::vector<std::string> cancels;
  std::vector<TaskPtr> enqueue_failed;
};

void StoreReturns(MemoryStore& store, const std::vector<std::string>& return_ids,
                  rpc::PushTaskReply* reply, const char* what, const std::string& self) {
  int n = std::min<int>(reply->returns_size(), static_cast<int>(return_ids.size()));
  for (int i = 0; i < n; ++i) {
    auto* ret = reply->mutable_returns(i);
    store.Complete(return_ids[i], std::move(*ret->mutable_data()), ret->flags());
    AdoptNestedRefs(store, return_ids[i], *ret, self);
  }
  for (size_t i = n; i < return_ids.size(); ++i) {
    store.Complete(return_ids[i], std::string(what) + " returned fewer values than num_returns",
                   kFlagSystemError);
  }
}

void SendCancelTask(const rpc::ConnectionPtr& conn, const std::string& task_id, bool recursive) {
  rpc::Envelope m;
  m.mutable_cancel_task()->set_task_id(task_id);
  m.mutable_cancel_task()->set_recursive(recursive);
  conn->Send(m);
}

std::string TaskSubmitter::EncodeResources(const std::map<std::string, double>& resources) {
  std::ostringstream os;
  os.precision(17);
  bool first = true;
  for (auto& [k, v] : resources) {
    if (!first) os << ';';
    first = false;
    os << k << '=' << v;
  }
  return os.str();
}

std::map<std::string, double> TaskSubmitter::DecodeResources(const std::string& text) {
  std::map<std::string, double> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(';', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    size_t eq = item.rfind('=');
    if (eq != std::string::npos) out[item.substr(0, eq)] = std::strtod(item.c_str() + eq + 1, nullptr);
    start = end + 1;
  }
  return out;
}

std::string TaskSubmitter::SchedulingKey(const rpc::TaskSpec& spec) {
  // Per function too (as Ray's scheduling class): how deep to pipeline is
  // learned from the function's run times.
  std::string key = spec.resources() + "|" + spec.function_key();
  if (!spec.scheduling_strategy().empty()) {
    key += "|" + spec.scheduling_strategy() + ":" + spec.affinity_node_id() +
           (spec.affinity_soft() ? ":soft" : "");
  }
  if (!spec.label_selector().empty()) {
    std::map<std::string, std::string> sorted(spec.label_selector().begin(),
                                              spec.label_selector().end());
    key += "|labels";
    for (auto& [k, v] : sorted) key += ":" + k + "=" + v;
  }
  return key;
}

TaskSubmitter::TaskSubmitter(asio::io_context& io, MemoryStore& store, rpc::ConnectionPtr node,
                             rpc::Hello hello, SubmitterOptions options,
                             rpc::Connection::MessageHandler on_node_message)
    : io_(io), store_(store), node_(std::move(node)), hello_(std::move(hello)),
      on_node_message_(std::move(on_node_message)), options_(options), linger_timer_(io) {}

TaskSubmitter::~TaskSubmitter() = default;

std::vector<std::string> TaskSubmitter::Submit(TaskSubmission&& submission) {
  auto task = std::make_shared<Task>();
  *task->mutable_spec() = std::move(submission.spec);
  rpc::TaskSpec* spec = task->mutable_spec();
  task->max_retries = submission.max_retries;
  task->retries_left = submission.max_retries;
  task->key = submission.scheduling_key.empty() ? SchedulingKey(*spec)
                                                : std::move(submission.scheduling_key);
  task->dep_ids = std::move(submission.dep_ids);
  task->held_ids = std::move(submission.held_ids);
  int n = spec->num_returns();
  task->return_ids.reserve(n);
  for (int i = 1; i <= n; ++i) {
    task->return_ids.push_back(ReturnObjectId(spec->task_id(), static_cast<uint32_t>(i)));
    store_.CreatePending(task->return_ids.back(), /*local_refs=*/1);  // taken over by the ObjectRef
  }
  {
    MutexLock lk(&mu_);
    num_pending_++;
    tasks_by_id_[spec->task_id()] = task;
  }
  for (const auto& id : task->dep_ids) store_.AddSubmittedRef(id);
  for (const auto& id : task->held_ids) store_.AddSubmittedRef(id);
  std::vector<std::string> result = task->return_ids;
  // Ready arguments are inlined now, others as they arrive (owned: when
  // their task finishes; borrowed: when fetched from the owner).
  ResolveDependencies(store_, spec, task->dep_ids, task, [this, task](const StoredObject* failure) {
    if (failure) {
      // A failed dependency fails its dependents with the original error.
      for (const auto& id : task->return_ids) store_.Complete(id, failure->data, failure->flags);
      FinishTask(task);
    } else {
      Enqueue(task);
    }
  });
  return result;
}

void TaskSubmitter::Enqueue(const TaskPtr& task) {
  Outbox out;
  {
    MutexLock lk(&mu_);
    if (shutdown_ || task->cancelled) {
      out.enqueue_failed.push_back(task);
    } else {
      auto& ks = keys_[task->key];
      if (!ks) {
        ks = std::make_unique<KeyState>();
        ks->resources = DecodeResources(task->spec().resources());
        ks->description = task->spec().function_name();
        ks->strategy = ParseSchedulingStrategy(task->spec().scheduling_strategy());
        ks->affinity_node_id = task->spec().affinity_node_id();
        ks->affinity_soft = task->spec().affinity_soft();
        ks->label_selector = {task->spec().label_selector().begin(),
                              task->spec().label_selector().end()};
      }
      ks->queue.push_back(task);
      ks->cancel_sent = false;
      DispatchLocked(task->key, out);
    }
  }
  for (auto& t : out.enqueue_failed) {
    if (t->cancelled) {
      FailTask(t, kFlagTaskCancelled, CancelledMessage(*t));
    } else {
      FailTask(t, kFlagSystemError, "fleet is shutting down; task " + t->spec().function_name() +
                                        " was not run");
    }
  }
  Flush(out);
}

void TaskSubmitter::DispatchLocked(const std::string& key, Outbox& out) {
  auto kit = keys_.find(key);
  if (kit == keys_.end()) return;
  KeyState& ks = *kit->second;
  while (!ks.queue.empty()) {
    Lease* best = nullptr;
    LeasePtr best_ptr;
    // Queue about `pipeline_budget_us` of work per worker: deep for tiny
    // tasks, one at a time for long (or not yet measured) ones.
    int depth = 1;
    if (ks.avg_exec_us >= 0) {
      double fit = options_.pipeline_budget_us / std::max(ks.avg_exec_us, 1.0);
      depth = static_cast<int>(std::clamp(fit, 1.0, double(options_.max_tasks_in_flight_per_worker)));
    }
    // A submitting (non-io) thread only starts idle leases. Busy ones are
    // topped up by the io thread when their replies arrive, so the pushes go
    // out together with the other sends of that read (one write per worker)
    // instead of one write and one wake-up per submitted task.
    if (!io_.get_executor().running_in_this_thread()) depth = 1;
    // A worker that exits after max_calls must not have tasks queued behind.
    if (ks.queue.front()->spec().max_calls() > 0) depth = 1;
    bool spread = ks.strategy == SchedulingStrategy::kSpread;
    // SPREAD: no node runs more than a window ahead of the one with the
    // fewest tasks (among nodes we hold leases on): a busy node's tasks wait
    // for it rather than piling onto the fastest one.
    // Counts are per node (as Ray's SPREAD: nodes, not workers, share the
    // work); a node whose first lease arrives late starts at the minimum.
    double spread_limit = 1e300;
    auto score = [&](const std::string& node) { return static_cast<double>(ks.spread_counts[node]); };
    if (spread) {
      uint64_t low = UINT64_MAX;
      for (auto& [node, count] : ks.spread_counts) low = std::min(low, count);
      std::vector<std::string> taking_part;
      for (auto& l : ks.leases) {
        if (!l->dead) taking_part.push_back(l->node_id);
      }
      for (auto& [node, n] : ks.spread_pending) taking_part.push_back(node);
      for (auto& node : taking_part) {
        if (!ks.spread_counts.count(node)) ks.spread_counts[node] = low == UINT64_MAX ? 0 : low;
        spread_limit = std::min(spread_limit, score(node) + 64);
      }
    }
    for (auto& l : ks.leases) {
      if (l->dead) continue;
      if (static_cast<int>(l->in_flight.size()) >= depth) continue;
      if (spread && score(l->node_id) >= spread_limit) continue;
      bool better = !best || l->in_flight.size() < best->in_flight.size();
      if (spread && best) {
        double mine = score(l->node_id), theirs = score(best->node_id);
        better = mine != theirs ? mine < theirs : better;
      }
      if (better) {
        best = l.get();
        best_ptr = l;
      }
    }
    if (!best) break;
    TaskPtr task = ks.queue.front();
    ks.queue.pop_front();
    rpc::TaskSpec* spec = task->mutable_spec();
    spec->clear_gpu_ids();
    for (int g : best->gpu_ids) spec->add_gpu_ids(g);
    best->in_flight.emplace(spec->task_id(), task);
    if (spread) ks.spread_counts[best->node_id]++;
    task->lease = best_ptr;
    out.pushes.emplace_back(best_ptr, task);
  }
  if (!ks.queue.empty()) {
    int want = std::min<int>(static_cast<int>(ks.queue.size()), options_.max_pending_lease_requests) -
               ks.pending_lease_requests;
    for (int i = 0; i < want; ++i) {
      out.lease_requests.push_back(key);
      ks.pending_lease_requests++;
    }
  } else if (ks.pending_lease_requests > 0 && !ks.cancel_sent) {
    ks.cancel_sent = true;
    out.cancels.push_back(key);
  }
}

void TaskSubmitter::Flush(Outbox& out) {
  for (auto& [lease, task] : out.pushes) {
    LeasePtr l = lease;
    TaskPtr t = task;
    lease->conn->Call(task->push, [this, l, t](const Status& s, rpc::Envelope& reply) {
      OnTaskReply(l, t, s, reply);
    });
  }
  for (auto& key : out.lease_requests) RequestLease(key, node_, false);
  for (auto& key : out.cancels) {
    rpc::Envelope req;
    req.mutable_cancel_lease_requests()->set_scheduling_key(key);
    node_->Send(req);
    std::vector<rpc::ConnectionPtr> remotes;
    {
      MutexLock lk(&mu_);
      for (auto& [addr, c] : remote_nodes_) remotes.push_back(c);
    }
    for (auto& c : remotes) c->Send(req);
  }
}

void TaskSubmitter::RequestLease(const std::string& key, const rpc::ConnectionPtr& node,
                                 bool spilled, const std::string& target_node_id) {
  rpc::Envelope req;
  auto* r = req.mutable_request_lease();
  {
    MutexLock lk(&mu_);
    auto& ks = *keys_[key];
    if (!target_node_id.empty()) ks.spread_pending[target_node_id]++;
    for (auto& [k, v] : ks.resources) (*r->mutable_resources())[k] = v;
    r->set_description(ks.description);
    r->set_strategy(SchedulingStrategyName(ks.strategy));
    r->set_affinity_node_id(ks.affinity_node_id);
    r->set_affinity_soft(ks.affinity_soft);
    for (auto& [k, v] : ks.label_selector) (*r->mutable_label_selector())[k] = v;
  }
  r->set_scheduling_key(key);
  r->set_spilled(spilled);
  node->Call(req, [this, key, node, target_node_id](const Status& s, rpc::Envelope& reply) {
    if (!target_node_id.empty()) {
      MutexLock lk(&mu_);
      auto& pending = keys_[key]->spread_pending;
      if (--pending[target_node_id] <= 0) pending.erase(target_node_id);
    }
    OnLeaseReply(key, node, s, reply);
  });
}

Result<rpc::ConnectionPtr> TaskSubmitter::RemoteNode(const std::string& address) {
  {
    MutexLock lk(&mu_);
    auto it = remote_nodes_.find(address);
    if (it != remote_nodes_.end() && !it->second->closed()) return it->second;
  }
  auto c = rpc::Connect(io_, address, hello_);
  if (!c.ok()) return c.status();
  c.value()->Start(on_node_message_, nullptr);
  MutexLock lk(&mu_);
  remote_nodes_[address] = c.value();
  return c.value();
}

void TaskSubmitter::OnLeaseReply(const std::string& key, const rpc::ConnectionPtr& node,
                                 const Status& s, rpc::Envelope& reply) {
  // io thread
  const auto& granted = reply.lease_granted();
  if (s.ok() && granted.worker_id().empty() && !granted.spillback_address().empty()) {
    // Spillback: the local node sends us to a node that can run it.
    auto remote = RemoteNode(granted.spillback_address());
    if (remote.ok()) {
      bool go;
      {
        MutexLock lk(&mu_);
        go = !shutdown_;
      }
      if (go) return RequestLease(key, remote.value(), true, granted.spillback_node_id());
    } else {
      FLEET_LOG(WARNING) << "cannot reach node " << granted.spillback_address()
                         << " for a spilled lease request: " << remote.status().message()
                         << "; asking the local node again";
      // Placed again (not `spilled`): the local node's view will have lost
      // that node by then, and a hard affinity to it must fail.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
      timer->async_wait([this, timer, key](const asio::error_code& ec) {
        if (!ec) RequestLease(key, node_, false);
      });
      return;
    }
  }
  if (!s.ok() && node != node_) {
    // The remote node died (or went away) before granting: ask the local
    // node again, which knows the cluster's state.
    bool go;
    {
      MutexLock lk(&mu_);
      go = !shutdown_;
    }
    if (go) return RequestLease(key, node_, false);
  }
  Outbox out;
  std::vector<TaskPtr> to_fail;
  std::string fail_message;
  LeasePtr lease;
  rpc::Envelope ret;  // a lease to give back at once, if it has a worker id
  {
    MutexLock lk(&mu_);
    auto& ks = *keys_[key];
    ks.pending_lease_requests--;
    if (!s.ok() || !granted.error().empty()) {
      if (!shutdown_) {
        fail_message = s.ok() ? "cannot be scheduled: " + granted.error()
                              : "could not lease a worker from the local fleet-node: " + s.message();
        to_fail.assign(ks.queue.begin(), ks.queue.end());
        ks.queue.clear();
      }
    } else if (reply.lease_granted().worker_id().empty()) {
      // Canceled: nothing queued for this key any more (or asked again below).
      DispatchLocked(key, out);
    } else if (shutdown_) {
      ret.mutable_return_lease()->set_worker_id(reply.lease_granted().worker_id());
    } else {
      const auto& g = reply.lease_granted();
      lease = std::make_shared<Lease>();
      lease->node = node;
      lease->node_id = g.node_id();
      lease->key = key;
      lease->worker_id = g.worker_id();
      lease->worker_pid = g.worker_pid();
      lease->gpu_ids.assign(g.gpu_ids().begin(), g.gpu_ids().end());
      lease->idle_since = std::chrono::steady_clock::now();
    }
  }
  if (lease) {
    const auto& g = reply.lease_granted();
    auto conn = rpc::Connect(io_, g.worker_address(), hello_);
    MutexLock lk(&mu_);
    if (!conn.ok()) {
      FLEET_LOG(WARNING) << "cannot reach leased worker " << g.worker_address() << ": "
                         << conn.status().message();
      ret.mutable_return_lease()->set_worker_id(lease->worker_id);
      ret.mutable_return_lease()->set_worker_failed(true);
      DispatchLocked(key, out);
    } else {
      lease->conn = conn.value();
      std::weak_ptr<Lease> weak = lease;
      auto on_message = [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
        if (m.has_generator_item()) {  // a streaming generator's item
          auto* g = m.mutable_generator_item();
          if (g->wants_consumed() && backpressure_) backpressure_->OnItem(c, g->task_id());
          store_.PutOrComplete(GeneratorItemId(g->task_id(), g->index()),
                               std::move(*g->mutable_data()), g->flags());
                AdoptNestedRefs(store_, GeneratorItemId(g->task_id(), g->index()), *g,
                                hello_.address());
        }
      };
      lease->conn->Start(on_message, [this, weak](const rpc::ConnectionPtr&, const Status&) {
        auto l = weak.lock();
        if (!l) return;
        {
          MutexLock lk2(&mu_);
          if (l->dead) return;
          l->dead = true;
          auto& ks2 = *keys_[l->key];
          std::erase(ks2.leases, l);
        }
        rpc::Envelope ret;
        ret.mutable_return_lease()->set_worker_id(l->worker_id);
        ret.mutable_return_lease()->set_worker_failed(true);
        l->node->Send(ret);
      });
      keys_[key]->leases.push_back(lease);
      DispatchLocked(key, out);
      if (keys_[key]->queue.empty() && lease->in_flight.empty()) ArmLingerTimer();
    }
  }
  if (ret.has_return_lease()) node->Send(ret);  // `node` granted it (lease->node)
  for (auto& t : to_fail) FailTask(t, kFlagSystemError, "Task " + t->spec().function_name() + " " + fail_message);
  Flush(out);
}

void TaskSubmitter::OnTaskReply(const LeasePtr& lease, const TaskPtr& task, const Status& s,
                                rpc::Envelope& reply) {
  bool retry = false;
  bool crashed = false;
  bool cancelled = false;
  bool lease_lost = false;
  {
    MutexLock lk(&mu_);
    lease->in_flight.erase(task->spec().task_id());
    bool exiting = s.ok() && reply.push_task_reply().worker_exiting();
    if ((!s.ok() || exiting) && !lease->dead) {
      // The worker is gone: forget the lease before retrying, so the retry
      // cannot be pushed to the same dead connection and burn an attempt.
      lease->dead = true;
      lease_lost = true;
      auto kit = keys_.find(lease->key);
      if (kit != keys_.end()) std::erase(kit->second->leases, lease);
    }
    if (s.ok()) {
      auto kit = keys_.find(lease->key);
      if (kit != keys_.end()) {
        double us = static_cast<double>(reply.push_task_reply().exec_us());
        double& avg = kit->second->avg_exec_us;
        avg = avg < 0 ? us : 0.8 * avg + 0.2 * us;
      }
    }
    if (task->cancelled && (!s.ok() || reply.push_task_reply().retryable_error())) {
      cancelled = true;
    } else if (!s.ok() && task->free_retry && !shutdown_) {
      task->free_retry = false;
      retry = true;
    } else if (!s.ok() || reply.push_task_reply().retryable_error()) {
      if (task->retries_left > 0 && !shutdown_) {
        task->retries_left--;
        task->mutable_spec()->set_attempt(task->spec().attempt() + 1);
        retry = true;
      } else if (!s.ok()) {
        crashed = true;
      }
    }
    if (lease->in_flight.empty()) {
      lease->idle_since = std::chrono::steady_clock::now();
      ArmLingerTimer();
    }
  }
  if (lease_lost) {
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(lease->worker_id);
    ret.mutable_return_lease()->set_worker_failed(true);
    lease->node->Send(ret);
  }
  if (cancelled) {
    FailTask(task, kFlagTaskCancelled | (task->force ? kFlagWorkerCrashed : 0u),
             CancelledMessage(*task) + (task->force ? " Its worker was killed (force=True)." : ""));
  } else if (retry) {
    Enqueue(task);
  } else if (crashed) {
    // Ask fleet-node why the worker ended (exit code or signal, and the end
    // of its stderr) so the error explains itself.
    std::ostringstream os;
    os << "The worker (pid=" << lease->worker_pid << ") running task '"
       << task->spec().function_name() << "' died unexpectedly (" << s.message() << "). The task "
       << "was attempted " << task->spec().attempt() + 1 << " time(s) (max_retries="
       << task->max_retries << ").";
    std::string base = os.str();
    rpc::Envelope req;
    req.mutable_get_worker_exit()->set_worker_id(lease->worker_id);
    lease->node->Call(req, [this, task, base](const Status& st, rpc::Envelope& info) {
      std::string message = base;
      const auto& r = info.get_worker_exit_reply();
      if (st.ok() && r.known()) {
        message += " The worker process " + r.reason() + ".";
        if (r.last_lines_size() > 0) {
          message += " Its last output on stderr:";
          for (const auto& l : r.last_lines()) message += "\n    " + l;
        }
      } else {
        message += " The worker's output is in the node's logs/ folder.";
      }
      FailTask(task, kFlagWorkerCrashed, message);
    });
  } else {
    StoreReturns(store_, task->return_ids, reply.mutable_push_task_reply(), "task",
                 hello_.address());
    FinishTask(task);
  }
  Outbox out;
  {
    MutexLock lk(&mu_);
    DispatchLocked(lease->key, out);
  }
  Flush(out);
}

void TaskSubmitter::FailTask(const TaskPtr& task, uint32_t flags, const std::string& message) {
  for (const auto& id : task->return_ids) store_.Complete(id, message, flags);
  FinishTask(task);
}

void TaskSubmitter::FinishTask(const TaskPtr& task) {
  {
    MutexLock lk(&mu_);
    if (task->finished) return;  // a cancelled task can be failed twice
    task->finished = true;
    num_pending_--;
    tasks_by_id_.erase(task->spec().task_id());
  }
  for (const auto& id : task->dep_ids) store_.RemoveSubmittedRef(id);
  for (const auto& id : task->held_ids) store_.RemoveSubmittedRef(id);
  // A dynamic generator's items: the return value (if it holds them) keeps
  // them from now on; those it does not (a failed or retried attempt's) go.
  if (task->spec().dynamic_returns()) store_.ReleaseGenerator(task->spec().task_id(), 0);
}

std::string TaskSubmitter::CancelledMessage(const Task& task) {
  return "Task " + task.spec().function_name() + " (id " + ToHex(task.spec().task_id()) +
         ") was cancelled by fleet.cancel().";
}

bool TaskSubmitter::Cancel(const std::string& task_id, bool force, bool recursive) {
  TaskPtr to_fail;
  LeasePtr to_kill;
  rpc::ConnectionPtr notify;
  {
    MutexLock lk(&mu_);
    auto it = tasks_by_id_.find(task_id);
    if (it == tasks_by_id_.end()) return false;
    TaskPtr task = it->second.lock();
    if (!task || task->cancelled) return task != nullptr;
    task->cancelled = true;
    auto kit = keys_.find(task->key);
    if (kit != keys_.end()) {
      auto& q = kit->second->queue;
      auto pos = std::find(q.begin(), q.end(), task);
      if (pos != q.end()) {
        q.erase(pos);
        to_fail = task;
      }
    }
    if (!to_fail) {
      LeasePtr lease = task->lease.lock();
      if (lease && !lease->dead && lease->in_flight.count(task_id)) {
        if (force) {
          // Kill the worker: its reply never comes, the task fails as cancelled.
          task->force = true;
          // Tasks pipelined behind it die with the worker: not their fault,
          // so their retry is free.
          for (auto& [other_id, other] : lease->in_flight) {
            if (other != task) other->free_retry = true;
          }
          lease->dead = true;
          if (kit != keys_.end()) std::erase(kit->second->leases, lease);
          to_kill = lease;
        } else {
          notify = lease->conn;
        }
      }
      if (!lease) to_fail = task;  // its arguments are still resolving: fail it now
    }
  }
  if (to_fail) FailTask(to_fail, kFlagTaskCancelled, CancelledMessage(*to_fail));
  if (to_kill) {
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(to_kill->worker_id);
    ret.mutable_return_lease()->set_worker_failed(true);
    to_kill->node->Send(ret);
  }
  if (notify) SendCancelTask(notify, task_id, recursive);
  return true;
}

void TaskSubmitter::CancelChildren(const std::string& parent_task_id, bool force) {
  std::vector<std::string> children;
  {
    MutexLock lk(&mu_);
    for (auto& [id, weak] : tasks_by_id_) {
      auto t = weak.lock();
      if (t && !t->cancelled && t->spec().parent_task_id() == parent_task_id) children.push_back(id);
    }
  }
  for (auto& id : children) Cancel(id, force, /*recursive=*/true);
}

void TaskSubmitter::ArmLingerTimer() {
  if (linger_armed_ || shutdown_) return;
  linger_armed_ = true;
  asio::post(io_, [this] {
    linger_timer_.expires_after(std::chrono::milliseconds(options_.lease_linger_ms));
    linger_timer_.async_wait([this](const asio::error_code& ec) {
      if (ec) return;
      ReturnIdleLeases();
    });
  });
}

void TaskSubmitter::ReturnIdleLeases() {
  std::vector<LeasePtr> to_return;
  {
    MutexLock lk(&mu_);
    linger_armed_ = false;
    auto now = std::chrono::steady_clock::now();
    auto linger = std::chrono::milliseconds(options_.lease_linger_ms);
    bool more = false;
    for (auto& [key, ks] : keys_) {
      for (auto it = ks->leases.begin(); it != ks->leases.end();) {
        auto& l = *it;
        if (l->in_flight.empty() && ks->queue.empty()) {
          if (now - l->idle_since >= linger) {
            l->dead = true;
            to_return.push_back(l);
            it = ks->leases.erase(it);
            continue;
          }
          more = true;
        }
        ++it;
      }
    }
    if (more) ArmLingerTimer();
  }
  for (auto& l : to_return) {
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(l->worker_id);
    l->node->Send(ret);
    l->conn->Close();
  }
}

void TaskSubmitter::Shutdown() {
  std::vector<TaskPtr> queued;
  std::vector<LeasePtr> leases;
  {
    MutexLock lk(&mu_);
    shutdown_ = true;
    for (auto& [key, ks] : keys_) {
      queued.insert(queued.end(), ks->queue.begin(), ks->queue.end());
      ks->queue.clear();
      for (auto& l : ks->leases) {
        l->dead = true;
        leases.push_back(l);
      }
      ks->leases.clear();
    }
  }
  for (auto& t : queued) FailTask(t, kFlagSystemError, "fleet was shut down before the task ran");
  for (auto& l : leases) {
    rpc::Envelope ret;
    ret.mutable_return_lease()->set_worker_id(l->worker_id);
    l->node->Send(ret);
    l->conn->Close();
  }
}

size_t TaskSubmitter::NumPendingTasks() const {
  MutexLock lk(&mu_);
  return num_pending_;
}

}  // namespace fleet
