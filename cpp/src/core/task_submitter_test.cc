// Tests of TaskSubmitter against a fake node daemon that grants leases and a
// fake worker that answers PushTask, over real Unix sockets: lease reuse,
// pipelining once a function is known to be short, retries after a worker
// dies or returns a retryable error, and the error after the last attempt.
#include "core/task_submitter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/fake_peers_test_util.h"
#include "core/object_flags.h"

namespace fleet {
namespace {

using namespace testing_util;

class TaskSubmitterTest : public PeerHarness {
 protected:
  // Call after the test set its policies; starts the io thread.
  void Start(SubmitterOptions options = {}) {
    AddPeer("node", [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnNode(c, m); });
    AddPeer("worker", [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnWorker(c, m); });
    worker_address_ = peers_.back()->address();
    StartIo();
    node_conn_ = Connect(peers_.front()->address(), "driver");
    rpc::Hello hello = MakeHello("submitter");
    self_address_ = hello.address();
    submitter_ = std::make_unique<TaskSubmitter>(io_, store_, node_conn_, hello, options);
  }
  void TearDown() override {
    if (submitter_) submitter_->Shutdown();
    PeerHarness::TearDown();
  }

  // ---- the fake node: grants up to max_grants_ leases, holds the rest -----
  void OnNode(const rpc::ConnectionPtr& c, rpc::Envelope& m) {
    std::lock_guard<std::mutex> lk(mu_);
    if (m.has_request_lease()) {
      lease_requests_++;
      if (grants_ < max_grants_) {
        grants_++;
        rpc::Envelope r;
        auto* g = r.mutable_lease_granted();
        g->set_worker_id("worker-" + std::to_string(grants_));
        g->set_worker_address(worker_address_);
        g->set_node_id("node-1");
        g->set_worker_pid(4242);
        c->Reply(m.request_id(), r);
      } else {
        held_requests_.emplace_back(c, m.request_id());
      }
    } else if (m.has_cancel_lease_requests()) {
      for (auto& [conn, rid] : held_requests_) {
        rpc::Envelope r;
        r.mutable_lease_granted();  // no worker: cancelled
        conn->Reply(rid, r);
      }
      held_requests_.clear();
    } else if (m.has_return_lease()) {
      returned_.push_back(m.return_lease());
    } else if (m.has_get_worker_exit()) {
      rpc::Envelope r;
      r.mutable_get_worker_exit_reply()->set_known(true);
      r.mutable_get_worker_exit_reply()->set_reason("was killed by the test");
      c->Reply(m.request_id(), r);
    }
  }

  // ---- the fake worker: answers "<function>:<attempt>" --------------------
  void OnWorker(const rpc::ConnectionPtr& c, rpc::Envelope& m) {
    if (!m.has_push_task()) return;
    const auto& spec = m.push_task().spec();
    std::unique_lock<std::mutex> lk(mu_);
    pushes_.push_back(spec.function_name() + ":" + std::to_string(spec.attempt()));
    if (crash_first_attempts_ && spec.attempt() == 0) {
      lk.unlock();
      c->Close();  // the worker died mid-task
      return;
    }
    if (retryable_first_attempts_ && spec.attempt() == 0) {
      lk.unlock();
      Answer(c, m.request_id(), "boom", /*retryable=*/true);
      return;
    }
    if (spec.dynamic_returns()) {  // num_returns="dynamic": two items, then the generator
      lk.unlock();
      AnswerDynamic(c, m.request_id(), spec, /*items=*/2);
      return;
    }
    if (hold_replies_) {
      held_replies_.emplace_back(c, m);
      max_outstanding_ = std::max(max_outstanding_, held_replies_.size());
      return;
    }
    lk.unlock();
    Answer(c, m.request_id(), spec.function_name() + ":" + std::to_string(spec.attempt()), false);
  }
  static void Answer(const rpc::ConnectionPtr& c, uint64_t rid, const std::string& value,
                     bool retryable) {
    rpc::Envelope r;
    auto* p = r.mutable_push_task_reply();
    p->set_exec_us(10);  // short: worth pipelining
    p->set_retryable_error(retryable);
    p->add_returns()->set_data(value);
    c->Reply(rid, r);
  }
  // A dynamic generator's executor: sends `items` generator items, then a
  // reply whose return value holds them (owned by the caller, as the worker
  // reports them) -- or, on attempt 0 with crash_dynamic_, dies after the items.
  void AnswerDynamic(const rpc::ConnectionPtr& c, uint64_t rid, const rpc::TaskSpec& spec,
                     int items) {
    for (int i = 0; i < items; ++i) {
      rpc::Envelope item;
      auto* g = item.mutable_generator_item();
      g->set_task_id(spec.task_id());
      g->set_index(i);
      g->set_data("item" + std::to_string(i));
      c->Send(item);
    }
    if (crash_dynamic_) {
      c->Close();
      return;
    }
    rpc::Envelope r;
    auto* ret = r.mutable_push_task_reply()->add_returns();
    ret->set_data("generator");
    for (int i = 0; i < items; ++i) {
      ret->add_nested_ids(GeneratorItemId(spec.task_id(), static_cast<uint32_t>(i)));
      ret->add_nested_owners(spec.owner_address().empty() ? self_address_ : spec.owner_address());
    }
    c->Reply(rid, r);
  }

  // Answers every held push (on the io thread).
  void ReleaseHeld() {
    RunOnIo([this] {
      std::vector<std::pair<rpc::ConnectionPtr, rpc::Envelope>> held;
      {
        std::lock_guard<std::mutex> lk(mu_);
        held.swap(held_replies_);
        hold_replies_ = false;
      }
      for (auto& [c, m] : held) {
        const auto& spec = m.push_task().spec();
        Answer(c, m.request_id(), spec.function_name() + ":" + std::to_string(spec.attempt()), false);
      }
    });
  }

  std::vector<std::string> Submit(const std::string& function, int max_retries = 3) {
    TaskSubmission t;
    t.spec.set_task_id(ids_.NextTaskId(1));
    t.spec.set_function_name(function);
    t.spec.set_function_key("key-" + function);
    t.spec.set_resources("CPU=1");
    t.spec.set_num_returns(1);
    t.max_retries = max_retries;
    return submitter_->Submit(std::move(t));
  }
  template <typename T>
  T Locked(const std::function<T()>& f) {
    std::lock_guard<std::mutex> lk(mu_);
    return f();
  }

  std::string worker_address_;
  rpc::ConnectionPtr node_conn_;
  std::unique_ptr<TaskSubmitter> submitter_;

  std::mutex mu_;  // everything below; the handlers run on the io thread
  int max_grants_ = 1;
  int grants_ = 0;
  int lease_requests_ = 0;
  std::vector<std::pair<rpc::ConnectionPtr, uint64_t>> held_requests_;
  std::vector<rpc::ReturnLease> returned_;
  std::vector<std::string> pushes_;
  bool crash_first_attempts_ = false;
  bool retryable_first_attempts_ = false;
  bool hold_replies_ = false;
  bool crash_dynamic_ = false;
  std::string self_address_;  // the submitter's address (the hello it sends)
  std::vector<std::pair<rpc::ConnectionPtr, rpc::Envelope>> held_replies_;
  size_t max_outstanding_ = 0;
};

TEST_F(TaskSubmitterTest, SequentialTasksReuseOneLease) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;  // the lease stays for the whole test
  Start(o);
  for (int i = 0; i < 5; i++) {
    auto ids = Submit("f");
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_EQ(GetOne(ids[0]).data, "f:0");
  }
  EXPECT_EQ(Locked<int>([&] { return grants_; }), 1);
  EXPECT_EQ(Locked<size_t>([&] { return pushes_.size(); }), 5u);
  EXPECT_TRUE(Eventually([&] { return submitter_->NumPendingTasks() == 0; }));
}

TEST_F(TaskSubmitterTest, ShortTasksArePipelinedOnTheLease) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;
  o.max_pending_lease_requests = 1;
  Start(o);
  // Learn that "f" is short (exec_us = 10).
  EXPECT_EQ(GetOne(Submit("f")[0]).data, "f:0");
  RunOnIo([] {});  // a barrier: the io thread is done handling that reply
  {
    std::lock_guard<std::mutex> lk(mu_);
    hold_replies_ = true;
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 8; i++) ids.push_back(Submit("f")[0]);
  // A submitting thread starts only the idle lease: one push in flight.
  ASSERT_TRUE(Eventually([&] { return Locked<size_t>([&] { return held_replies_.size(); }) == 1; }))
      << Locked<size_t>([&] { return held_replies_.size(); }) << " held, "
      << Locked<size_t>([&] { return pushes_.size(); }) << " pushes";
  // Its reply makes the io thread top the lease up with the other seven at once.
  RunOnIo([this] {
    std::pair<rpc::ConnectionPtr, rpc::Envelope> first;
    {
      std::lock_guard<std::mutex> lk(mu_);
      first = held_replies_.front();
      held_replies_.clear();
    }
    Answer(first.first, first.second.request_id(), "f:0", false);
  });
  ASSERT_TRUE(Eventually([&] { return Locked<size_t>([&] { return held_replies_.size(); }) == 7; }));
  EXPECT_EQ(Locked<size_t>([&] { return max_outstanding_; }), 7u);
  ReleaseHeld();
  for (auto& id : ids) EXPECT_EQ(GetOne(id).data, "f:0");
  EXPECT_EQ(Locked<int>([&] { return grants_; }), 1) << "one worker ran them all";
}

TEST_F(TaskSubmitterTest, LongOrUnmeasuredTasksGoOneAtATime) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;
  o.pipeline_budget_us = 5;  // shorter than any task: never pipelined
  Start(o);
  {
    std::lock_guard<std::mutex> lk(mu_);
    hold_replies_ = true;
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 3; i++) ids.push_back(Submit("g")[0]);
  ASSERT_TRUE(Eventually([&] { return Locked<size_t>([&] { return held_replies_.size(); }) == 1; }));
  // Answer one at a time; never more than one is outstanding.
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(Eventually([&] { return Locked<size_t>([&] { return held_replies_.size(); }) == 1; }));
    RunOnIo([this] {
      std::pair<rpc::ConnectionPtr, rpc::Envelope> first;
      {
        std::lock_guard<std::mutex> lk(mu_);
        first = held_replies_.front();
        held_replies_.clear();
      }
      Answer(first.first, first.second.request_id(), "g:0", false);
    });
  }
  for (auto& id : ids) EXPECT_EQ(GetOne(id).data, "g:0");
  EXPECT_EQ(Locked<size_t>([&] { return max_outstanding_; }), 1u);
}

TEST_F(TaskSubmitterTest, WorkerDeathRetriesOnANewLease) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;
  max_grants_ = 2;
  crash_first_attempts_ = true;
  Start(o);
  auto ids = Submit("h", /*max_retries=*/1);
  EXPECT_EQ(GetOne(ids[0]).data, "h:1") << "the retry (attempt 1) answered";
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_EQ(grants_, 2) << "the dead worker's lease was not reused";
  ASSERT_EQ(pushes_.size(), 2u);
  EXPECT_EQ(pushes_[0], "h:0");
  ASSERT_FALSE(returned_.empty());
  EXPECT_EQ(returned_[0].worker_id(), "worker-1");
  EXPECT_TRUE(returned_[0].worker_failed());
}

TEST_F(TaskSubmitterTest, WorkerDeathWithoutRetriesFailsWithTheExitReason) {
  max_grants_ = 2;
  crash_first_attempts_ = true;
  Start();
  auto ids = Submit("k", /*max_retries=*/0);
  StoredObject v = GetOne(ids[0]);
  EXPECT_EQ(v.flags & kFlagWorkerCrashed, kFlagWorkerCrashed);
  EXPECT_NE(v.data.find("died unexpectedly"), std::string::npos) << v.data;
  EXPECT_NE(v.data.find("was killed by the test"), std::string::npos) << v.data;
  EXPECT_EQ(Locked<size_t>([&] { return pushes_.size(); }), 1u);
}

TEST_F(TaskSubmitterTest, RetryableErrorIsRetriedOnTheSameLease) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;
  retryable_first_attempts_ = true;
  Start(o);
  auto ids = Submit("r", /*max_retries=*/2);
  EXPECT_EQ(GetOne(ids[0]).data, "r:1");
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_EQ(grants_, 1) << "an application error does not cost the lease";
  EXPECT_TRUE(returned_.empty());
}

TEST_F(TaskSubmitterTest, RetryableErrorWithoutRetriesKeepsTheError) {
  retryable_first_attempts_ = true;
  Start();
  auto ids = Submit("r", /*max_retries=*/0);
  EXPECT_EQ(GetOne(ids[0]).data, "boom");
}

TEST_F(TaskSubmitterTest, CancelOfAQueuedTaskFailsItAtOnce) {
  SubmitterOptions o;
  o.lease_linger_ms = 60000;
  max_grants_ = 0;  // no lease ever: the task stays queued
  Start(o);
  TaskSubmission t;
  t.spec.set_task_id(ids_.NextTaskId(1));
  t.spec.set_function_name("q");
  t.spec.set_function_key("key-q");
  t.spec.set_resources("CPU=1");
  t.spec.set_num_returns(1);
  std::string task_id = t.spec.task_id();
  auto ids = submitter_->Submit(std::move(t));
  ASSERT_TRUE(Eventually([&] { return Locked<int>([&] { return lease_requests_; }) == 1; }));
  EXPECT_TRUE(submitter_->Cancel(task_id, /*force=*/false, /*recursive=*/false));
  StoredObject v = GetOne(ids[0]);
  EXPECT_EQ(v.flags & kFlagTaskCancelled, kFlagTaskCancelled);
  EXPECT_FALSE(submitter_->Cancel(task_id, false, false)) << "no longer pending";
}

TEST_F(TaskSubmitterTest, DynamicGeneratorReturnHoldsItsItemsUntilItGoes) {
  Start();
  TaskSubmission t;
  t.spec.set_task_id(ids_.NextTaskId(1));
  t.spec.set_function_name("d");
  t.spec.set_function_key("key-d");
  t.spec.set_resources("CPU=1");
  t.spec.set_num_returns(1);
  t.spec.set_streaming(true);
  t.spec.set_dynamic_returns(true);
  std::string task_id = t.spec.task_id();
  auto ids = submitter_->Submit(std::move(t));
  EXPECT_EQ(GetOne(ids[0]).data, "generator");
  std::string item0 = GeneratorItemId(task_id, 0), item1 = GeneratorItemId(task_id, 1);
  ASSERT_TRUE(Eventually([&] { return Locked<size_t>([&] { return pushes_.size(); }) == 1; }));
  EXPECT_EQ(GetOne(item1).data, "item1") << "the items are ready and held";
  // Only the return value holds them: no reader ref is left over.
  ASSERT_TRUE(Eventually([&] { return store_.Contains(item0); }));
  store_.RemoveLocalRef(ids[0]);  // the caller's ObjectRef to the generator goes
  EXPECT_TRUE(Eventually([&] { return !store_.Contains(item0) && !store_.Contains(item1); }))
      << "the items went with the value that held them";
}

TEST_F(TaskSubmitterTest, DynamicGeneratorThatFailsFreesTheItemsItSent) {
  crash_dynamic_ = true;
  Start();
  TaskSubmission t;
  t.spec.set_task_id(ids_.NextTaskId(1));
  t.spec.set_function_name("df");
  t.spec.set_function_key("key-df");
  t.spec.set_resources("CPU=1");
  t.spec.set_num_returns(1);
  t.spec.set_streaming(true);
  t.spec.set_dynamic_returns(true);
  t.max_retries = 0;
  std::string task_id = t.spec.task_id();
  auto ids = submitter_->Submit(std::move(t));
  StoredObject v = GetOne(ids[0]);
  EXPECT_EQ(v.flags & kFlagWorkerCrashed, kFlagWorkerCrashed);
  EXPECT_TRUE(Eventually([&] {
    return !store_.Contains(GeneratorItemId(task_id, 0)) &&
           !store_.Contains(GeneratorItemId(task_id, 1));
  })) << "nothing will read the items of a failed dynamic generator";
}

}  // namespace
}  // namespace fleet
