// Tests of PlanBundles: where each strategy puts a group's bundles.
#include "gcs/placement_group_manager.h"

#include <gtest/gtest.h>

#include <set>

namespace fleet::gcs {
namespace {

rpc::NodeInfo Node(const std::string& id, double cpus_free, double cpus_total = 4) {
  rpc::NodeInfo n;
  n.set_node_id(id);
  n.set_alive(true);
  (*n.mutable_total())["CPU"] = cpus_total;
  (*n.mutable_available())["CPU"] = cpus_free;
  return n;
}

// PlanBundles takes pointers into the node table: keep the nodes alive.
// Node ids are shown as their bytes ("a"), nil as "".
Result<std::vector<std::string>> Plan(const std::vector<rpc::Bundle>& bundles, const std::string& strategy,
                                      const std::vector<rpc::NodeInfo>& nodes,
                                      const std::vector<std::string>& fixed) {
  std::vector<const rpc::NodeInfo*> ptrs;
  for (auto& n : nodes) ptrs.push_back(&n);
  std::vector<NodeId> fixed_ids;
  for (auto& f : fixed) fixed_ids.push_back(NodeId::FromBinary(f));
  auto s = ParseBundleStrategy(strategy);
  if (!s.ok()) return s.status();
  auto plan = PlanBundles(bundles, s.value(), ptrs, fixed_ids);
  if (!plan.ok()) return plan.status();
  std::vector<std::string> out;
  for (auto& id : plan.value()) out.push_back(id.Binary());
  return out;
}

TEST(PlanBundlesTest, StrategiesParseByTheirRayNames) {
  for (const char* name : {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}) {
    auto s = ParseBundleStrategy(name);
    ASSERT_TRUE(s.ok()) << name;
    EXPECT_STREQ(BundleStrategyName(s.value()), name);
  }
  auto bad = ParseBundleStrategy("pack");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("use PACK, SPREAD, STRICT_PACK or STRICT_SPREAD"), std::string::npos);
}

std::vector<rpc::Bundle> Bundles(int n, double cpus) {
  std::vector<rpc::Bundle> out(n);
  for (int i = 0; i < n; i++) {
    out[i].set_index(i);
    (*out[i].mutable_resources())["CPU"] = cpus;
  }
  return out;
}

TEST(PlanBundlesTest, PackFillsOneNodeBeforeAnother) {
  auto plan = Plan(Bundles(3, 1), "PACK", {Node("a", 4), Node("b", 4)}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(std::set<std::string>(plan->begin(), plan->end()).size(), 1u);
  // Too big for one node: PACK spills over to a second.
  auto big = Plan(Bundles(3, 3), "PACK", {Node("a", 4), Node("b", 4), Node("c", 4)}, {});
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(std::set<std::string>(big->begin(), big->end()).size(), 3u);
}

// A small bundle placed first must not take the only room a bigger one has:
// the scarcest demands are placed first, whatever the bundles' order.
TEST(PlanBundlesTest, BiggerBundlesArePlacedFirst) {
  rpc::NodeInfo gpu_node = Node("c", 1, 1);
  (*gpu_node.mutable_total())["GPU"] = 1;
  (*gpu_node.mutable_available())["GPU"] = 1;
  std::vector<rpc::NodeInfo> nodes = {Node("a", 1, 1), Node("b", 2, 2), gpu_node};
  std::vector<rpc::Bundle> bundles = Bundles(3, 1);
  (*bundles[1].mutable_resources())["CPU"] = 2;
  (*bundles[2].mutable_resources())["GPU"] = 1;
  for (const char* strategy : {"PACK", "SPREAD", "STRICT_SPREAD"}) {
    auto plan = Plan(bundles, strategy, nodes, {});
    ASSERT_TRUE(plan.ok()) << strategy << ": " << plan.status().ToString();
    EXPECT_EQ(plan.value()[0], "a") << strategy;
    EXPECT_EQ(plan.value()[1], "b") << strategy;
    EXPECT_EQ(plan.value()[2], "c") << strategy;
  }
}

TEST(PlanBundlesTest, SpreadUsesDistinctNodesWhenItCan) {
  auto plan = Plan(Bundles(2, 1), "SPREAD", {Node("a", 4), Node("b", 4)}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_NE(plan.value()[0], plan.value()[1]);
  // More bundles than nodes: SPREAD reuses a node, STRICT_SPREAD cannot.
  EXPECT_TRUE(Plan(Bundles(3, 1), "SPREAD", {Node("a", 4), Node("b", 4)}, {}).ok());
  EXPECT_FALSE(Plan(Bundles(3, 1), "STRICT_SPREAD", {Node("a", 4), Node("b", 4)}, {}).ok());
}

TEST(PlanBundlesTest, StrictPackNeedsOneNodeForAll) {
  auto plan = Plan(Bundles(2, 2), "STRICT_PACK", {Node("a", 3), Node("b", 4)}, {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan.value()[0], "b");
  EXPECT_EQ(plan.value()[1], "b");
  EXPECT_FALSE(Plan(Bundles(2, 3), "STRICT_PACK", {Node("a", 4), Node("b", 4)}, {}).ok());
}

TEST(PlanBundlesTest, InfeasibleBundleIsNamed) {
  auto plan = Plan(Bundles(1, 16), "PACK", {Node("a", 4)}, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("infeasible"), std::string::npos);
  // Feasible by totals but not free now: not "infeasible".
  auto busy = Plan(Bundles(1, 2), "PACK", {Node("a", 1)}, {});
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().message().find("infeasible"), std::string::npos);
}

TEST(PlanBundlesTest, FixedBundlesStayAndStrictSpreadAvoidsTheirNodes) {
  auto plan = Plan(Bundles(2, 1), "STRICT_SPREAD", {Node("a", 4), Node("b", 1)}, {"a", ""});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan.value()[0], "a");
  EXPECT_EQ(plan.value()[1], "b");
}

}  // namespace
}  // namespace fleet::gcs
