// Tests of LeaseManager over real loopback connections: grants, returns,
// waiting for a worker, spillback, start failures and revocation when a
// client leaves. Workers are WorkerPool entries (no processes); starting and
// killing them is recorded by the hooks.
#include "node/lease_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include "rpc/listener.h"

namespace fleet::node {
namespace {

constexpr int kTimeoutMs = 10000;
const char kToken[] = "lease-test-token";

class LeaseManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet_lease_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    listener_ = std::make_unique<rpc::Listener>(
        io_, kToken, [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) { OnMessage(c, m); },
        [this](const rpc::ConnectionPtr& c, const Status&) {
          sessions_.Remove(c.get());
          leases_.OnClientGone(c);
        });
    auto a = listener_->ListenUnix(dir_ + "/node.sock");
    ASSERT_TRUE(a.ok());
    address_ = a.value();
    io_thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    for (auto& c : clients_) c->Close();
    OnIo([this] { listener_->Close(); });
    work_.reset();
    io_.stop();
    io_thread_.join();
    std::filesystem::remove_all(dir_);
  }

  void OnMessage(const rpc::ConnectionPtr& c, rpc::Envelope& m) {
    ClientSession& s = *sessions_.Open(c);
    switch (m.body_case()) {
      case rpc::Envelope::kRequestLease: return leases_.HandleRequestLease(s, m.request_id(), m.request_lease());
      case rpc::Envelope::kReturnLease: return leases_.HandleReturnLease(s, m.request_id(), m.return_lease());
      case rpc::Envelope::kCancelLeaseRequests:
        return leases_.HandleCancelLeaseRequests(s, m.request_id(), m.cancel_lease_requests());
      default: {  // the connect's ping (GetNodeStats)
        rpc::Envelope reply;
        reply.mutable_get_node_stats_reply();
        if (m.request_id() != 0) c->Reply(m.request_id(), reply);
      }
    }
  }

  // Runs `f` on the io thread and waits for it.
  template <typename F>
  void OnIo(F f) {
    std::promise<void> done;
    asio::post(io_, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  rpc::ConnectionPtr Connect() {
    rpc::Hello h;
    h.set_token(kToken);
    h.set_role("driver");
    h.set_pid(getpid());
    auto r = rpc::ConnectAndStart(io_, address_, h, nullptr, nullptr, kTimeoutMs);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) clients_.push_back(r.value());
    return r.ok() ? r.value() : nullptr;
  }

  void AddIdleWorker(const std::string& id, int pid) {
    OnIo([&] {
      pool_.AddStarting(id, pid);
      pool_.OnRegistered(id, "addr-" + id, std::chrono::steady_clock::now());
      leases_.Schedule();
    });
  }

  static rpc::Envelope LeaseRequest(double cpus, const std::string& key = "k") {
    rpc::Envelope m;
    (*m.mutable_request_lease()->mutable_resources())["CPU"] = cpus;
    m.mutable_request_lease()->set_scheduling_key(key);
    m.mutable_request_lease()->set_description("f");
    return m;
  }

  int64_t FreeCpu() {
    int64_t v = 0;
    OnIo([&] {
      auto it = resources_.available().find("CPU");
      v = it == resources_.available().end() ? 0 : it->second;
    });
    return v;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::string dir_, address_;
  NodeResources resources_{FromDoubles({{"CPU", 2}})};
  WorkerPool pool_{2, 2, 1000};
  scheduling::LeaseScheduler scheduler_{"local"};
  std::vector<int> started_;
  std::vector<std::string> killed_;
  std::string start_failure_;
  LeaseManager leases_{resources_, pool_, scheduler_,
                       {.start_workers = [this](int n) { started_.push_back(n); },
                        .kill_worker = [this](const std::string& id) { killed_.push_back(id); },
                        .dedicated = [](const std::string&, const std::string&) {},
                        .resources_changed = [] {},
                        .start_failure = [this]() -> const std::string* {
                          return start_failure_.empty() ? nullptr : &start_failure_;
                        }}};
  SessionTable sessions_;
  std::unique_ptr<rpc::Listener> listener_;
  std::thread io_thread_;
  std::vector<rpc::ConnectionPtr> clients_;
};

TEST_F(LeaseManagerTest, GrantAndReturn) {
  AddIdleWorker("w1", 101);
  auto c = Connect();
  ASSERT_TRUE(c);
  rpc::Envelope req = LeaseRequest(1);
  auto r = c->CallSync(req, kTimeoutMs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto& g = r.value().lease_granted();
  EXPECT_EQ(g.worker_id(), "w1");
  EXPECT_EQ(g.worker_address(), "addr-w1");
  EXPECT_EQ(g.worker_pid(), 101);
  EXPECT_EQ(g.node_id(), "local");
  EXPECT_EQ(FreeCpu(), 1 * kUnit);

  rpc::Envelope ret;
  ret.mutable_return_lease()->set_worker_id("w1");
  ASSERT_TRUE(c->CallSync(ret, kTimeoutMs).ok());
  EXPECT_EQ(FreeCpu(), 2 * kUnit);
  int idle = 0;
  OnIo([&] { idle = pool_.num_idle(); });
  EXPECT_EQ(idle, 1);
}

TEST_F(LeaseManagerTest, WaitsForAWorkerThenGrants) {
  auto c = Connect();
  ASSERT_TRUE(c);
  std::promise<rpc::Envelope> reply;
  rpc::Envelope req = LeaseRequest(1);
  c->Call(req, [&](const Status&, rpc::Envelope& m) { reply.set_value(m); });
  auto fut = reply.get_future();
  std::vector<int> started;
  for (int i = 0; i < 1000 && started.empty(); i++) {
    OnIo([&] { started = started_; });
    if (started.empty()) usleep(10000);
  }
  ASSERT_FALSE(started.empty());
  EXPECT_EQ(started[0], 1);  // one worker to start for one request
  EXPECT_EQ(fut.wait_for(std::chrono::seconds(0)), std::future_status::timeout);  // still queued
  AddIdleWorker("w2", 102);
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(fut.get().lease_granted().worker_id(), "w2");
}

TEST_F(LeaseManagerTest, SpillsWhenBusyHereAndFreeElsewhere) {
  OnIo([&] { scheduler_.SetNode("remote", {"10.0.0.9:1", FromDoubles({{"CPU", 4}}), FromDoubles({{"CPU", 4}})}); });
  auto c = Connect();
  ASSERT_TRUE(c);
  rpc::Envelope req = LeaseRequest(3);  // never fits here
  auto r = c->CallSync(req, kTimeoutMs);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().lease_granted().spillback_node_id(), "remote");
  EXPECT_EQ(r.value().lease_granted().spillback_address(), "10.0.0.9:1");
  int pending = -1;
  OnIo([&] { pending = leases_.num_pending(); });
  EXPECT_EQ(pending, 0);
}

TEST_F(LeaseManagerTest, StartFailuresFailRequestsAtOnce) {
  OnIo([&] { start_failure_ = "worker pid 7 exited before connecting"; });
  auto c = Connect();
  ASSERT_TRUE(c);
  rpc::Envelope req = LeaseRequest(1);
  auto r = c->CallSync(req, kTimeoutMs);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("workers on this node fail to start: worker pid 7"), std::string::npos);
}

TEST_F(LeaseManagerTest, CancelAnswersQueuedRequestsOfThatKey) {
  auto c = Connect();
  ASSERT_TRUE(c);
  std::promise<rpc::Envelope> reply;
  rpc::Envelope req = LeaseRequest(1, "key-a");
  c->Call(req, [&](const Status&, rpc::Envelope& m) { reply.set_value(m); });
  rpc::Envelope cancel;
  cancel.mutable_cancel_lease_requests()->set_scheduling_key("key-a");
  c->Send(cancel);
  auto fut = reply.get_future();
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  rpc::Envelope m = fut.get();
  EXPECT_TRUE(m.has_lease_granted());
  EXPECT_TRUE(m.lease_granted().worker_id().empty());  // canceled
}

TEST_F(LeaseManagerTest, AClientThatLeavesLosesItsLeasesAndTheirWorkers) {
  AddIdleWorker("w3", 103);
  auto c = Connect();
  ASSERT_TRUE(c);
  rpc::Envelope req = LeaseRequest(2);
  auto r = c->CallSync(req, kTimeoutMs);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(FreeCpu(), 0);
  c->Close();
  for (int i = 0; i < 1000 && FreeCpu() != 2 * kUnit; i++) usleep(10000);
  EXPECT_EQ(FreeCpu(), 2 * kUnit);
  std::vector<std::string> killed;
  OnIo([&] { killed = killed_; });
  EXPECT_EQ(killed, (std::vector<std::string>{"w3"}));
}

}  // namespace
}  // namespace fleet::node
