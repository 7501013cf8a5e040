// Tests of fleet-gcs's message table over a real loopback connection: what a
// role may not send is refused with an error naming it, counted, and changes
// nothing; what it may send is served.
#include "gcs/gcs_server.h"

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <future>
#include <thread>

namespace fleet::gcs {
namespace {

constexpr int kTimeoutMs = 10000;
const char kToken[] = "gcs-test-token";

class GcsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GcsOptions o;
    o.token = kToken;
    server_ = std::make_unique<GcsServer>(io_, o);
    auto port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = port.value();
    io_thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    for (auto& c : clients_) c->Close();
    std::promise<void> stopped;
    asio::post(io_, [&] {
      server_->Stop();
      stopped.set_value();
    });
    stopped.get_future().wait_for(std::chrono::seconds(10));
    work_.reset();
    io_.stop();
    io_thread_.join();
  }

  rpc::ConnectionPtr Connect(const std::string& role) {
    rpc::Hello h;
    h.set_token(kToken);
    h.set_role(role);
    h.set_pid(1);
    auto r = rpc::ConnectAndStart(
        io_, "127.0.0.1:" + std::to_string(port_), h, [](const rpc::ConnectionPtr&, rpc::Envelope&) {},
        [](const rpc::ConnectionPtr&, const Status&) {}, kTimeoutMs);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return nullptr;
    clients_.push_back(r.value());
    return r.value();
  }

  // The number of nodes fleet-gcs knows, asked as the CLI would.
  int NumNodes(const rpc::ConnectionPtr& c) {
    rpc::Envelope req;
    req.mutable_get_nodes();
    auto r = c->CallSync(req, kTimeoutMs);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r.value().get_nodes_reply().nodes_size() : -1;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::unique_ptr<GcsServer> server_;
  int port_ = 0;
  std::thread io_thread_;
  std::vector<rpc::ConnectionPtr> clients_;
};

TEST_F(GcsServerTest, AMessageOutsideItsTableIsRefusedWithAClearErrorAndCounted) {
  auto driver = Connect("driver");
  ASSERT_TRUE(driver);
  rpc::Envelope push;
  push.mutable_push_task()->mutable_spec()->set_function_name("f");
  auto r = driver->CallSync(push, kTimeoutMs);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "fleet-gcs refused a PushTask message from a driver: it does not handle that message");
  EXPECT_EQ(server_->refused_messages(), 1u);
}

TEST_F(GcsServerTest, ADriverCannotRegisterANodeButANodeCan) {
  auto driver = Connect("driver");
  ASSERT_TRUE(driver);
  rpc::Envelope reg;
  reg.mutable_register_node()->mutable_node()->set_node_id(std::string(16, 'n'));
  reg.mutable_register_node()->mutable_node()->set_node_ip("127.0.0.1");
  auto r = driver->CallSync(reg, kTimeoutMs);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("RegisterNode message from a driver"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(NumNodes(driver), 0);
  EXPECT_EQ(server_->refused_messages(), 1u);

  auto node = Connect("node");
  ASSERT_TRUE(node);
  auto ok = node->CallSync(reg, kTimeoutMs);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok.value().has_register_node_reply());
  EXPECT_EQ(NumNodes(driver), 1);
  EXPECT_EQ(server_->refused_messages(), 1u);
}

TEST_F(GcsServerTest, KvRoundTripThroughTheTable) {
  auto cli = Connect("cli");
  ASSERT_TRUE(cli);
  rpc::Envelope put;
  put.mutable_kv_put()->set_key("k");
  put.mutable_kv_put()->set_value("v1");
  auto p = cli->CallSync(put, kTimeoutMs);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p.value().kv_put_reply().added());
  rpc::Envelope get;
  get.mutable_kv_get()->set_key("k");
  auto g = cli->CallSync(get, kTimeoutMs);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g.value().kv_get_reply().value(), "v1");
  EXPECT_EQ(server_->refused_messages(), 0u);
}

}  // namespace
}  // namespace fleet::gcs
