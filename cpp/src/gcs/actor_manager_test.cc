// Tests of ActorManager's placement and restarts against a fake fleet-node
// (grants leases, says how workers ended) and fake actor workers (answer the
// creation task), over Unix sockets: losing a worker restarts the actor on a
// new lease up to max_restarts, then it is DEAD with the reason the node gave.
#include "gcs/actor_manager.h"

#include <gtest/gtest.h>

#include <atomic>

#include "core/fake_peers_test_util.h"
#include "core/object_flags.h"

namespace fleet::gcs {
namespace {

using testing_util::FakePeer;
using testing_util::kToken;

class ActorManagerTest : public testing_util::PeerHarness {
 protected:
  static constexpr int kWorkers = 4;

  void SetUp() override {
    PeerHarness::SetUp();
    for (int i = 0; i < kWorkers; i++) {
      workers_.push_back(&AddPeer("worker" + std::to_string(i), [this](const rpc::ConnectionPtr& c,
                                                                        rpc::Envelope& m) {
        if (!m.has_push_task()) return;
        creations_++;
        rpc::Envelope r;
        r.mutable_push_task_reply();
        c->Reply(m.request_id(), r);
      }));
    }
    node_ = &AddPeer("node", [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
      rpc::Envelope r;
      if (m.has_request_lease()) {
        int i = leases_++;
        auto* g = r.mutable_lease_granted();
        if (i >= kWorkers) {
          g->set_error("no more workers in this test");
        } else {
          g->set_worker_id("worker" + std::to_string(i));
          g->set_worker_address(workers_[i]->address());
          g->set_node_id("node-1");
          g->set_worker_pid(1000 + i);
        }
        c->Reply(m.request_id(), r);
      } else if (m.has_get_worker_exit()) {
        r.mutable_get_worker_exit_reply()->set_known(true);
        r.mutable_get_worker_exit_reply()->set_reason("exited with code 1");
        c->Reply(m.request_id(), r);
      } else if (m.has_return_lease()) {
        returned_++;
      }
    });
    rpc::NodeInfo n;
    n.set_node_id("node-1");
    n.set_alive(true);
    n.set_address(node_->address());
    (*n.mutable_total())["CPU"] = 2;
    (*n.mutable_available())["CPU"] = 2;
    manager_ = std::make_unique<ActorManager>(
        io_, kToken, [n] { return std::vector<rpc::NodeInfo>{n}; },
        [](uint32_t) -> rpc::ConnectionPtr { return nullptr; });
    StartIo();
  }

  // The io thread stops first: callbacks the manager left queued (a closing
  // worker connection's) are then destroyed, never run on a freed manager.
  void TearDown() override {
    PeerHarness::TearDown();
    manager_.reset();
  }

  // Registers and creates an actor; returns its id.
  std::string Launch(int max_restarts, const std::string& owner_address = "",
                     bool detached = false) {
    std::string id = RandomId();
    RunOnIo([&] {
      rpc::RegisterActor reg;
      reg.mutable_info()->set_actor_id(id);
      reg.mutable_info()->set_class_name("Counter");
      reg.mutable_info()->set_max_restarts(max_restarts);
      reg.mutable_info()->set_owner_address(owner_address);
      reg.mutable_info()->set_detached(detached);
      rpc::Envelope reply;
      manager_->Register(reg, reply);
      rpc::CreateActor create;
      create.mutable_spec()->set_actor_id(id);
      create.mutable_spec()->set_kind(rpc::ACTOR_CREATION);
      manager_->Create(create);
    });
    return id;
  }

  rpc::ActorInfo Info(const std::string& id) {
    rpc::ActorInfo out;
    RunOnIo([&] {
      rpc::Envelope reply;
      manager_->List(reply);
      for (auto& a : reply.list_actors_reply().actors()) {
        if (a.actor_id() == id) out = a;
      }
    });
    return out;
  }

  // Waits until the actor is ALIVE on worker `i` (by pid).
  bool AliveOn(const std::string& id, int i) {
    return Eventually([&] {
      auto a = Info(id);
      return a.state() == rpc::ActorInfo::ALIVE && a.pid() == 1000 + i;
    });
  }

  // The actor's worker process "dies": its connections close.
  void Crash(int i) {
    RunOnIo([&] { workers_[i]->Close(); });
  }

  std::vector<FakePeer*> workers_;
  FakePeer* node_ = nullptr;
  std::unique_ptr<ActorManager> manager_;
  std::atomic<int> leases_{0}, creations_{0}, returned_{0};
};

TEST_F(ActorManagerTest, ALostWorkerRestartsTheActorUpToMaxRestartsThenItIsDead) {
  std::string id = Launch(/*max_restarts=*/2);
  ASSERT_TRUE(AliveOn(id, 0));
  EXPECT_EQ(Info(id).num_restarts(), 0);
  Crash(0);
  ASSERT_TRUE(AliveOn(id, 1)) << Info(id).DebugString();
  EXPECT_EQ(Info(id).num_restarts(), 1);
  Crash(1);
  ASSERT_TRUE(AliveOn(id, 2)) << Info(id).DebugString();
  EXPECT_EQ(Info(id).num_restarts(), 2);
  Crash(2);
  ASSERT_TRUE(Eventually([&] { return Info(id).state() == rpc::ActorInfo::DEAD; }));
  rpc::ActorInfo dead = Info(id);
  EXPECT_NE(dead.death_reason().find("exited with code 1"), std::string::npos) << dead.death_reason();
  EXPECT_NE(dead.death_reason().find("max_restarts=2"), std::string::npos) << dead.death_reason();
  EXPECT_TRUE(dead.death_flags() & kFlagActorDied);
  EXPECT_EQ(creations_.load(), 3);
  EXPECT_EQ(leases_.load(), 3);  // no fourth placement
}

TEST_F(ActorManagerTest, WithoutRestartsTheFirstLossIsFinal) {
  std::string id = Launch(/*max_restarts=*/0);
  ASSERT_TRUE(AliveOn(id, 0));
  Crash(0);
  ASSERT_TRUE(Eventually([&] { return Info(id).state() == rpc::ActorInfo::DEAD; }));
  EXPECT_NE(Info(id).death_reason().find("its worker process died unexpectedly"), std::string::npos)
      << Info(id).death_reason();
  EXPECT_EQ(leases_.load(), 1);
}

TEST_F(ActorManagerTest, KillWithoutRestartGivesTheWorkerBackAndIsNotRestarted) {
  std::string id = Launch(/*max_restarts=*/-1);
  ASSERT_TRUE(AliveOn(id, 0));
  RunOnIo([&] {
    rpc::KillActor kill;
    kill.set_actor_id(id);
    kill.set_no_restart(true);
    rpc::Envelope reply;
    manager_->Kill(kill, reply);
    EXPECT_TRUE(reply.kill_actor_reply().found());
  });
  ASSERT_TRUE(Eventually([&] { return returned_.load() == 1; }));
  rpc::ActorInfo dead = Info(id);
  EXPECT_EQ(dead.state(), rpc::ActorInfo::DEAD);
  EXPECT_NE(dead.death_reason().find("killed by `ray.kill` (fleet.kill)"), std::string::npos) << dead.death_reason();
  EXPECT_EQ(leases_.load(), 1);
}

TEST_F(ActorManagerTest, KillWithRestartPlacesItAgain) {
  std::string id = Launch(/*max_restarts=*/1);
  ASSERT_TRUE(AliveOn(id, 0));
  RunOnIo([&] {
    rpc::KillActor kill;
    kill.set_actor_id(id);
    kill.set_no_restart(false);
    rpc::Envelope reply;
    manager_->Kill(kill, reply);
  });
  // The node kills the process on the failed return; here its connection closes.
  ASSERT_TRUE(Eventually([&] { return returned_.load() == 1; }));
  Crash(0);
  ASSERT_TRUE(AliveOn(id, 1)) << Info(id).DebugString();
  EXPECT_EQ(Info(id).num_restarts(), 1);
}

TEST_F(ActorManagerTest, ActorsDieWithTheirOwnerExceptDetachedOnes) {
  FakePeer& owner = AddPeer("owner", [](const rpc::ConnectionPtr&, rpc::Envelope&) {});
  std::string owned = Launch(/*max_restarts=*/-1, owner.address());
  std::string detached = Launch(/*max_restarts=*/-1, owner.address(), /*detached=*/true);
  ASSERT_TRUE(Eventually([&] { return Info(owned).state() == rpc::ActorInfo::ALIVE; }));
  ASSERT_TRUE(Eventually([&] { return Info(detached).state() == rpc::ActorInfo::ALIVE; }));
  RunOnIo([&] { owner.Close(); });  // the owner process exits
  ASSERT_TRUE(Eventually([&] { return Info(owned).state() == rpc::ActorInfo::DEAD; }));
  EXPECT_NE(Info(owned).death_reason().find("its owner has died"), std::string::npos)
      << Info(owned).death_reason();
  EXPECT_EQ(Info(owned).num_restarts(), 0) << "an owner's death is final, whatever max_restarts";
  EXPECT_EQ(Info(detached).state(), rpc::ActorInfo::ALIVE);
}

// Its own fixture: the limit on dead actors is read when the manager is made.
class ActorManagerDeadCacheTest : public ActorManagerTest {
 protected:
  void SetUp() override {
    setenv("RAY_maximum_gcs_destroyed_actor_cached_count", "2", 1);
    ActorManagerTest::SetUp();
    unsetenv("RAY_maximum_gcs_destroyed_actor_cached_count");
  }
};

TEST_F(ActorManagerDeadCacheTest, OnlyTheLatestDeadActorsAreKept) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; i++) {
    ids.push_back(Launch(/*max_restarts=*/0));
    ASSERT_TRUE(AliveOn(ids.back(), i));
    RunOnIo([&] {
      rpc::KillActor kill;
      kill.set_actor_id(ids.back());
      kill.set_no_restart(true);
      rpc::Envelope reply;
      manager_->Kill(kill, reply);
    });
  }
  ASSERT_TRUE(Eventually([&] {
    int n = 0;
    RunOnIo([&] {
      rpc::Envelope reply;
      manager_->List(reply);
      n = reply.list_actors_reply().actors_size();
    });
    return n == 2;
  }));
  EXPECT_TRUE(Info(ids[0]).actor_id().empty()) << "the oldest dead actors are forgotten";
  EXPECT_EQ(Info(ids[3]).state(), rpc::ActorInfo::DEAD);
}

}  // namespace
}  // namespace fleet::gcs
