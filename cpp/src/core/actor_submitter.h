// ActorSubmitter: the calling side of actors (driver or worker).
//
// Creation: Register reserves the actor's id and name at fleet-gcs (a
// synchronous call, so a taken name fails at once), then Create resolves the
// constructor's arguments and hands the creation task to fleet-gcs, which
// places the actor.
// Calls go straight to the actor's worker over one connection per actor, in
// submission order: a call waits (and the calls behind it) until its
// arguments are resolved and the actor is ALIVE. fleet-gcs pushes every state
// change of the actors this process calls (ActorUpdate): a new address after
// a restart, or death with its reason. Calls in flight when the actor dies
// are resent after a restart while max_task_retries allows, else they fail
// with an ActorDied error; calls on a dead actor fail at once.
// Thread-safe: one mutex guards all state; sends to an actor happen under it,
// so concurrent submitters cannot reorder one actor's calls. Replies and
// updates arrive on the io thread.
#pragma once

#include <asio/io_context.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/memory_store.h"
#include "core/task_submitter.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet {

struct RegisteredActor {
  std::string actor_id;
  bool existed = false;       // get_if_exists found it
  std::string handle_meta;    // the existing actor's method table
};

class ActorSubmitter {
 public:
  using GcsFn = std::function<Result<rpc::ConnectionPtr>()>;
  ActorSubmitter(asio::io_context& io, MemoryStore& store, GcsFn gcs, rpc::Hello hello);
  ~ActorSubmitter();

  // Synchronous: reserves the id and name. A taken name is InvalidArgument
  // (unless get_if_exists, which returns the existing actor).
  Result<RegisteredActor> Register(const rpc::ActorInfo& info, bool get_if_exists);
  // Resolves the creation task's arguments, then sends it to fleet-gcs.
  void Create(TaskSubmission&& creation);
  // Queues a method call (spec.actor_id set); returns the return ids, each
  // holding one local ref. max_task_retries < 0: retry without limit.
  std::vector<std::string> Submit(TaskSubmission&& call, int max_task_retries);
  // The caller's last handle is gone: after the calls already queued, the
  // actor exits (an ACTOR_EXIT task).
  void ReleaseHandle(const std::string& actor_id);
  // fleet.cancel of an actor call. False if it is not pending here.
  bool Cancel(const std::string& task_id, bool recursive);

  // Cancels the pending calls submitted by `parent_task_id` (recursive cancel).
  void CancelChildren(const std::string& parent_task_id);
  // Calls of this process to the actor not finished yet (max_pending_calls).
  size_t NumPendingCalls(const std::string& actor_id);
  // Whether `task_id` is an actor call still pending here.
  bool IsPending(const std::string& task_id);

  // io thread: a state change pushed by fleet-gcs.
  void OnUpdate(const rpc::ActorInfo& info);
  // "PENDING" / "ALIVE" / "RESTARTING" / "DEAD" as this process last heard.
  std::string StateOf(const std::string& actor_id);
  void Shutdown();

 private:
  struct Call;
  struct Actor;
  using CallPtr = std::shared_ptr<Call>;
  Actor& ActorLocked(const std::string& actor_id);
  void SubscribeLocked(Actor& a);
  void SendReadyLocked(Actor& a);
  void OnReply(const std::string& actor_id, const CallPtr& call, const Status& s,
               rpc::Envelope& reply);
  void FailCall(const CallPtr& call, uint32_t flags, const std::string& data);
  void FinishCall(const CallPtr& call);
  std::string DeathMessage(const Actor& a, const Call& call) const;

  asio::io_context& io_;
  MemoryStore& store_;
  GcsFn gcs_;
  rpc::Hello hello_;

  std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<Actor>> actors_;       // guarded by mu_
  std::unordered_map<std::string, std::weak_ptr<Call>> calls_by_id_;     // guarded by mu_
  bool shutdown_ = false;                                                // guarded by mu_
};

}  // namespace fleet
