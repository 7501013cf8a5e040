// Tests of SessionTable: one session per connection, worker bindings, store
// client ids, and the single cleanup on Remove.
#include "node/client_session.h"

#include <gtest/gtest.h>

namespace fleet::node {
namespace {

class SessionTableTest : public ::testing::Test {
 protected:
  rpc::ConnectionPtr NewConn(const std::string& peer) {
    return std::make_shared<rpc::Connection>(io_, rpc::Connection::Socket(io_), peer);
  }
  asio::io_context io_;
  SessionTable table_;
};

TEST_F(SessionTableTest, OneSessionPerConnection) {
  auto a = NewConn("a"), b = NewConn("b");
  auto& sa = table_.Open(a);
  EXPECT_EQ(sa->conn, a);
  EXPECT_EQ(table_.Open(a), sa);
  EXPECT_NE(table_.Open(b), sa);
  EXPECT_EQ(table_.size(), 2u);
  EXPECT_EQ(table_.Find(a.get()), sa.get());
  EXPECT_EQ(table_.Find(nullptr), nullptr);
}

TEST_F(SessionTableTest, WorkerBinding) {
  auto w = NewConn("w");
  ClientSession& s = *table_.Open(w);
  table_.BindWorker(s, "worker-1");
  EXPECT_EQ(table_.FindWorker("worker-1"), &s);
  EXPECT_EQ(s.worker_id, "worker-1");
  // Unbinding keeps the session as a plain client.
  EXPECT_EQ(table_.UnbindWorker("worker-1"), w);
  EXPECT_EQ(table_.FindWorker("worker-1"), nullptr);
  EXPECT_TRUE(s.worker_id.empty());
  EXPECT_EQ(table_.Find(w.get()), &s);
  EXPECT_EQ(table_.UnbindWorker("worker-1"), nullptr);
}

TEST_F(SessionTableTest, RemoveHandsBackEverythingOnce) {
  auto w = NewConn("w");
  std::shared_ptr<ClientSession> held = table_.Open(w);
  held->address = "10.0.0.1:5,unix:/tmp/w.sock";
  table_.BindWorker(*held, "worker-1");
  store::ClientId id = table_.StoreClientOf(*held);
  EXPECT_NE(id, 0u);
  EXPECT_EQ(table_.StoreClientOf(*held), id);  // assigned once
  EXPECT_TRUE(table_.HasAddress("10.0.0.1:5,unix:/tmp/w.sock"));

  auto s = table_.Remove(w.get());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->worker_id, "worker-1");
  EXPECT_EQ(s->store_client, id);
  EXPECT_EQ(s->address, "10.0.0.1:5,unix:/tmp/w.sock");
  EXPECT_EQ(table_.FindWorker("worker-1"), nullptr);
  EXPECT_FALSE(table_.HasAddress("10.0.0.1:5,unix:/tmp/w.sock"));
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.Remove(w.get()), nullptr);
  EXPECT_EQ(held->worker_id, "worker-1");  // a handler holding it still sees it
}

TEST_F(SessionTableTest, StoreClientIdsAreUnique) {
  store::ClientId transfer = table_.NewStoreClient();
  auto a = NewConn("a"), b = NewConn("b");
  store::ClientId ia = table_.StoreClientOf(*table_.Open(a));
  store::ClientId ib = table_.StoreClientOf(*table_.Open(b));
  EXPECT_NE(ia, transfer);
  EXPECT_NE(ib, transfer);
  EXPECT_NE(ia, ib);
  EXPECT_EQ(table_.Open(b)->store_client, ib);
  EXPECT_FALSE(table_.HasAddress(""));
}

}  // namespace
}  // namespace fleet::node
