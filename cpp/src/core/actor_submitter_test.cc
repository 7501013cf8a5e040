// Tests of ActorSubmitter against fake actor workers that answer PushTask
// and a fake fleet-gcs that takes subscriptions, over real Unix sockets:
// calls arrive in submission order (also when queued before the actor is
// alive), calls in flight across a restart are resent while retries allow
// and fail otherwise, and calls on a dead actor fail.
#include "core/actor_submitter.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "core/fake_peers_test_util.h"
#include "core/object_flags.h"

namespace fleet {
namespace {

using namespace testing_util;

class ActorSubmitterTest : public PeerHarness {
 protected:
  struct FakeActor {
    std::vector<std::string> received;  // "<method>:<attempt>"
    bool hold = false;                  // keep the pushes unanswered
    std::vector<std::pair<rpc::ConnectionPtr, uint64_t>> held;
  };

  void Start() {
    AddPeer("gcs", [this](const rpc::ConnectionPtr&, rpc::Envelope& m) {
      std::lock_guard<std::mutex> lk(mu_);
      if (m.has_subscribe_actor()) subscriptions_++;
    });
    gcs_address_ = peers_.back()->address();
    for (int i = 0; i < 2; i++) {
      AddPeer("actor" + std::to_string(i),
              [this, i](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnActor(i, c, m); });
      actor_address_[i] = peers_.back()->address();
    }
    StartIo();
    gcs_conn_ = Connect(gcs_address_, "driver");
    submitter_ = std::make_unique<ActorSubmitter>(
        io_, store_, [this]() -> Result<rpc::ConnectionPtr> { return gcs_conn_; },
        MakeHello("submitter"));
  }
  void TearDown() override {
    if (submitter_) submitter_->Shutdown();
    PeerHarness::TearDown();
  }

  void OnActor(int i, const rpc::ConnectionPtr& c, rpc::Envelope& m) {
    if (!m.has_push_task()) return;
    const auto& spec = m.push_task().spec();
    std::string what = spec.method_name() + ":" + std::to_string(spec.attempt());
    {
      std::lock_guard<std::mutex> lk(mu_);
      actors_[i].received.push_back(what);
      if (actors_[i].hold) {
        actors_[i].held.emplace_back(c, m.request_id());
        return;
      }
    }
    Answer(c, m.request_id(), "actor" + std::to_string(i) + " " + what);
  }
  static void Answer(const rpc::ConnectionPtr& c, uint64_t rid, const std::string& value) {
    rpc::Envelope r;
    r.mutable_push_task_reply()->add_returns()->set_data(value);
    c->Reply(rid, r);
  }

  // fleet-gcs's update, delivered on the io thread as the real one is.
  void Update(rpc::ActorInfo::State state, int restarts, int actor = 0) {
    rpc::ActorInfo info;
    info.set_actor_id(actor_id_);
    info.set_class_name("Counter");
    info.set_state(state);
    info.set_num_restarts(restarts);
    if (state == rpc::ActorInfo::ALIVE) info.set_address(actor_address_[actor]);
    if (state != rpc::ActorInfo::ALIVE) info.set_death_reason("the test killed it");
    RunOnIo([&] { submitter_->OnUpdate(info); });
  }
  std::string Call(const std::string& method, int max_task_retries = 0) {
    TaskSubmission t;
    t.spec.set_task_id(ids_.NextTaskId(1));
    t.spec.set_kind(rpc::ACTOR_TASK);
    t.spec.set_actor_id(actor_id_);
    t.spec.set_method_name(method);
    t.spec.set_function_name("Counter." + method);
    t.spec.set_num_returns(1);
    return submitter_->Submit(std::move(t), max_task_retries)[0];
  }
  std::vector<std::string> Received(int i) {
    std::lock_guard<std::mutex> lk(mu_);
    return actors_[i].received;
  }

  std::string actor_id_ = RandomId();
  std::string gcs_address_;
  std::string actor_address_[2];
  rpc::ConnectionPtr gcs_conn_;
  std::unique_ptr<ActorSubmitter> submitter_;

  std::mutex mu_;  // everything below; the handlers run on the io thread
  FakeActor actors_[2];
  int subscriptions_ = 0;
};

TEST_F(ActorSubmitterTest, CallsArriveInSubmissionOrder) {
  Start();
  Update(rpc::ActorInfo::ALIVE, 0);
  std::vector<std::string> ids, want;
  for (int i = 0; i < 50; i++) {
    ids.push_back(Call("m" + std::to_string(i)));
    want.push_back("m" + std::to_string(i) + ":0");
  }
  for (int i = 0; i < 50; i++) {
    EXPECT_EQ(GetOne(ids[i]).data, "actor0 m" + std::to_string(i) + ":0");
  }
  EXPECT_EQ(Received(0), want);
  EXPECT_TRUE(Eventually([&] { return submitter_->NumPendingCalls(actor_id_) == 0; }));
}

TEST_F(ActorSubmitterTest, CallsQueuedBeforeTheActorIsAliveGoInOrder) {
  Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; i++) ids.push_back(Call("early" + std::to_string(i)));
  EXPECT_EQ(submitter_->StateOf(actor_id_), "PENDING");
  EXPECT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> lk(mu_);
    return subscriptions_ == 1;
  })) << "one subscription per actor";
  EXPECT_TRUE(Received(0).empty());
  Update(rpc::ActorInfo::ALIVE, 0);
  for (int i = 0; i < 5; i++) {
    EXPECT_EQ(GetOne(ids[i]).data, "actor0 early" + std::to_string(i) + ":0");
  }
  EXPECT_EQ(Received(0).size(), 5u);
  EXPECT_EQ(submitter_->StateOf(actor_id_), "ALIVE");
}

TEST_F(ActorSubmitterTest, InFlightCallsAreResentAfterARestartWhileRetriesAllow) {
  Start();
  {
    std::lock_guard<std::mutex> lk(mu_);
    actors_[0].hold = true;  // the first incarnation never answers
  }
  Update(rpc::ActorInfo::ALIVE, 0);
  std::string retried = Call("a", /*max_task_retries=*/1);
  std::string not_retried = Call("b", /*max_task_retries=*/0);
  std::string retried_too = Call("c", /*max_task_retries=*/-1);  // without limit
  ASSERT_TRUE(Eventually([&] { return Received(0).size() == 3; }));
  Update(rpc::ActorInfo::RESTARTING, 1);
  StoredObject lost = GetOne(not_retried);
  EXPECT_EQ(lost.flags & kFlagActorDied, kFlagActorDied);
  EXPECT_NE(lost.data.find("was not retried"), std::string::npos) << lost.data;
  Update(rpc::ActorInfo::ALIVE, 1, /*actor=*/1);  // the new incarnation lives elsewhere
  EXPECT_EQ(GetOne(retried).data, "actor1 a:1");
  EXPECT_EQ(GetOne(retried_too).data, "actor1 c:1");
  EXPECT_EQ(Received(1), (std::vector<std::string>{"a:1", "c:1"})) << "in their order";
  // Calls after the restart go to the new incarnation.
  EXPECT_EQ(GetOne(Call("d")).data, "actor1 d:0");
}

TEST_F(ActorSubmitterTest, DeathFailsPendingAndLaterCalls) {
  Start();
  {
    std::lock_guard<std::mutex> lk(mu_);
    actors_[0].hold = true;
  }
  Update(rpc::ActorInfo::ALIVE, 0);
  std::string in_flight = Call("a", /*max_task_retries=*/5);
  ASSERT_TRUE(Eventually([&] { return Received(0).size() == 1; }));
  Update(rpc::ActorInfo::DEAD, 0);
  StoredObject v = GetOne(in_flight);
  EXPECT_EQ(v.flags & kFlagActorDied, kFlagActorDied);
  EXPECT_NE(v.data.find("the test killed it"), std::string::npos) << v.data;
  StoredObject later = GetOne(Call("b"));
  EXPECT_EQ(later.flags & kFlagActorDied, kFlagActorDied);
  EXPECT_NE(later.data.find("b()"), std::string::npos) << later.data;
  EXPECT_EQ(submitter_->StateOf(actor_id_), "DEAD");
}

TEST_F(ActorSubmitterTest, AReleasedHandleRefWaitsForThisProcesssCalls) {
  Start();
  {
    std::lock_guard<std::mutex> lk(mu_);
    actors_[0].hold = true;
  }
  Update(rpc::ActorInfo::ALIVE, 0);
  std::string handle = "handle-object";
  store_.PutReady(handle, actor_id_, kFlagActorHandle, /*local_refs=*/1);
  std::string pending = Call("a");
  ASSERT_TRUE(Eventually([&] { return Received(0).size() == 1; }));
  submitter_->ReleaseHandleRef(actor_id_, handle);
  EXPECT_TRUE(store_.Contains(handle)) << "a call of ours is still running";
  std::vector<std::pair<rpc::ConnectionPtr, uint64_t>> held;
  {
    std::lock_guard<std::mutex> lk(mu_);
    held.swap(actors_[0].held);
  }
  ASSERT_EQ(held.size(), 1u);
  Answer(held[0].first, held[0].second, "done");
  EXPECT_EQ(GetOne(pending).data, "done");
  EXPECT_TRUE(Eventually([&] { return !store_.Contains(handle); }));
  // Without calls pending, the ref goes at once.
  store_.PutReady(handle, actor_id_, kFlagActorHandle, 1);
  submitter_->ReleaseHandleRef(actor_id_, handle);
  EXPECT_FALSE(store_.Contains(handle));
}

TEST_F(ActorSubmitterTest, ReleaseHandleQueuesTheExitBehindTheCallsMade) {
  Start();
  Update(rpc::ActorInfo::ALIVE, 0);
  {
    std::lock_guard<std::mutex> lk(mu_);
    actors_[0].hold = true;
  }
  std::string a = Call("a");
  RunOnIo([&] { submitter_->ReleaseHandle(actor_id_); });
  ASSERT_TRUE(Eventually([&] { return Received(0).size() == 2; }));
  EXPECT_EQ(Received(0), (std::vector<std::string>{"a:0", ":0"})) << "the exit comes last";
}

}  // namespace
}  // namespace fleet
