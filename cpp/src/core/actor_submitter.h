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
// Lifetime: when the actor's handle object is let go (no handle left
// anywhere), ReleaseHandle queues an ACTOR_EXIT behind the calls made; a
// Python handle's ref is dropped only once this process's calls to the actor
// have finished (ReleaseHandleRef).
// Thread-safe: one mutex (mu_) guards all state; sends to an actor happen
// under it, so concurrent submitters cannot reorder one actor's calls.
// Replies and updates arrive on the io thread. No callback or store call runs
// under mu_. Lock order: mu_ before GcsClient's (subscribing to an actor
// fetches the fleet-gcs connection under it).
#pragma once

#include <asio/io_context.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/thread_annotations.h"
#include "core/generator_backpressure.h"
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
  // As TaskSubmitter::SetGeneratorBackpressure.
  void SetGeneratorBackpressure(GeneratorBackpressure* bp) { backpressure_ = bp; }

  // Synchronous: reserves the id and name. A taken name is InvalidArgument
  // (unless get_if_exists, which returns the existing actor).
  Result<RegisteredActor> Register(const rpc::ActorInfo& info, bool get_if_exists) EXCLUDES(mu_);
  // Resolves the creation task's arguments, then sends it to fleet-gcs.
  void Create(TaskSubmission&& creation) EXCLUDES(mu_);
  // Queues a method call (spec.actor_id set); returns the return ids, each
  // holding one local ref. max_task_retries < 0: retry without limit.
  std::vector<std::string> Submit(TaskSubmission&& call, int max_task_retries) EXCLUDES(mu_);
  // The actor's handle object (owned here) was let go: no handle to it is
  // left anywhere. After the calls already queued, the actor exits (an
  // ACTOR_EXIT task).
  void ReleaseHandle(const std::string& actor_id) EXCLUDES(mu_);
  // A Python handle holding one local ref on the actor's handle object
  // (`ref_id`, owned or borrowed) is gone: the ref is dropped once this
  // process's calls to the actor have finished, so that the actor does not
  // exit under calls a borrower made just before letting go.
  void ReleaseHandleRef(const std::string& actor_id, const std::string& ref_id) EXCLUDES(mu_);
  // fleet.cancel of an actor call. False if it is not pending here.
  bool Cancel(const std::string& task_id, bool recursive) EXCLUDES(mu_);

  // Cancels the pending calls submitted by `parent_task_id` (recursive cancel).
  void CancelChildren(const std::string& parent_task_id) EXCLUDES(mu_);
  // Calls of this process to the actor not finished yet (max_pending_calls).
  size_t NumPendingCalls(const std::string& actor_id) EXCLUDES(mu_);
  // Whether `task_id` is an actor call still pending here.
  bool IsPending(const std::string& task_id) EXCLUDES(mu_);

  // io thread: a state change pushed by fleet-gcs.
  void OnUpdate(const rpc::ActorInfo& info) EXCLUDES(mu_);
  // "PENDING" / "ALIVE" / "RESTARTING" / "DEAD" as this process last heard.
  std::string StateOf(const std::string& actor_id) EXCLUDES(mu_);
  void Shutdown() EXCLUDES(mu_);

 private:
  struct Call;
  struct Actor;
  using CallPtr = std::shared_ptr<Call>;
  // The actor's state, made on first use.
  Actor& ActorLocked(const std::string& actor_id) REQUIRES(mu_);
  // Asks fleet-gcs for the actor's updates, once.
  void SubscribeLocked(Actor& a) REQUIRES(mu_);
  // Sends the calls at the head of the queue that are ready to go.
  void SendReadyLocked(Actor& a) REQUIRES(mu_);
  void OnReply(const std::string& actor_id, const CallPtr& call, const Status& s,
               rpc::Envelope& reply) EXCLUDES(mu_);
  void FailCall(const CallPtr& call, uint32_t flags, const std::string& data) EXCLUDES(mu_);
  void FinishCall(const CallPtr& call) EXCLUDES(mu_);
  // Calls of this process to `a` not finished (ACTOR_EXIT excluded).
  bool HasPendingCallsLocked(const Actor& a) const REQUIRES(mu_);
  // Reads the actor's class and death reason (guarded by mu_, like all of `a`).
  std::string DeathMessage(const Actor& a, const Call& call) const REQUIRES(mu_);

  // Constant after construction.
  asio::io_context& io_;
  MemoryStore& store_;
  GeneratorBackpressure* backpressure_ = nullptr;  // set before use
  GcsFn gcs_;
  rpc::Hello hello_;

  Mutex mu_;
  // The actors, and through them their queues, connections and calls.
  std::unordered_map<std::string, std::unique_ptr<Actor>> actors_ GUARDED_BY(mu_);
  std::unordered_map<std::string, std::weak_ptr<Call>> calls_by_id_ GUARDED_BY(mu_);
  bool shutdown_ GUARDED_BY(mu_) = false;
  // Handle refs waiting for their actor's calls (over all actors): while 0,
  // finishing a call looks up nothing.
  size_t deferred_refs_ GUARDED_BY(mu_) = 0;
};

}  // namespace fleet
