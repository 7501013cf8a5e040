// Tests of Connection and Listener over real sockets with a running io_context.
//
// Every wait is bounded (kTimeout) so that a bug fails the test instead of
// hanging it.
#include "rpc/connection.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rpc/frame.h"
#include "rpc/listener.h"

namespace fleet::rpc {
namespace {

using namespace std::chrono_literals;

constexpr auto kTimeout = 10s;
constexpr int kTimeoutMs = 10000;
const char kToken[] = "the-cluster-token";

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet_conn_test_XXXXXX";
    char* d = ::mkdtemp(tmpl);
    ASSERT_NE(d, nullptr) << std::strerror(errno);
    dir_ = d;
    listener_ = std::make_unique<Listener>(
        io_, kToken,
        [this](const ConnectionPtr& c, Envelope& m) { OnServerMessage(c, m); },
        [this](const ConnectionPtr& c, const Status& s) { OnServerClose(c, s); });
    auto r = listener_->ListenUnix(dir_ + "/node.sock");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    unix_address_ = r.value();
    EXPECT_EQ(unix_address_, "unix:" + dir_ + "/node.sock");
  }

  // The io thread starts after SetUp so that tests can still call Listen*
  // (the Listener is not thread-safe).
  void StartIo() {
    io_thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    // Close what we hold while the io thread still runs, then stop it.
    for (auto& c : clients_) c->Close();
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& c : server_conns_) c->Close();
    }
    if (io_thread_.joinable()) {
      // Give the posted closes a chance to run; bounded.
      auto done = std::make_shared<std::promise<void>>();
      auto fut = done->get_future();
      asio::post(io_, [done] { done->set_value(); });
      fut.wait_for(kTimeout);
      work_.reset();
      io_.stop();
      io_thread_.join();
    }
    listener_.reset();
    clients_.clear();
    {
      std::lock_guard<std::mutex> lk(mu_);
      server_conns_.clear();
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  // ---- server side (io thread) ----
  void OnServerMessage(const ConnectionPtr& c, Envelope& m) {
    std::unique_lock<std::mutex> lk(mu_);
    if (m.body_case() == Envelope::kHello) {
      server_conns_.push_back(c);
      server_hellos_.push_back(m.hello());
      cv_.notify_all();
      return;
    }
    server_msgs_.push_back(m);
    switch (m.body_case()) {
      case Envelope::kGetNodeStats: {
        lk.unlock();
        Envelope reply;
        reply.mutable_get_node_stats_reply()->set_num_workers(7);
        c->Reply(m.request_id(), reply);
        break;
      }
      case Envelope::kKvGet: {
        const std::string key = m.kv_get().key();
        lk.unlock();
        if (key == "noreply") break;
        Envelope reply;
        if (key == "error") {
          reply.mutable_error()->set_code(static_cast<int>(StatusCode::kNotFound));
          reply.mutable_error()->set_message("no such key");
        } else {
          reply.mutable_kv_get_reply()->set_found(true);
          reply.mutable_kv_get_reply()->set_value("value-of-" + key);
        }
        c->Reply(m.request_id(), reply);
        break;
      }
      case Envelope::kKvPut:
        if (m.request_id() == 0) {
          std::string seq = m.kv_put().value().substr(0, 8);
          uint64_t n;
          std::memcpy(&n, seq.data(), 8);
          per_sender_[m.kv_put().key()].push_back(n);
        }
        break;
      default:
        break;
    }
    cv_.notify_all();
  }

  void OnServerClose(const ConnectionPtr&, const Status& s) {
    std::lock_guard<std::mutex> lk(mu_);
    server_closes_.push_back(s);
    cv_.notify_all();
  }

  // ---- client side (io thread) ----
  void OnClientMessage(const ConnectionPtr& c, Envelope& m) {
    if (m.body_case() == Envelope::kKvGet && m.request_id() != 0) {
      Envelope reply;
      reply.mutable_kv_get_reply()->set_found(true);
      reply.mutable_kv_get_reply()->set_value("client-says-" + m.kv_get().key());
      c->Reply(m.request_id(), reply);
      return;
    }
    std::lock_guard<std::mutex> lk(mu_);
    client_msgs_.push_back(m);
    cv_.notify_all();
  }

  void OnClientClose(const ConnectionPtr&, const Status& s) {
    std::lock_guard<std::mutex> lk(mu_);
    client_closes_.push_back(s);
    cv_.notify_all();
  }

  Hello MakeHello(const std::string& token) {
    Hello h;
    h.set_token(token);
    h.set_role("driver");
    h.set_pid(static_cast<int32_t>(::getpid()));
    h.set_job_id(42);
    return h;
  }

  Result<ConnectionPtr> ConnectClient(const std::string& address,
                                      const std::string& token = kToken) {
    auto r = ConnectAndStart(
        io_, address, MakeHello(token),
        [this](const ConnectionPtr& c, Envelope& m) { OnClientMessage(c, m); },
        [this](const ConnectionPtr& c, const Status& s) { OnClientClose(c, s); }, kTimeoutMs);
    if (r.ok()) clients_.push_back(r.value());
    return r;
  }

  // Waits (bounded) until pred() holds; pred runs under mu_.
  template <typename Pred>
  bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = kTimeout) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, timeout, pred);
  }

  ConnectionPtr WaitForServerConn(size_t index = 0) {
    if (!WaitUntil([&] { return server_conns_.size() > index; })) return nullptr;
    std::lock_guard<std::mutex> lk(mu_);
    return server_conns_[index];
  }

  size_t CountServerMsgs(Envelope::BodyCase body) {
    size_t n = 0;
    for (const auto& m : server_msgs_) n += m.body_case() == body;
    return n;
  }

  static Envelope KvGet(const std::string& key) {
    Envelope e;
    e.mutable_kv_get()->set_key(key);
    return e;
  }

  // Declared first: destroyed last, after everything that refers to it.
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  std::thread io_thread_;
  std::string dir_;
  std::string unix_address_;
  std::unique_ptr<Listener> listener_;
  std::vector<ConnectionPtr> clients_;  // test thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ConnectionPtr> server_conns_;  // guarded by mu_
  std::vector<Hello> server_hellos_;
  std::vector<Envelope> server_msgs_;  // every non-Hello message the server saw
  std::vector<Status> server_closes_;
  std::map<std::string, std::vector<uint64_t>> per_sender_;
  std::vector<Envelope> client_msgs_;
  std::vector<Status> client_closes_;
};

// (1) Request/response with the right token: async Call and CallSync.
TEST_F(ConnectionTest, RequestResponseOverUnixSocket) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();
  EXPECT_FALSE(client->closed());

  // The server saw the Hello, without the token kept on the connection.
  ConnectionPtr server = WaitForServerConn();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->hello().role(), "driver");
  EXPECT_EQ(server->hello().pid(), static_cast<int32_t>(::getpid()));
  EXPECT_EQ(server->hello().job_id(), 42u);
  EXPECT_TRUE(server->hello().token().empty());

  // Async Call.
  auto promise = std::make_shared<std::promise<std::pair<Status, std::string>>>();
  auto fut = promise->get_future();
  Envelope req = KvGet("a");
  client->Call(req, [promise](const Status& s, Envelope& reply) {
    promise->set_value({s, reply.kv_get_reply().value()});
  });
  EXPECT_NE(req.request_id(), 0u);
  ASSERT_EQ(fut.wait_for(kTimeout), std::future_status::ready);
  auto [status, value] = fut.get();
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(value, "value-of-a");

  // CallSync, several in a row.
  for (int i = 0; i < 20; ++i) {
    Envelope q = KvGet("k" + std::to_string(i));
    auto rep = client->CallSync(q, kTimeoutMs);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    EXPECT_TRUE(rep->is_reply());
    EXPECT_EQ(rep->kv_get_reply().value(), "value-of-k" + std::to_string(i));
  }

  // An Error reply turns into a non-OK status with its code.
  Envelope e = KvGet("error");
  auto err = client->CallSync(e, kTimeoutMs);
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(err.status().message(), "no such key");

  // Many concurrent async calls are all answered, each with its own reply.
  constexpr int kCalls = 200;
  std::vector<std::future<std::string>> futs;
  for (int i = 0; i < kCalls; ++i) {
    auto p = std::make_shared<std::promise<std::string>>();
    futs.push_back(p->get_future());
    Envelope q = KvGet("c" + std::to_string(i));
    client->Call(q, [p](const Status& s, Envelope& reply) {
      p->set_value(s.ok() ? reply.kv_get_reply().value() : "error: " + s.ToString());
    });
  }
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_EQ(futs[i].wait_for(kTimeout), std::future_status::ready) << i;
    EXPECT_EQ(futs[i].get(), "value-of-c" + std::to_string(i));
  }
}

// (1, TCP) The same over TCP on 127.0.0.1 with a kernel-chosen port.
TEST_F(ConnectionTest, RequestResponseOverTcp) {
  auto port = listener_->ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  ASSERT_GT(port.value(), 0);
  StartIo();
  auto r = ConnectClient("127.0.0.1:" + std::to_string(port.value()));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();
  for (int i = 0; i < 10; ++i) {
    Envelope q = KvGet("tcp" + std::to_string(i));
    auto rep = client->CallSync(q, kTimeoutMs);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    EXPECT_EQ(rep->kv_get_reply().value(), "value-of-tcp" + std::to_string(i));
  }
  ConnectionPtr server = WaitForServerConn();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->peer().rfind("127.0.0.1:", 0), 0u) << server->peer();
}

TEST_F(ConnectionTest, ConnectErrors) {
  StartIo();
  // Nobody listens there.
  auto r = ConnectClient("unix:" + dir_ + "/nobody.sock");
  EXPECT_FALSE(r.ok());
  auto bad = ConnectClient("no-port-here");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(listener_->ListenTcp("not an address", 0).ok());
}

// (2) The server pushes messages (request_id 0) to the client, in order, and
// can also call the client.
TEST_F(ConnectionTest, ServerPush) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr server = WaitForServerConn();
  ASSERT_NE(server, nullptr);

  constexpr int kPushes = 50;
  for (int i = 0; i < kPushes; ++i) {
    Envelope push;
    push.mutable_warning()->set_message("warning " + std::to_string(i));
    server->Send(push);
  }
  ASSERT_TRUE(WaitUntil([&] { return client_msgs_.size() >= kPushes; }));
  std::lock_guard<std::mutex> lk(mu_);
  ASSERT_EQ(client_msgs_.size(), static_cast<size_t>(kPushes));
  for (int i = 0; i < kPushes; ++i) {
    EXPECT_EQ(client_msgs_[i].request_id(), 0u);
    EXPECT_FALSE(client_msgs_[i].is_reply());
    ASSERT_EQ(client_msgs_[i].body_case(), Envelope::kWarning);
    EXPECT_EQ(client_msgs_[i].warning().message(), "warning " + std::to_string(i));
  }
}

TEST_F(ConnectionTest, ServerCallsClient) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr server = WaitForServerConn();
  ASSERT_NE(server, nullptr);
  Envelope q = KvGet("ping");
  auto rep = server->CallSync(q, kTimeoutMs);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->kv_get_reply().value(), "client-says-ping");
}

// (3) Sends queued quickly from several threads arrive in order per thread.
TEST_F(ConnectionTest, ConcurrentSendsKeepPerThreadOrder) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();

  constexpr int kThreads = 4;
  constexpr uint64_t kPerThread = 3000;
  // Big enough that the socket buffer fills and the queued/async write path runs.
  const std::string padding(1500, 'p');
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (uint64_t i = 0; i < kPerThread; ++i) {
        Envelope m;
        m.mutable_kv_put()->set_key("t" + std::to_string(t));
        std::string value(8, '\0');
        std::memcpy(value.data(), &i, 8);
        // Vary the size a little so frames straddle read boundaries.
        value.append(padding, 0, (i * 37) % padding.size());
        m.mutable_kv_put()->set_value(value);
        client->Send(m);
      }
    });
  }
  for (auto& th : threads) th.join();

  const size_t total = kThreads * kPerThread;
  ASSERT_TRUE(WaitUntil([&] { return CountServerMsgs(Envelope::kKvPut) >= total; }, 60s))
      << "the server did not get all " << total << " messages";
  std::lock_guard<std::mutex> lk(mu_);
  ASSERT_EQ(per_sender_.size(), static_cast<size_t>(kThreads));
  for (int t = 0; t < kThreads; ++t) {
    const auto& seqs = per_sender_["t" + std::to_string(t)];
    ASSERT_EQ(seqs.size(), kPerThread) << "thread " << t;
    for (uint64_t i = 0; i < kPerThread; ++i) {
      ASSERT_EQ(seqs[i], i) << "thread " << t << " message " << i << " out of order";
    }
  }
  EXPECT_FALSE(client->closed());
}

// (4) A wrong token is refused: ConnectAndStart fails and the server's handler
// never sees anything but (not even) the Hello.
TEST_F(ConnectionTest, WrongTokenIsRefused) {
  StartIo();
  auto r = ConnectClient(unix_address_, "not-the-token");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == StatusCode::kUnauthenticated ||
              r.status().code() == StatusCode::kDisconnected)
      << r.status().ToString();

  // The server closed its side as unauthenticated.
  ASSERT_TRUE(WaitUntil([&] { return !server_closes_.empty(); }));
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_EQ(server_closes_[0].code(), StatusCode::kUnauthenticated) << server_closes_[0].ToString();
  // The ping that ConnectAndStart sent after the Hello never reached the handler.
  EXPECT_TRUE(server_msgs_.empty()) << server_msgs_.size() << " message(s) got through";
  EXPECT_TRUE(server_hellos_.empty());
  EXPECT_TRUE(server_conns_.empty());
}

TEST_F(ConnectionTest, WrongTokenOverTcpIsRefused) {
  auto port = listener_->ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  StartIo();
  auto r = ConnectClient("127.0.0.1:" + std::to_string(port.value()), "nope");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == StatusCode::kUnauthenticated ||
              r.status().code() == StatusCode::kDisconnected)
      << r.status().ToString();
  ASSERT_TRUE(WaitUntil([&] { return !server_closes_.empty(); }));
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_TRUE(server_msgs_.empty());
}

// Connects a raw Unix-socket client, writes `first` as its first frame and
// reads every frame until EOF (each read bounded by SO_RCVTIMEO).
void RawExchange(const std::string& path, const Envelope& first, std::vector<Envelope>* got,
                 bool* eof) {
  *eof = false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  struct timeval tv {};
  tv.tv_sec = 10;
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  std::string wire;
  EncodeFrame(first, &wire);
  ASSERT_EQ(::write(fd, wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  FrameDecoder dec;
  while (true) {
    char* p = dec.WritePtr();
    ssize_t n = ::read(fd, p, dec.WritableBytes());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) break;  // no EOF, but the server is gone
    ASSERT_GE(n, 0) << "read failed or timed out: " << std::strerror(errno);
    if (n == 0) {
      *eof = true;
      break;
    }
    dec.Commit(static_cast<size_t>(n));
    Envelope e;
    while (true) {
      auto nr = dec.Next(&e);
      ASSERT_TRUE(nr.ok()) << nr.status().ToString();
      if (!nr.value()) break;
      got->push_back(e);
    }
  }
  ::close(fd);
}

// A raw client whose first message is not a Hello is disconnected, and the
// server's handler never sees its message.
TEST_F(ConnectionTest, FirstMessageMustBeHello) {
  StartIo();
  Envelope m = KvGet("sneaky");
  m.set_request_id(5);
  std::vector<Envelope> got;
  bool eof = false;
  RawExchange(dir_ + "/node.sock", m, &got, &eof);
  EXPECT_TRUE(eof);
  // Anything that did come back is only a refusal (see RefusalReachesThePeer).
  for (const auto& e : got) {
    EXPECT_EQ(e.body_case(), Envelope::kHelloReply);
    EXPECT_FALSE(e.hello_reply().ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return !server_closes_.empty(); }));
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_EQ(server_closes_[0].code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(server_msgs_.empty());
  EXPECT_TRUE(server_conns_.empty());
}

// Regression tests: with corked io-thread writes (1deac4d) the refusal was
// only corked when Dispatch closed the connection, and Uncork() skipped it
// because the connection was closed by then, so the peer saw a bare EOF and a
// wrong token surfaced as "peer closed the connection" (fixed in 73da4c9).
TEST_F(ConnectionTest, RefusalReachesThePeer) {
  StartIo();
  Envelope m = KvGet("sneaky");
  m.set_request_id(5);
  std::vector<Envelope> got;
  bool eof = false;
  RawExchange(dir_ + "/node.sock", m, &got, &eof);
  ASSERT_EQ(got.size(), 1u) << "no refusal was written before the close";
  EXPECT_TRUE(got[0].is_reply());
  EXPECT_EQ(got[0].request_id(), 5u);
  ASSERT_EQ(got[0].body_case(), Envelope::kHelloReply);
  EXPECT_FALSE(got[0].hello_reply().ok());
  EXPECT_NE(got[0].hello_reply().error().find("token"), std::string::npos);
}

TEST_F(ConnectionTest, WrongTokenSaysUnauthenticated) {
  StartIo();
  auto r = ConnectClient(unix_address_, "not-the-token");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status().ToString();
  EXPECT_NE(r.status().message().find("token"), std::string::npos) << r.status().ToString();
}

// A peer of another version is refused, the message naming both; with no
// local version set (or none sent) nothing is checked.
TEST_F(ConnectionTest, OtherVersionIsRefusedNamingBoth) {
  StartIo();
  SetLocalVersion("fleet 1.0, Python 3.11");
  Envelope m;
  *m.mutable_hello() = MakeHello(kToken);
  m.mutable_hello()->set_version("fleet 0.9, Python 3.10");
  m.set_request_id(7);
  std::vector<Envelope> got;
  bool eof = false;
  RawExchange(dir_ + "/node.sock", m, &got, &eof);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].body_case(), Envelope::kHelloReply);
  EXPECT_FALSE(got[0].hello_reply().ok());
  const std::string& why = got[0].hello_reply().error();
  EXPECT_NE(why.find("fleet 1.0, Python 3.11"), std::string::npos) << why;
  EXPECT_NE(why.find("fleet 0.9, Python 3.10"), std::string::npos) << why;
  // The same version (sent by Connect from the local one) is accepted.
  EXPECT_TRUE(ConnectClient(unix_address_).ok());
  SetLocalVersion("");
}

// (5) CallSync to a peer that never replies times out, and the connection
// stays usable (a late reply for the abandoned request would be dropped).
TEST_F(ConnectionTest, CallSyncTimesOut) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();

  Envelope q = KvGet("noreply");
  auto t0 = std::chrono::steady_clock::now();
  auto rep = client->CallSync(q, 200);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.status().code(), StatusCode::kTimedOut) << rep.status().ToString();
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, kTimeout);
  EXPECT_FALSE(client->closed());

  // The server did get the request; the connection still works.
  EXPECT_TRUE(WaitUntil([&] { return CountServerMsgs(Envelope::kKvGet) >= 1; }));
  Envelope q2 = KvGet("after");
  auto rep2 = client->CallSync(q2, kTimeoutMs);
  ASSERT_TRUE(rep2.ok()) << rep2.status().ToString();
  EXPECT_EQ(rep2->kv_get_reply().value(), "value-of-after");
}

// (6) Closing the server side fails the client's pending calls (no hang).
TEST_F(ConnectionTest, ServerCloseFailsPendingCalls) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();
  ConnectionPtr server = WaitForServerConn();
  ASSERT_NE(server, nullptr);

  auto p = std::make_shared<std::promise<Status>>();
  auto async_fut = p->get_future();
  Envelope q = KvGet("noreply");
  client->Call(q, [p](const Status& s, Envelope&) { p->set_value(s); });
  // A blocking caller on another thread, with a timeout far beyond the test's.
  auto sync_fut = std::async(std::launch::async, [client] {
    Envelope q2 = KvGet("noreply");
    return client->CallSync(q2, 60000).status();
  });
  // Both requests reached the server (so both are pending on the client).
  ASSERT_TRUE(WaitUntil([&] { return CountServerMsgs(Envelope::kKvGet) >= 2; }));

  server->Close();

  ASSERT_EQ(async_fut.wait_for(kTimeout), std::future_status::ready) << "pending Call hung";
  Status s1 = async_fut.get();
  EXPECT_FALSE(s1.ok());
  EXPECT_EQ(s1.code(), StatusCode::kDisconnected) << s1.ToString();

  ASSERT_EQ(sync_fut.wait_for(kTimeout), std::future_status::ready) << "pending CallSync hung";
  Status s2 = sync_fut.get();
  EXPECT_FALSE(s2.ok());
  EXPECT_NE(s2.code(), StatusCode::kTimedOut) << s2.ToString();

  // Both sides saw the close; the client is closed and new calls fail fast.
  ASSERT_TRUE(WaitUntil([&] { return !client_closes_.empty() && !server_closes_.empty(); }));
  EXPECT_TRUE(client->closed());
  EXPECT_TRUE(server->closed());
  Envelope q3 = KvGet("late");
  auto rep3 = client->CallSync(q3, kTimeoutMs);
  ASSERT_FALSE(rep3.ok());
  EXPECT_EQ(rep3.status().code(), StatusCode::kDisconnected) << rep3.status().ToString();
  // Send on a closed connection is dropped quietly.
  client->Send(KvGet("dropped"));
}

// Closing the client side fails its own pending calls with the given status,
// and the server notices the disconnect.
TEST_F(ConnectionTest, ClientCloseFailsPendingCalls) {
  StartIo();
  auto r = ConnectClient(unix_address_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ConnectionPtr client = r.value();
  auto p = std::make_shared<std::promise<Status>>();
  auto fut = p->get_future();
  Envelope q = KvGet("noreply");
  client->Call(q, [p](const Status& s, Envelope&) { p->set_value(s); });
  ASSERT_TRUE(WaitUntil([&] { return CountServerMsgs(Envelope::kKvGet) >= 1; }));
  client->Close(Status::Internal("going away"));
  client->Close();  // idempotent
  ASSERT_EQ(fut.wait_for(kTimeout), std::future_status::ready);
  Status s = fut.get();
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  ASSERT_TRUE(WaitUntil([&] { return !server_closes_.empty(); }));
  std::lock_guard<std::mutex> lk(mu_);
  EXPECT_EQ(server_closes_[0].code(), StatusCode::kDisconnected);
  ASSERT_EQ(client_closes_.size(), 1u);
  EXPECT_EQ(client_closes_[0].code(), StatusCode::kInternal);
}

// Several clients at once, each answered on its own connection.
TEST_F(ConnectionTest, SeveralClients) {
  StartIo();
  std::vector<ConnectionPtr> cs;
  for (int i = 0; i < 5; ++i) {
    auto r = ConnectClient(unix_address_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    cs.push_back(r.value());
  }
  std::vector<std::future<Status>> futs;
  for (int i = 0; i < 5; ++i) {
    futs.push_back(std::async(std::launch::async, [c = cs[i], i] {
      for (int j = 0; j < 50; ++j) {
        Envelope q = KvGet(std::to_string(i) + "/" + std::to_string(j));
        auto rep = c->CallSync(q, kTimeoutMs);
        if (!rep.ok()) return rep.status();
        if (rep->kv_get_reply().value() != "value-of-" + std::to_string(i) + "/" + std::to_string(j)) {
          return Status::Internal("wrong reply " + rep->kv_get_reply().value());
        }
      }
      return Status::OK();
    }));
  }
  for (auto& f : futs) {
    ASSERT_EQ(f.wait_for(kTimeout), std::future_status::ready);
    Status s = f.get();
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_TRUE(WaitUntil([&] { return server_conns_.size() == 5; }));
}

}  // namespace
}  // namespace fleet::rpc
