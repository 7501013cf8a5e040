// Tests of actor placement: labels with fallbacks, hard and soft affinity,
// zero-resource actors spread at random, and the hybrid policy around the
// owner's node. Node tables are built by hand.
#include "gcs/actor_placement.h"

#include <gtest/gtest.h>

#include <set>

namespace fleet::gcs {
namespace {

rpc::NodeInfo Node(const std::string& id, double cpus, double free_cpus,
                   std::map<std::string, std::string> labels = {}) {
  rpc::NodeInfo n;
  n.set_node_id(id);
  n.set_alive(true);
  (*n.mutable_total())["CPU"] = cpus;
  (*n.mutable_available())["CPU"] = free_cpus;
  for (auto& [k, v] : labels) (*n.mutable_labels())[k] = v;
  return n;
}

rpc::ActorInfo Actor(double cpus) {
  rpc::ActorInfo a;
  if (cpus > 0) (*a.mutable_resources())["CPU"] = cpus;
  (*a.mutable_placement())["CPU"] = 1;
  return a;
}

std::string Where(const rpc::ActorInfo& a, const std::vector<rpc::NodeInfo>& nodes,
                  double threshold = 0.5, uint64_t random = 0) {
  uint64_t turn = 0;
  ActorPlacement p = PlaceActor({a, nodes, threshold, random}, turn);
  return p.node ? p.node->node_id() : (p.dead_reason.empty() ? "-" : "dead");
}

TEST(ActorPlacementTest, HybridPrefersTheOwnersNodeBelowTheThreshold) {
  rpc::ActorInfo a = Actor(1);
  a.set_owner_node_id("b");
  std::vector<rpc::NodeInfo> nodes{Node("a", 4, 4), Node("b", 4, 3)};
  EXPECT_EQ(Where(a, nodes), "b");  // 25% used: counts as 0, ties go to the owner
  nodes[1] = Node("b", 4, 2);
  EXPECT_EQ(Where(a, nodes), "a");  // 50%: the emptier node
  EXPECT_EQ(Where(a, nodes, 1.0), "b");
}

TEST(ActorPlacementTest, ZeroResourceActorsGoToARandomNode) {
  rpc::ActorInfo a = Actor(0);
  a.set_owner_node_id("a");
  std::vector<rpc::NodeInfo> nodes{Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 1)};
  std::set<std::string> seen;
  for (uint64_t r = 0; r < 3; r++) seen.insert(Where(a, nodes, 0.5, r));
  EXPECT_EQ(seen.size(), 3u);
}

TEST(ActorPlacementTest, LabelSelectorAndFallbacks) {
  std::vector<rpc::NodeInfo> nodes{Node("a", 4, 4, {{"zone", "a"}}),
                                   Node("b", 4, 4, {{"zone", "b"}})};
  rpc::ActorInfo a = Actor(1);
  (*a.mutable_label_selector())["zone"] = "b";
  EXPECT_EQ(Where(a, nodes), "b");
  (*a.mutable_label_selector())["zone"] = "c";
  EXPECT_EQ(Where(a, nodes), "-");  // waits for such a node
  (*a.add_fallback_strategy()->mutable_selector())["zone"] = "in(d, e)";
  (*a.add_fallback_strategy()->mutable_selector())["zone"] = "!b";
  EXPECT_EQ(Where(a, nodes), "a");  // the second fallback
}

TEST(ActorPlacementTest, NodeAffinity) {
  std::vector<rpc::NodeInfo> nodes{Node("a", 4, 4), Node("b", 4, 0)};
  rpc::ActorInfo a = Actor(1);
  a.set_scheduling_strategy("NODE_AFFINITY");
  a.set_affinity_node_id("b");
  EXPECT_EQ(Where(a, nodes), "b");  // busy, but that node
  a.set_affinity_node_id("zz");
  EXPECT_EQ(Where(a, nodes), "dead");
  a.set_affinity_soft(true);
  EXPECT_EQ(Where(a, nodes), "a");
}

TEST(ActorPlacementTest, SpreadRoundRobins) {
  std::vector<rpc::NodeInfo> nodes{Node("a", 4, 4), Node("b", 4, 4)};
  rpc::ActorInfo a = Actor(1);
  a.set_scheduling_strategy("SPREAD");
  uint64_t turn = 0;
  std::vector<std::string> got;
  for (int i = 0; i < 4; i++) got.push_back(PlaceActor({a, nodes, 0.5, 0}, turn).node->node_id());
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "a", "b"}));
}

TEST(ActorPlacementTest, CpuActorsKeepOffGpuNodesWhileOthersHaveRoom) {
  rpc::NodeInfo gpu = Node("a", 4, 4);
  (*gpu.mutable_total())["GPU"] = 1;
  (*gpu.mutable_available())["GPU"] = 1;
  std::vector<rpc::NodeInfo> nodes{gpu, Node("b", 4, 3)};
  rpc::ActorInfo a = Actor(1);
  a.set_owner_node_id("a");  // even from the GPU node
  EXPECT_EQ(Where(a, nodes), "b");
  nodes[1] = Node("b", 4, 0);  // no room elsewhere: the GPU node
  EXPECT_EQ(Where(a, nodes), "a");
  (*a.mutable_resources())["GPU"] = 1;
  nodes[1] = Node("b", 4, 4);
  EXPECT_EQ(Where(a, nodes), "a");
}

}  // namespace
}  // namespace fleet::gcs
