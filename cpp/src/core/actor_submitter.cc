// ActorSubmitter implementation; see actor_submitter.h.
#include "core/actor_submitter.h"

#include <algorithm>

#include "common/ids.h"
#include "common/logging.h"
#include "core/dependency_resolver.h"
#include "core/object_flags.h"

namespace fleet {

namespace {
constexpr int kRpcTimeoutMs = 60000;

const char* StateName(rpc::ActorInfo::State s) {
  switch (s) {
    case rpc::ActorInfo::PENDING:
      return "PENDING";
    case rpc::ActorInfo::ALIVE:
      return "ALIVE";
    case rpc::ActorInfo::RESTARTING:
      return "RESTARTING";
    case rpc::ActorInfo::DEAD:
      return "DEAD";
    default:
      return "UNKNOWN";
  }
}
}  // namespace

struct ActorSubmitter::Call {
  rpc::Envelope push;  // body = push_task; reused across attempts
  std::vector<std::string> return_ids;
  std::vector<std::string> dep_ids;
  std::vector<std::string> held_ids;  // refs nested in the arguments
  int max_retries = 0;
  int retries_left = 0;
  bool resolved = false;
  bool done = false;       // returns already set (failed argument, cancelled): skip it
  bool cancelled = false;
  uint64_t seq = 0;
  const rpc::TaskSpec& spec() const { return push.push_task().spec(); }
  rpc::TaskSpec* mutable_spec() { return push.mutable_push_task()->mutable_spec(); }
};

struct ActorSubmitter::Actor {
  std::string id;
  std::string class_name;
  rpc::ActorInfo::State state = rpc::ActorInfo::PENDING;
  bool subscribed = false;
  int incarnation = 0;  // restarts as last heard
  rpc::ConnectionPtr conn;
  std::deque<CallPtr> queue;             // not sent yet, in submission order
  std::map<uint64_t, CallPtr> in_flight; // sent, by sequence number
  uint64_t next_seq = 0;
  std::string death_reason;
  std::string death_error;
  std::vector<std::string> deferred_refs;  // handle refs released once no call is pending
};

ActorSubmitter::ActorSubmitter(asio::io_context& io, MemoryStore& store, GcsFn gcs, rpc::Hello hello)
    : io_(io), store_(store), gcs_(std::move(gcs)), hello_(std::move(hello)) {}

ActorSubmitter::~ActorSubmitter() = default;

ActorSubmitter::Actor& ActorSubmitter::ActorLocked(const std::string& actor_id) {
  auto& a = actors_[actor_id];
  if (!a) {
    a = std::make_unique<Actor>();
    a->id = actor_id;
  }
  return *a;
}

void ActorSubmitter::SubscribeLocked(Actor& a) {
  if (a.subscribed) return;
  auto gcs = gcs_();
  if (!gcs.ok()) {
    FLEET_LOG(WARNING) << "cannot subscribe to actor " << ToHex(a.id) << ": "
                       << gcs.status().message();
    return;
  }
  a.subscribed = true;
  rpc::Envelope m;
  m.mutable_subscribe_actor()->set_actor_id(a.id);
  gcs.value()->Send(m);
}

Result<RegisteredActor> ActorSubmitter::Register(const rpc::ActorInfo& info, bool get_if_exists) {
  auto gcs = gcs_();
  if (!gcs.ok()) return gcs.status();
  rpc::Envelope req;
  *req.mutable_register_actor()->mutable_info() = info;
  req.mutable_register_actor()->set_get_if_exists(get_if_exists);
  auto r = gcs.value()->CallSync(req, kRpcTimeoutMs);
  if (!r.ok()) return r.status();
  const auto& rep = r.value().register_actor_reply();
  if (!rep.error().empty()) return Status::Invalid(rep.error());
  RegisteredActor out;
  out.actor_id = rep.actor_id();
  out.existed = rep.existed();
  out.handle_meta = rep.handle_meta();
  MutexLock lk(&mu_);
  Actor& a = ActorLocked(out.actor_id);
  if (a.class_name.empty()) a.class_name = info.class_name();
  return out;
}

void ActorSubmitter::Create(TaskSubmission&& creation) {
  auto holder = std::make_shared<rpc::CreateActor>();
  *holder->mutable_spec() = std::move(creation.spec);
  auto deps = std::move(creation.dep_ids);
  for (const auto& id : deps) store_.AddSubmittedRef(id);
  ResolveDependencies(
      store_, holder->mutable_spec(), deps, holder,
      [this, holder, deps](const StoredObject*) {
        // Values in the object store travel as descriptors, read when the
        // actor starts (later, maybe after a restart): keep those objects
        // for the job's life.
        for (const auto& d : holder->spec().deps()) {
          if (d.flags() & kFlagInStore) store_.MarkEscaped(d.object_id());
        }
        // A failed argument travels inline like any value: the constructor
        // raises it, so the actor dies with that error as its cause.
        if (auto gcs = gcs_(); gcs.ok()) {
          rpc::Envelope m;
          *m.mutable_create_actor() = std::move(*holder);
          gcs.value()->Send(m);
        }
        // The values travel inline in the creation task; the refs can go.
        for (const auto& id : deps) store_.RemoveSubmittedRef(id);
      });
}

std::vector<std::string> ActorSubmitter::Submit(TaskSubmission&& submission, int max_task_retries) {
  auto call = std::make_shared<Call>();
  *call->mutable_spec() = std::move(submission.spec);
  rpc::TaskSpec* spec = call->mutable_spec();
  call->max_retries = max_task_retries;
  call->retries_left = max_task_retries;
  call->dep_ids = std::move(submission.dep_ids);
  call->held_ids = std::move(submission.held_ids);
  int n = spec->num_returns();
  call->return_ids.reserve(n);
  for (int i = 1; i <= n; ++i) {
    call->return_ids.push_back(ReturnObjectId(spec->task_id(), static_cast<uint32_t>(i)));
    store_.CreatePending(call->return_ids.back(), /*local_refs=*/1);
  }
  std::vector<std::string> result = call->return_ids;
  for (const auto& id : call->dep_ids) store_.AddSubmittedRef(id);
  for (const auto& id : call->held_ids) store_.AddSubmittedRef(id);
  std::string actor_id = spec->actor_id();
  bool dead = false;
  std::string dead_data;
  uint32_t dead_flags = 0;
  {
    MutexLock lk(&mu_);
    Actor& a = ActorLocked(actor_id);
    SubscribeLocked(a);
    if (a.state == rpc::ActorInfo::DEAD || shutdown_) {
      dead = true;
      if (shutdown_) {
        dead_flags = kFlagSystemError;
        dead_data = "fleet was shut down before the call was sent";
      } else if (!a.death_error.empty()) {
        dead_flags = kFlagActorDied | kFlagPickledError;
        dead_data = a.death_error;
      } else {
        dead_flags = kFlagActorDied;
        dead_data = DeathMessage(a, *call);
      }
    } else {
      call->seq = a.next_seq++;
      a.queue.push_back(call);
      calls_by_id_[spec->task_id()] = call;
    }
  }
  if (dead) {
    FailCall(call, dead_flags, dead_data);
    return result;
  }
  ResolveDependencies(store_, spec, call->dep_ids, call,
                      [this, call, actor_id](const StoredObject* failure) {
                        if (failure) FailCall(call, failure->flags, failure->data);
                        MutexLock lk(&mu_);
                        call->resolved = true;
                        auto it = actors_.find(actor_id);
                        if (it != actors_.end()) SendReadyLocked(*it->second);
                      });
  return result;
}

void ActorSubmitter::ReleaseHandle(const std::string& actor_id) {
  auto call = std::make_shared<Call>();
  rpc::TaskSpec* spec = call->mutable_spec();
  spec->set_task_id(RandomId());
  spec->set_actor_id(actor_id);
  spec->set_kind(rpc::ACTOR_EXIT);
  spec->set_num_returns(0);
  call->resolved = true;
  MutexLock lk(&mu_);
  auto it = actors_.find(actor_id);
  if (it == actors_.end() || shutdown_) return;
  Actor& a = *it->second;
  if (a.state == rpc::ActorInfo::DEAD) return;
  spec->set_function_name(a.class_name + ".__exit__");
  SubscribeLocked(a);
  call->seq = a.next_seq++;
  a.queue.push_back(call);
  SendReadyLocked(a);
}

void ActorSubmitter::ReleaseHandleRef(const std::string& actor_id, const std::string& ref_id) {
  {
    MutexLock lk(&mu_);
    auto it = actors_.find(actor_id);
    if (it != actors_.end() && !shutdown_ && HasPendingCallsLocked(*it->second)) {
      it->second->deferred_refs.push_back(ref_id);
      deferred_refs_++;
      return;
    }
  }
  store_.RemoveLocalRef(ref_id);
}

bool ActorSubmitter::HasPendingCallsLocked(const Actor& a) const {
  for (const auto& [seq, c] : a.in_flight) {
    if (c->spec().kind() != rpc::ACTOR_EXIT) return true;
  }
  for (const auto& c : a.queue) {
    if (!c->done && c->spec().kind() != rpc::ACTOR_EXIT) return true;
  }
  return false;
}

void ActorSubmitter::SendReadyLocked(Actor& a) {
  while (!a.queue.empty()) {
    CallPtr c = a.queue.front();
    if (c->done) {
      a.queue.pop_front();
      continue;
    }
    if (!c->resolved || a.state != rpc::ActorInfo::ALIVE || !a.conn) break;
    a.queue.pop_front();
    a.in_flight[c->seq] = c;
    std::string id = a.id;
    a.conn->Call(c->push, [this, id, c](const Status& s, rpc::Envelope& reply) {
      OnReply(id, c, s, reply);
    });
  }
}

void ActorSubmitter::OnReply(const std::string& actor_id, const CallPtr& call, const Status& s,
                             rpc::Envelope& reply) {
  if (!s.ok()) return;  // connection lost: fleet-gcs's update decides (OnUpdate)
  {
    MutexLock lk(&mu_);
    auto it = actors_.find(actor_id);
    if (it == actors_.end()) return;
    auto f = it->second->in_flight.find(call->seq);
    if (f == it->second->in_flight.end() || f->second != call) return;  // already resolved
    it->second->in_flight.erase(f);
  }
  StoreReturns(store_, call->return_ids, reply.mutable_push_task_reply(), "actor call",
               hello_.address());
  FinishCall(call);
}

void ActorSubmitter::OnUpdate(const rpc::ActorInfo& info) {
  std::vector<std::pair<CallPtr, std::pair<uint32_t, std::string>>> to_fail;
  rpc::ConnectionPtr to_close;  // closed outside the lock: its close handler locks
  {
    MutexLock lk(&mu_);
    Actor& a = ActorLocked(info.actor_id());
    if (a.state == rpc::ActorInfo::DEAD) return;
    if (!info.class_name().empty()) a.class_name = info.class_name();
    bool new_life = info.num_restarts() > a.incarnation || info.state() == rpc::ActorInfo::RESTARTING ||
                    info.state() == rpc::ActorInfo::DEAD;
    std::vector<CallPtr> lost;
    if (new_life) {
      for (auto& [seq, c] : a.in_flight) lost.push_back(c);
      a.in_flight.clear();
      to_close = std::move(a.conn);
      a.conn.reset();
    }
    a.incarnation = std::max(a.incarnation, info.num_restarts());
    a.state = info.state();
    a.death_reason = info.death_reason();
    a.death_error = info.death_error();
    auto fail_data = [&](const Call& c) REQUIRES(mu_)
        -> std::pair<uint32_t, std::string> {
      if (!a.death_error.empty()) return {kFlagActorDied | kFlagPickledError, a.death_error};
      return {kFlagActorDied, DeathMessage(a, c)};
    };
    if (a.state == rpc::ActorInfo::DEAD) {
      for (auto& c : lost) to_fail.push_back({c, fail_data(*c)});
      for (auto& c : a.queue) {
        if (!c->done) to_fail.push_back({c, fail_data(*c)});
      }
      a.queue.clear();
    } else {
      // Calls the old incarnation never answered: resend while retries allow.
      for (auto it = lost.rbegin(); it != lost.rend(); ++it) {
        CallPtr c = *it;
        if (c->spec().kind() == rpc::ACTOR_EXIT) {
          a.queue.push_front(c);  // the restarted actor still has to leave
          continue;
        }
        if (c->retries_left != 0 && !c->cancelled) {
          if (c->retries_left > 0) c->retries_left--;
          c->mutable_spec()->set_attempt(c->spec().attempt() + 1);
          a.queue.push_front(c);
        } else {
          std::string text = "The actor " + a.class_name + " (id " + ToHex(a.id) +
                             ") died while running " + c->spec().function_name() + ": " +
                             a.death_reason + ". The call was not retried (max_task_retries=" +
                             std::to_string(c->max_retries) + "); the actor is restarting.";
          to_fail.push_back({c, {c->cancelled ? kFlagTaskCancelled : kFlagActorDied, text}});
        }
      }
      if (a.state == rpc::ActorInfo::ALIVE && !a.conn) {
        auto conn = rpc::Connect(io_, info.address(), hello_);
        if (!conn.ok()) {
          FLEET_LOG(WARNING) << "cannot reach actor " << ToHex(a.id) << " at " << info.address()
                             << ": " << conn.status().message();
        } else {
          a.conn = conn.value();
          std::string id = a.id;
          std::weak_ptr<rpc::Connection> weak = a.conn;
          a.conn->Start(
              [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
                if (m.has_generator_item()) {
                  auto* g = m.mutable_generator_item();
                  if (g->wants_consumed() && backpressure_) backpressure_->OnItem(c, g->task_id());
                  store_.PutOrComplete(GeneratorItemId(g->task_id(), g->index()),
                                       std::move(*g->mutable_data()), g->flags());
                AdoptNestedRefs(store_, GeneratorItemId(g->task_id(), g->index()), *g,
                                hello_.address());
                }
              },
              [this, id, weak](const rpc::ConnectionPtr&, const Status&) {
                MutexLock lk2(&mu_);
                auto it = actors_.find(id);
                if (it != actors_.end() && it->second->conn == weak.lock()) it->second->conn.reset();
                // In-flight calls wait for fleet-gcs's verdict (restart or death).
              });
        }
      }
      SendReadyLocked(a);
    }
  }
  if (to_close) to_close->Close();
  for (auto& [c, fd] : to_fail) FailCall(c, fd.first, fd.second);
}

std::string ActorSubmitter::DeathMessage(const Actor& a, const Call& call) const {
  std::string method = call.spec().method_name();
  return "The actor " + a.class_name + " (id " + ToHex(a.id) + ") is dead, so the call" +
         (method.empty() ? std::string() : " to " + method + "()") +
         " cannot run. It died because " + a.death_reason + ".";
}

void ActorSubmitter::FailCall(const CallPtr& call, uint32_t flags, const std::string& data) {
  {
    MutexLock lk(&mu_);
    if (call->done) return;
    call->done = true;
  }
  for (const auto& id : call->return_ids) store_.Complete(id, data, flags);
  FinishCall(call);
}

void ActorSubmitter::FinishCall(const CallPtr& call) {
  for (const auto& id : call->dep_ids) store_.RemoveSubmittedRef(id);
  for (const auto& id : call->held_ids) store_.RemoveSubmittedRef(id);
  // As TaskSubmitter::FinishTask: a dynamic generator's return value holds its items.
  if (call->spec().dynamic_returns()) store_.ReleaseGenerator(call->spec().task_id(), 0);
  std::vector<std::string> release;
  {
    MutexLock lk(&mu_);
    call->done = true;
    calls_by_id_.erase(call->spec().task_id());
    if (deferred_refs_ > 0) {
      auto it = actors_.find(call->spec().actor_id());
      if (it != actors_.end() && !it->second->deferred_refs.empty() &&
          !HasPendingCallsLocked(*it->second)) {
        release.swap(it->second->deferred_refs);
        deferred_refs_ -= release.size();
      }
    }
  }
  for (const auto& id : release) store_.RemoveLocalRef(id);
}

bool ActorSubmitter::Cancel(const std::string& task_id, bool recursive) {
  CallPtr to_fail;
  rpc::ConnectionPtr notify;
  {
    MutexLock lk(&mu_);
    auto it = calls_by_id_.find(task_id);
    if (it == calls_by_id_.end()) return false;
    CallPtr c = it->second.lock();
    if (!c) return false;
    c->cancelled = true;
    auto a = actors_.find(c->spec().actor_id());
    if (a == actors_.end()) return true;
    auto& q = a->second->queue;
    if (std::find(q.begin(), q.end(), c) != q.end()) {
      to_fail = c;  // never sent: SendReadyLocked skips it once done
    } else if (a->second->in_flight.count(c->seq) && a->second->conn) {
      notify = a->second->conn;
    }
  }
  if (to_fail) {
    FailCall(to_fail, kFlagTaskCancelled,
             "Actor task " + to_fail->spec().function_name() + " (id " + ToHex(task_id) +
                 ") was cancelled by fleet.cancel().");
  }
  if (notify) SendCancelTask(notify, task_id, recursive);
  return true;
}

void ActorSubmitter::CancelChildren(const std::string& parent_task_id) {
  std::vector<std::string> children;
  {
    MutexLock lk(&mu_);
    for (auto& [id, weak] : calls_by_id_) {
      auto c = weak.lock();
      if (c && !c->cancelled && c->spec().parent_task_id() == parent_task_id) children.push_back(id);
    }
  }
  for (auto& id : children) Cancel(id, /*recursive=*/true);
}

size_t ActorSubmitter::NumPendingCalls(const std::string& actor_id) {
  MutexLock lk(&mu_);
  auto it = actors_.find(actor_id);
  if (it == actors_.end()) return 0;
  size_t n = it->second->in_flight.size();
  for (auto& c : it->second->queue) n += c->done ? 0 : 1;
  return n;
}

bool ActorSubmitter::IsPending(const std::string& task_id) {
  MutexLock lk(&mu_);
  return calls_by_id_.count(task_id) > 0;
}

std::string ActorSubmitter::StateOf(const std::string& actor_id) {
  MutexLock lk(&mu_);
  auto it = actors_.find(actor_id);
  return it == actors_.end() ? "UNKNOWN" : StateName(it->second->state);
}

void ActorSubmitter::Shutdown() {
  std::vector<CallPtr> pending;
  std::vector<rpc::ConnectionPtr> conns;
  std::vector<std::string> release;
  {
    MutexLock lk(&mu_);
    shutdown_ = true;
    deferred_refs_ = 0;
    for (auto& [id, a] : actors_) {
      for (auto& r : a->deferred_refs) release.push_back(std::move(r));
      a->deferred_refs.clear();
      for (auto& c : a->queue) pending.push_back(c);
      for (auto& [seq, c] : a->in_flight) pending.push_back(c);
      a->queue.clear();
      a->in_flight.clear();
      if (a->conn) conns.push_back(std::move(a->conn));
      a->conn.reset();
    }
  }
  for (auto& c : conns) c->Close();
  for (auto& c : pending) FailCall(c, kFlagSystemError, "fleet was shut down before the call finished");
  for (const auto& id : release) store_.RemoveLocalRef(id);
}

}  // namespace fleet
