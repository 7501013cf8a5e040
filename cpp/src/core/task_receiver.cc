// TaskReceiver implementation; see task_receiver.h.
#include "core/task_receiver.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <asio/post.hpp>

#include "common/ids.h"
#include "core/object_flags.h"

namespace fleet {

TaskReceiver::TaskReceiver(asio::io_context& io, FreeStoredFn free_stored,
                           CancelChildrenFn cancel_children)
    : io_(io),
      free_stored_(std::move(free_stored)),
      cancel_children_(std::move(cancel_children)),
      hold_timer_(std::make_unique<asio::steady_timer>(io)) {}

void TaskReceiver::RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener,
                                    rpc::Dispatcher<const rpc::ConnectionPtr>& node) {
  using rpc::PeerRole;
  using rpc::RoleBit;
  FLEET_RPC_HANDLE(listener, PushTask, push_task, HandlePushTask,
                   RoleBit(PeerRole::kSubmitter) | RoleBit(PeerRole::kGcs));
  FLEET_RPC_HANDLE(listener, CancelTask, cancel_task, HandleCancelTask,
                   RoleBit(PeerRole::kSubmitter));
  FLEET_RPC_HANDLE(node, ExitWorker, exit_worker, HandleExitWorker, RoleBit(PeerRole::kNode));
}

void TaskReceiver::HandleExitWorker(const rpc::ConnectionPtr&, uint64_t, rpc::ExitWorker&) {
  SetExiting();
}

void TaskReceiver::HandlePushTask(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                  rpc::PushTask& m) {
  MutexLock lk(&mu_);
  uint64_t handle = next_handle_++;
  ExecutableTask t;
  t.handle = handle;
  t.spec = std::move(*m.mutable_spec());
  executing_[handle] =
      Pending{conn, request_id, {}, t.spec.task_id(), t.spec.owner_address(), {}, {}, {}};
  if (!early_cancels_.empty()) {
    auto c = std::find(early_cancels_.begin(), early_cancels_.end(), t.spec.task_id());
    if (c != early_cancels_.end()) {
      early_cancels_.erase(c);
      rpc::TaskSpec spec = std::move(t.spec);
      lk.Unlock();
      ReplyCancelled(handle, spec);
      return;
    }
  }
  queue_.push_back(std::move(t));
  cv_.NotifyOne();
  SignalTaskEventLocked();
}

void TaskReceiver::ReplyCancelled(uint64_t handle, const rpc::TaskSpec& spec) {
  std::vector<std::pair<std::string, uint32_t>> returns;
  std::string text = "Task " + spec.function_name() + " (id " + ToHex(spec.task_id()) +
                     ") was cancelled by fleet.cancel() before it started.";
  for (int i = 0; i < std::max(1, spec.num_returns()); ++i) {
    returns.emplace_back(text, kFlagTaskCancelled);
  }
  FinishTask(handle, std::move(returns), false, false);
}

void TaskReceiver::HandleCancelTask(const rpc::ConnectionPtr&, uint64_t, rpc::CancelTask& m) {
  const std::string& task_id = m.task_id();
  std::optional<ExecutableTask> dropped;
  {
    MutexLock lk(&mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->handle != 0 && it->spec.task_id() == task_id) {
        dropped = std::move(*it);
        queue_.erase(it);
        break;
      }
    }
    bool running_here = false;
    for (const auto& e : executing_) {
      if (e.second.task_id == task_id) {
        running_here = true;
        break;
      }
    }
    if (!dropped && !running_here) {
      // Not here yet (the cancel overtook the push) or already done:
      // remember it, so a push that comes later is answered as cancelled.
      early_cancels_.push_back(task_id);
      if (early_cancels_.size() > 256) early_cancels_.pop_front();
    } else if (!dropped) {
      if (concurrent_) {
        // Running on a pool thread or the event loop: the Python loop cancels it.
        ExecutableTask notice;
        notice.handle = 0;
        notice.spec.set_task_id(task_id);
        queue_.push_front(std::move(notice));
        cv_.NotifyOne();
        SignalTaskEventLocked();
      } else if (in_task_ && current_task_id_ == task_id) {
        // Running on the main thread. A task gets KeyboardInterrupt there;
        // an actor call is not interrupted (the actor has state), it only
        // sees the flag (get_runtime_context().is_canceled()).
        cancel_requested_ = task_id;
        if (!current_is_actor_call_) pthread_kill(main_thread_, SIGINT);
      }
    }
  }
  if (dropped) ReplyCancelled(dropped->handle, dropped->spec);
  if (m.recursive() && cancel_children_) cancel_children_(task_id);
}

bool TaskReceiver::TakeCancelRequest(const std::string& task_id, bool keep) {
  MutexLock lk(&mu_);
  if (cancel_requested_.empty() || cancel_requested_ != task_id) return false;
  if (!keep) cancel_requested_.clear();
  return true;
}

void TaskReceiver::SetConcurrent(bool concurrent) {
  MutexLock lk(&mu_);
  concurrent_ = concurrent;
}

void TaskReceiver::SetExiting() {
  MutexLock lk(&mu_);
  exiting_ = true;
  cv_.NotifyAll();
  SignalTaskEventLocked();
}

void TaskReceiver::Shutdown() {
  FlushHeldReplies();  // replies held for batching must not be lost (actor exit)
  MutexLock lk(&mu_);
  exiting_ = true;
  cv_.NotifyAll();
}

void TaskReceiver::CancelTimer() { hold_timer_->cancel(); }

bool TaskReceiver::Lookup(uint64_t handle, std::string* task_id, std::string* caller) {
  MutexLock lk(&mu_);
  auto it = executing_.find(handle);
  if (it == executing_.end()) return false;
  if (task_id) *task_id = it->second.task_id;
  if (caller) *caller = it->second.owner_address;
  return true;
}

void TaskReceiver::RecordStored(uint64_t handle, uint32_t index, const std::string& id) {
  MutexLock lk(&mu_);
  if (auto it = executing_.find(handle); it != executing_.end()) it->second.stored[index] = id;
}

void TaskReceiver::AddNested(uint64_t handle, uint32_t index, bool generator_item,
                             const std::vector<std::pair<std::string, std::string>>& nested) {
  MutexLock lk(&mu_);
  auto it = executing_.find(handle);
  if (it == executing_.end()) return;
  auto& dst = generator_item ? it->second.item_nested[index] : it->second.nested[index];
  dst.insert(dst.end(), nested.begin(), nested.end());
}

std::string TaskReceiver::CurrentTaskId() {
  MutexLock lk(&mu_);
  return current_task_id_;
}

bool TaskReceiver::BlockingReleasesResources() {
  MutexLock lk(&mu_);
  return in_task_ && !current_is_actor_call_ && !concurrent_ &&
         pthread_equal(pthread_self(), main_thread_);
}

void TaskReceiver::SendGeneratorItem(uint64_t handle, int index, std::string data,
                                     uint32_t flags) {
  std::shared_ptr<rpc::Connection> conn;
  std::string task_id;
  std::vector<std::pair<std::string, std::string>> nested;
  {
    MutexLock lk(&mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return;
    conn = it->second.conn.lock();
    task_id = it->second.task_id;
    if (auto n = it->second.item_nested.find(static_cast<uint32_t>(index));
        n != it->second.item_nested.end()) {
      nested = std::move(n->second);
      it->second.item_nested.erase(n);
    }
  }
  if (!conn) return;
  rpc::Envelope m;
  auto* g = m.mutable_generator_item();
  for (auto& [id, owner] : nested) {
    g->add_nested_ids(id);
    g->add_nested_owners(owner);
  }
  g->set_task_id(task_id);
  g->set_index(index);
  g->set_data(std::move(data));
  g->set_flags(flags);
  conn->Send(m);
}

void TaskReceiver::FlushHeldReplies() {
  std::vector<std::shared_ptr<rpc::Connection>> held;
  {
    MutexLock lk(&mu_);
    held.swap(held_replies_);
    num_held_ = 0;
  }
  for (auto& c : held) c->Flush();
}

void TaskReceiver::SignalTaskEventLocked() {
  if (task_event_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = ::write(task_event_fd_, &one, sizeof(one));
  (void)n;  // a full counter still leaves the fd readable
}

int TaskReceiver::EnableTaskEvents() {
  MutexLock lk(&mu_);
  if (task_event_fd_ < 0) task_event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!queue_.empty() || exiting_) SignalTaskEventLocked();
  return task_event_fd_;
}

std::optional<ExecutableTask> TaskReceiver::TryNextTask() {
  MutexLock lk(&mu_);
  if (queue_.empty()) {
    if (!exiting_) return std::nullopt;
    ExecutableTask exit;
    exit.handle = UINT64_MAX;
    return exit;
  }
  ExecutableTask t = std::move(queue_.front());
  queue_.pop_front();
  if (t.handle != 0) {
    auto it = executing_.find(t.handle);
    if (it != executing_.end()) it->second.started = std::chrono::steady_clock::now();
  }
  return t;
}

std::optional<ExecutableTask> TaskReceiver::NextTask() {
  MutexLock lk(&mu_);
  in_task_ = false;
  current_task_id_.clear();
  main_thread_ = pthread_self();
  if (queue_.empty() && num_held_ > 0) {
    lk.Unlock();
    FlushHeldReplies();
    lk.Lock();
  }
  cv_.Wait(lk, [this]() REQUIRES(mu_) { return exiting_ || !queue_.empty(); });
  if (queue_.empty()) return std::nullopt;  // exiting with nothing queued
  ExecutableTask t = std::move(queue_.front());
  queue_.pop_front();
  if (t.handle == 0) return t;  // a cancel notice (concurrent execution)
  in_task_ = true;
  if (!concurrent_) current_task_id_ = t.spec.task_id();
  current_is_actor_call_ = t.spec.kind() != rpc::NORMAL_TASK;
  auto it = executing_.find(t.handle);
  if (it != executing_.end()) it->second.started = std::chrono::steady_clock::now();
  return t;
}

void TaskReceiver::FinishTask(uint64_t handle,
                              std::vector<std::pair<std::string, uint32_t>>&& returns,
                              bool retryable_error, bool worker_exiting) {
  Pending p;
  bool more_queued;
  {
    MutexLock lk(&mu_);
    auto it = executing_.find(handle);
    if (it == executing_.end()) return;
    p = std::move(it->second);
    executing_.erase(it);
    more_queued = !queue_.empty();
  }
  // Returns already written to the store but replaced by an error (a later
  // return failed): nobody will own them, so they go now.
  std::vector<std::string> orphaned;
  for (auto& [index, id] : p.stored) {
    if (index >= returns.size() || !(returns[index].second & kFlagInStore)) orphaned.push_back(id);
  }
  free_stored_(orphaned);
  auto conn = p.conn.lock();
  if (!conn) return;  // the submitter went away; nobody wants the result
  rpc::Envelope reply;
  auto* r = reply.mutable_push_task_reply();
  r->set_retryable_error(retryable_error);
  r->set_worker_exiting(worker_exiting);
  r->set_exec_us(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::steady_clock::now() - p.started)
                                            .count()));
  uint32_t index = 0;
  for (auto& [data, flags] : returns) {
    auto* o = r->add_returns();
    o->set_data(std::move(data));
    o->set_flags(flags);
    if (auto n = p.nested.find(index++); n != p.nested.end()) {
      for (auto& [id, owner] : n->second) {
        o->add_nested_ids(id);
        o->add_nested_owners(owner);
      }
    }
  }
  // Hold the reply back while more (short, pipelined) tasks wait here, so a
  // batch of replies costs one write and one wake-up of the submitter.
  constexpr size_t kMaxHeldReplies = 32;
  bool hold = false;
  bool arm_timer = false;
  // Queued before it is registered as held: a flush that runs in between
  // (the timer) then takes it along instead of leaving it stranded.
  conn->Reply(p.request_id, reply, /*flush=*/false);
  {
    MutexLock lk(&mu_);
    hold = more_queued && !worker_exiting && !concurrent_ && num_held_ < kMaxHeldReplies;
    if (hold) {
      num_held_++;
      if (std::find(held_replies_.begin(), held_replies_.end(), conn) == held_replies_.end()) {
        held_replies_.push_back(conn);
      }
      arm_timer = !hold_timer_armed_;
      hold_timer_armed_ = true;
    }
  }
  if (!hold) {
    conn->Flush();
    FlushHeldReplies();
  } else if (arm_timer) {
    asio::post(io_, [this] {
      hold_timer_->expires_after(std::chrono::milliseconds(1));
      hold_timer_->async_wait([this](const asio::error_code& ec) {
        {
          MutexLock lk(&mu_);
          hold_timer_armed_ = false;
        }
        if (!ec) FlushHeldReplies();
      });
    });
  }
}

}  // namespace fleet
