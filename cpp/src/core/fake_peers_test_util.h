// Fakes for the submitter tests (test-only header): a FakePeer is a Listener
// on a Unix socket in a temporary folder whose messages go to a handler on
// the io thread, and a PeerHarness runs the io thread and the MemoryStore a
// submitter under test uses. Fake node daemons and workers are FakePeers
// with handlers of the test's own (grant leases, answer PushTask).
// Every wait is bounded, so a bug fails a test instead of hanging it.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/ids.h"
#include "core/memory_store.h"
#include "rpc/connection.h"
#include "rpc/listener.h"

namespace fleet::testing_util {

inline constexpr char kToken[] = "fake-peers-token";
inline constexpr auto kWait = std::chrono::seconds(20);

class FakePeer {
 public:
  using Handler = std::function<void(const rpc::ConnectionPtr&, rpc::Envelope&)>;
  // Call before the io thread runs (the Listener is not thread-safe).
  FakePeer(asio::io_context& io, const std::string& path, Handler handler)
      : handler_(std::move(handler)),
        listener_(std::make_unique<rpc::Listener>(
            io, kToken,
            [this](const rpc::ConnectionPtr& c, rpc::Envelope& m) {
              if (m.has_hello()) {  // kept too: Close() ends silent connections
                std::lock_guard<std::mutex> lk(mu_);
                conns_.push_back(c);
                return;
              }
              if (m.has_get_node_stats()) {  // ConnectAndStart's ping
                rpc::Envelope r;
                r.mutable_get_node_stats_reply();
                c->Reply(m.request_id(), r);
                return;
              }
              {
                std::lock_guard<std::mutex> lk(mu_);
                if (std::find(conns_.begin(), conns_.end(), c) == conns_.end()) conns_.push_back(c);
              }
              handler_(c, m);
            },
            nullptr)) {
    auto r = listener_->ListenUnix(path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    address_ = r.ok() ? r.value() : "";
  }
  const std::string& address() const { return address_; }
  // Closes the listener and every connection it accepted (io thread).
  void Close() {
    listener_->Close();
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& c : conns_) c->Close();
  }

 private:
  Handler handler_;
  std::unique_ptr<rpc::Listener> listener_;
  std::string address_;
  std::mutex mu_;
  std::vector<rpc::ConnectionPtr> conns_;
};

// The io thread, a temporary folder and the store a submitter works on.
class PeerHarness : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet_peers_test_XXXXXX";
    char* d = ::mkdtemp(tmpl);
    ASSERT_NE(d, nullptr);
    dir_ = d;
  }
  void TearDown() override {
    if (io_thread_.joinable()) {
      RunOnIo([this] {
        for (auto& p : peers_) p->Close();
      });
      work_.reset();
      io_.stop();
      io_thread_.join();
    }
    std::filesystem::remove_all(dir_);
  }

  FakePeer& AddPeer(const std::string& name, FakePeer::Handler handler) {
    peers_.push_back(std::make_unique<FakePeer>(io_, dir_ + "/" + name + ".sock", std::move(handler)));
    return *peers_.back();
  }
  void StartIo() { io_thread_ = std::thread([this] { io_.run(); }); }
  // Runs `f` on the io thread and waits for it.
  void RunOnIo(std::function<void()> f) {
    std::promise<void> done;
    asio::post(io_, [&] {
      f();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(kWait), std::future_status::ready);
  }
  rpc::Hello MakeHello(const std::string& role) {
    rpc::Hello h;
    h.set_token(kToken);
    h.set_role(role);
    h.set_worker_id(RandomId());
    h.set_pid(getpid());
    h.set_address("unix:" + dir_ + "/self.sock");
    return h;
  }
  rpc::ConnectionPtr Connect(const std::string& address, const std::string& role) {
    auto c = rpc::ConnectAndStart(io_, address, MakeHello(role), nullptr, nullptr, 10000);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? c.value() : nullptr;
  }
  // The value of `id`, waiting at most kWait.
  StoredObject GetOne(const std::string& id) {
    auto r = store_.Get({id}, 20000, nullptr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value()[0] : StoredObject{};
  }
  // Polls `pred` (a few ms apart) until it holds or kWait passes.
  static bool Eventually(const std::function<bool()>& pred) {
    auto deadline = std::chrono::steady_clock::now() + kWait;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return pred();
  }

  std::string dir_;
  asio::io_context io_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_ =
      std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(io_.get_executor());
  std::thread io_thread_;
  MemoryStore store_{[](const std::string&, const std::string&) { ADD_FAILURE() << "fetch"; }};
  IdGenerator ids_;
  std::vector<std::unique_ptr<FakePeer>> peers_;
};

}  // namespace fleet::testing_util
