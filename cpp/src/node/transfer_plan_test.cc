// Tests of the decisions of object transfer: which chunks a pull asks for,
// and where a free is forwarded.
#include "node/transfer_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace fleet::node {
namespace {

TEST(PullWindowTest, FirstChunkThenAWindowOfRequests) {
  PullWindow w(10, 3);
  PullWindow::Chunk first = w.Start();
  EXPECT_EQ(first.offset, 0u);
  EXPECT_EQ(first.length, 10u);
  EXPECT_EQ(w.in_flight(), 1);
  w.Replied();
  w.SetSize(45);
  w.Received(10);
  EXPECT_FALSE(w.Complete());
  std::vector<std::pair<uint64_t, uint64_t>> asked;
  while (auto c = w.Next()) asked.emplace_back(c->offset, c->length);
  // At most 3 in flight.
  EXPECT_EQ(asked, (std::vector<std::pair<uint64_t, uint64_t>>{{10, 10}, {20, 10}, {30, 10}}));
  w.Replied();
  w.Received(10);
  auto last = w.Next();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->offset, 40u);
  EXPECT_EQ(last->length, 5u);  // the short tail
  EXPECT_FALSE(w.Next());       // every byte asked for
  for (uint64_t n : {10, 10, 5}) {
    w.Replied();
    w.Received(n);
  }
  EXPECT_TRUE(w.Complete());
  EXPECT_EQ(w.in_flight(), 0);
  EXPECT_EQ(w.received(), 45u);
}

TEST(PullWindowTest, ObjectsNoLargerThanAChunkNeedOneRequest) {
  for (uint64_t size : {0, 7, 10}) {
    PullWindow w(10, 16);
    w.Start();
    w.Replied();
    w.SetSize(size);
    w.Received(size);
    EXPECT_TRUE(w.Complete()) << size;
    EXPECT_FALSE(w.Next()) << size;
  }
}

rpc::StoreFree FreeOf(std::vector<std::pair<std::string, std::string>> objects) {
  rpc::StoreFree f;
  for (auto& [id, node] : objects) {
    f.add_object_ids(id);
    f.add_node_ids(node);
  }
  return f;
}

std::vector<std::string> Ids(const std::map<std::string, rpc::Envelope>& fwd, const std::string& node) {
  auto it = fwd.find(node);
  if (it == fwd.end()) return {};
  return {it->second.store_free().object_ids().begin(), it->second.store_free().object_ids().end()};
}

TEST(CopyTrackerTest, FreeGoesToThePrimaryAndToTheCopies) {
  CopyTracker copies;
  copies.Served("o1", "n2");
  copies.Served("o1", "n3");
  copies.Served("o1", "self");  // never forwarded to itself
  copies.Served("o2", "n3");
  std::map<std::string, rpc::Envelope> fwd;
  copies.RouteFree(FreeOf({{"o1", ""}, {"o2", "self"}, {"o3", "n4"}}), "self", &fwd);
  EXPECT_EQ(Ids(fwd, "n2"), (std::vector<std::string>{"o1"}));
  EXPECT_EQ(Ids(fwd, "n3"), (std::vector<std::string>{"o1", "o2"}));
  EXPECT_EQ(Ids(fwd, "n4"), (std::vector<std::string>{"o3"}));  // the primary is there
  EXPECT_EQ(fwd.count("self"), 0u);
  EXPECT_EQ(copies.size(), 0u);  // forgotten once forwarded

  fwd.clear();
  copies.RouteFree(FreeOf({{"o1", ""}}), "self", &fwd);
  EXPECT_TRUE(fwd.empty());
}

TEST(CopyTrackerTest, NodeIdsMayBeShorterAndPruneForgetsGoneObjects) {
  CopyTracker copies;
  copies.Served("a", "n2");
  copies.Served("b", "n2");
  copies.Prune([](const std::string& id) { return id == "a"; });
  EXPECT_EQ(copies.size(), 1u);
  rpc::StoreFree f;
  f.add_object_ids("a");
  f.add_object_ids("b");  // no node ids at all: both here
  std::map<std::string, rpc::Envelope> fwd;
  copies.RouteFree(f, "self", &fwd);
  EXPECT_EQ(Ids(fwd, "n2"), (std::vector<std::string>{"b"}));
}

}  // namespace
}  // namespace fleet::node
