// Tests of lease placement: each policy (default, SPREAD, NODE_AFFINITY hard
// and soft), infeasible requests, the spillback-once rule, spill accounting,
// and placement group bundle resources. No sockets: views are built by hand.
#include "node/scheduling/lease_scheduler.h"

#include <gtest/gtest.h>

#include "node/scheduling/policies.h"

namespace fleet::node::scheduling {
namespace {

using Kind = Placement::Kind;

ResourceSet R(std::map<std::string, double> m) { return FromDoubles(m); }

LeaseRequest Req(std::map<std::string, double> resources, std::string strategy = "") {
  LeaseRequest r;
  r.resources = R(resources);
  r.strategy = ParseSchedulingStrategy(strategy);
  return r;
}

class LeaseSchedulerTest : public ::testing::Test {
 protected:
  LeaseScheduler scheduler_{"local"};
  NodeResources local_{R({{"CPU", 2}})};
};

// ---- default policy

TEST_F(LeaseSchedulerTest, DefaultRunsHereWhileItFits) {
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 8}}), R({{"CPU", 8}})});
  LeaseRequest r = Req({{"CPU", 1}});
  Placement p = scheduler_.Place(r, local_);
  EXPECT_EQ(p.kind, Kind::kQueueHere);
  EXPECT_FALSE(r.placed);  // placed again next pass
}

TEST_F(LeaseSchedulerTest, DefaultSpillsToLeastLoadedNodeWithFreeResources) {
  auto busy = local_.TryAcquire(R({{"CPU", 2}}));
  ASSERT_TRUE(busy);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 1}})});  // 75% loaded
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 4}}), R({{"CPU", 3}})});  // 25% loaded
  scheduler_.SetNode("d", {"d:1", R({{"CPU", 4}}), R({{"CPU", 4}, {"GPU", 0}})});
  scheduler_.SetNode("e", {"e:1", R({{"CPU", 1}}), R({})});          // nothing free
  LeaseRequest r = Req({{"CPU", 1}});
  Placement p = scheduler_.Place(r, local_);
  // c (25%) and d (0%) both score 0 below the 50% threshold: the smallest id.
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");
  EXPECT_EQ(p.address, "c:1");
  // Past the threshold the load counts: the emptier node.
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 4}}), R({{"CPU", 2}})});  // 50% loaded
  LeaseRequest r2 = Req({{"CPU", 1}});
  p = scheduler_.Place(r2, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "d");
}

TEST_F(LeaseSchedulerTest, DefaultQueuesHereWhenOnlyFeasibleHere) {
  auto busy = local_.TryAcquire(R({{"CPU", 2}}));
  ASSERT_TRUE(busy);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 4}}), R({})});  // feasible, nothing free
  LeaseRequest r = Req({{"CPU", 1}});
  EXPECT_EQ(scheduler_.Place(r, local_).kind, Kind::kQueueHere);
}

TEST_F(LeaseSchedulerTest, DefaultSpillsToANodeThatCouldEverRunIt) {
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 1}}), R({})});
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 8}, {"GPU", 1}}), R({})});
  LeaseRequest r = Req({{"GPU", 1}});  // never here, busy there
  Placement p = scheduler_.Place(r, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");
}

TEST_F(LeaseSchedulerTest, InfeasibleEverywhereQueuesHere) {
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 4}})});
  for (std::string strategy : {"", "SPREAD"}) {
    LeaseRequest r = Req({{"GPU", 1}}, strategy);
    EXPECT_EQ(scheduler_.Place(r, local_).kind, Kind::kQueueHere) << strategy;
    EXPECT_FALSE(scheduler_.FeasibleAnywhere(r, local_));
  }
  LeaseRequest fine = Req({{"CPU", 4}});
  EXPECT_TRUE(scheduler_.FeasibleAnywhere(fine, local_));  // on b
}

TEST_F(LeaseSchedulerTest, PlacementResourcesMustFitTotals) {
  // An actor holds nothing while alive but needs a node with a CPU.
  NodeResources no_cpu(R({{"memory", 100}}));
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 1}}), R({{"CPU", 1}})});
  LeaseRequest r;
  r.placement = R({{"CPU", 1}});
  Placement p = scheduler_.Place(r, no_cpu);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "b");
}

// ---- spillback accounting and the spillback-once rule

TEST_F(LeaseSchedulerTest, SpillsCountAgainstTheTargetUntilTheNextView) {
  auto busy = local_.TryAcquire(R({{"CPU", 2}}));
  ASSERT_TRUE(busy);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 2}}), R({{"CPU", 2}})});
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 2}}), R({{"CPU", 1}})});
  std::vector<std::string> targets;
  for (int i = 0; i < 3; i++) {
    LeaseRequest r = Req({{"CPU", 1}});
    targets.push_back(scheduler_.Place(r, local_).node_id);
  }
  // b (0% loaded), then b and c tie at 50% (smallest id wins), then c.
  EXPECT_EQ(targets, (std::vector<std::string>{"b", "b", "c"}));
  EXPECT_EQ(scheduler_.view().at("b").free.count("CPU") ? scheduler_.view().at("b").free.at("CPU") : 0, 0);

  // A new view replaces the accounting.
  rpc::ClusterView view;
  auto* n = view.add_nodes();
  n->set_node_id("b");
  n->set_alive(true);
  n->set_address("b:2");
  (*n->mutable_total())["CPU"] = 2;
  (*n->mutable_available())["CPU"] = 2;
  auto* self = view.add_nodes();
  self->set_node_id("local");
  self->set_alive(true);
  auto* dead = view.add_nodes();
  dead->set_node_id("z");
  dead->set_alive(false);
  scheduler_.SetView(view);
  ASSERT_EQ(scheduler_.view().size(), 1u);  // neither this node nor dead ones
  EXPECT_EQ(scheduler_.view().at("b").address, "b:2");
  EXPECT_EQ(scheduler_.view().at("b").free.at("CPU"), 2 * kUnit);
}

TEST_F(LeaseSchedulerTest, SpilledRequestIsNeverSpilledAgain) {
  auto busy = local_.TryAcquire(R({{"CPU", 2}}));
  ASSERT_TRUE(busy);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 8}}), R({{"CPU", 8}})});
  for (std::string strategy : {"", "SPREAD", "NODE_AFFINITY"}) {
    LeaseRequest r = Req({{"CPU", 1}}, strategy);
    r.affinity_node_id = "b";
    r.spilled = true;
    EXPECT_EQ(scheduler_.Place(r, local_).kind, Kind::kQueueHere) << strategy;
  }
  // Infeasible here too: it still waits here.
  LeaseRequest gpu = Req({{"GPU", 1}});
  gpu.spilled = true;
  EXPECT_EQ(scheduler_.Place(gpu, local_).kind, Kind::kQueueHere);
  EXPECT_EQ(scheduler_.view().at("b").free.at("CPU"), 8 * kUnit);  // nothing counted
}

// ---- SPREAD

TEST_F(LeaseSchedulerTest, SpreadRoundRobinsOverNodesWithFreeResources) {
  scheduler_.SetNode("a", {"a:1", R({{"CPU", 100}}), R({{"CPU", 100}})});
  scheduler_.SetNode("m", {"m:1", R({{"CPU", 100}}), R({{"CPU", 100}})});
  scheduler_.SetNode("x", {"x:1", R({{"CPU", 100}}), R({})});  // busy: skipped while others are free
  std::vector<std::string> picks;
  for (int i = 0; i < 6; i++) {
    LeaseRequest r = Req({{"CPU", 1}}, "SPREAD");
    Placement p = scheduler_.Place(r, local_);
    if (p.kind == Kind::kRunHere) {
      EXPECT_TRUE(r.placed);
      picks.push_back("local");
    } else {
      ASSERT_EQ(p.kind, Kind::kSpill);
      picks.push_back(p.node_id);
    }
  }
  EXPECT_EQ(picks, (std::vector<std::string>{"a", "local", "m", "a", "local", "m"}));
}

TEST_F(LeaseSchedulerTest, SpreadFallsBackToFeasibleNodesWhenNoneIsFree) {
  auto busy = local_.TryAcquire(R({{"CPU", 2}}));
  ASSERT_TRUE(busy);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 4}}), R({})});
  std::vector<Kind> kinds;
  for (int i = 0; i < 2; i++) {
    LeaseRequest r = Req({{"CPU", 1}}, "SPREAD");
    kinds.push_back(scheduler_.Place(r, local_).kind);
  }
  EXPECT_EQ(kinds, (std::vector<Kind>{Kind::kSpill, Kind::kRunHere}));  // "b" < "local"
}

TEST_F(LeaseSchedulerTest, PlacedRequestIsNotPlacedAgain) {
  LeaseRequest r = Req({{"CPU", 1}}, "SPREAD");
  ASSERT_EQ(scheduler_.Place(r, local_).kind, Kind::kRunHere);
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 4}})});
  EXPECT_EQ(scheduler_.Place(r, local_).kind, Kind::kQueueHere);
}

// ---- NODE_AFFINITY

TEST_F(LeaseSchedulerTest, AffinityHard) {
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 1}}), R({})});
  LeaseRequest here = Req({{"CPU", 1}}, "NODE_AFFINITY");
  here.affinity_node_id = "local";
  EXPECT_EQ(scheduler_.Place(here, local_).kind, Kind::kRunHere);

  LeaseRequest there = Req({{"CPU", 1}}, "NODE_AFFINITY");
  there.affinity_node_id = "b";  // busy there: still goes there
  Placement p = scheduler_.Place(there, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "b");

  LeaseRequest never = Req({{"GPU", 1}}, "NODE_AFFINITY");
  never.affinity_node_id = "b";  // hard: even if it can never run there
  EXPECT_EQ(scheduler_.Place(never, local_).kind, Kind::kSpill);

  LeaseRequest dead = Req({{"CPU", 1}}, "NODE_AFFINITY");
  dead.affinity_node_id = std::string("\x01\x02", 2);
  p = scheduler_.Place(dead, local_);
  ASSERT_EQ(p.kind, Kind::kFail);
  EXPECT_NE(p.error.find("node_id=0102"), std::string::npos) << p.error;
  EXPECT_NE(p.error.find("soft=False"), std::string::npos);
}

TEST_F(LeaseSchedulerTest, AffinitySoftFallsBackToTheDefault) {
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 1}}), R({{"CPU", 1}})});
  // Dead target: the default policy (fits here).
  LeaseRequest dead = Req({{"CPU", 1}}, "NODE_AFFINITY");
  dead.affinity_node_id = "gone";
  dead.affinity_soft = true;
  Placement p = scheduler_.Place(dead, local_);
  EXPECT_EQ(p.kind, Kind::kQueueHere);
  EXPECT_FALSE(dead.placed);

  // A target that can never run it: the default policy (spills to b).
  LeaseRequest big = Req({{"CPU", 1}, {"custom", 1}}, "NODE_AFFINITY");
  big.affinity_node_id = "local";
  big.affinity_soft = true;
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 1}, {"custom", 1}}), R({{"CPU", 1}, {"custom", 1}})});
  p = scheduler_.Place(big, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");

  // A live target that could run it: there, even when busy.
  LeaseRequest live = Req({{"CPU", 1}}, "NODE_AFFINITY");
  live.affinity_node_id = "b";
  live.affinity_soft = true;
  p = scheduler_.Place(live, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "b");
}

// ---- placement group bundles

TEST_F(LeaseSchedulerTest, BundleResourcesFindTheNodeHoldingTheBundle) {
  // Bundle 0 of group "pg" is committed on node c: only c has its resources.
  scheduler_.SetNode("b", {"b:1", R({{"CPU", 8}}), R({{"CPU", 8}})});
  scheduler_.SetNode("c", {"c:1", R({{"CPU", 1}, {"CPU_group_0_pg", 1}, {"bundle_group_0_pg", 1000}}),
                           R({{"CPU_group_0_pg", 1}, {"bundle_group_0_pg", 1000}})});
  LeaseRequest r = Req({{"CPU_group_0_pg", 1}, {"bundle_group_0_pg", 0.001}});
  Placement p = scheduler_.Place(r, local_);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");
  // Once the bundle is here, it runs here.
  NodeResources with_bundle(R({{"CPU", 2}}));
  with_bundle.Add(R({{"CPU_group_0_pg", 1}, {"bundle_group_0_pg", 1000}}));
  LeaseRequest again = Req({{"CPU_group_0_pg", 1}, {"bundle_group_0_pg", 0.001}});
  EXPECT_EQ(scheduler_.Place(again, with_bundle).kind, Kind::kQueueHere);
}

// ---- the pure helpers

TEST(PoliciesTest, CriticalUtilizationIsTheMostUsedOfCpuMemoryAndStore) {
  EXPECT_DOUBLE_EQ(CriticalUtilization(R({{"CPU", 4}}), R({{"CPU", 1}})), 0.75);
  EXPECT_DOUBLE_EQ(CriticalUtilization(R({{"CPU", 4}}), R({})), 1.0);
  EXPECT_DOUBLE_EQ(CriticalUtilization(R({{"GPU", 4}}), R({})), 0.0);  // GPUs do not count
  EXPECT_DOUBLE_EQ(
      CriticalUtilization(R({{"CPU", 4}, {"memory", 4}}), R({{"CPU", 3}, {"memory", 1}})), 0.75);
  EXPECT_DOUBLE_EQ(HybridScore(R({{"CPU", 4}}), R({{"CPU", 3}}), 0.5), 0.0);  // below: 0
  EXPECT_DOUBLE_EQ(HybridScore(R({{"CPU", 4}}), R({{"CPU", 2}}), 0.5), 0.5);  // at: counts
}

// ---- the hybrid threshold (Ray's scheduler_spread_threshold)

TEST(HybridPolicyTest, PacksHereUntilTheThresholdThenSpreads) {
  // Two 4-CPU nodes: the first two tasks stay here (0% then 25%, below 50%);
  // at 50% here the idle remote node scores lower, and takes the next two
  // (its 25% counts as 0 while this node's 50% does not).
  LeaseScheduler scheduler("local");
  NodeResources local(R({{"CPU", 4}}));
  scheduler.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 4}})});
  std::vector<std::string> where;
  std::vector<Allocation> held;
  for (int i = 0; i < 4; i++) {
    LeaseRequest r = Req({{"CPU", 1}});
    Placement p = scheduler.Place(r, local);
    if (p.kind == Kind::kQueueHere) {
      held.push_back(*local.TryAcquire(r.resources));  // granted here
      where.push_back("local");
    } else {
      where.push_back(p.node_id);
    }
  }
  EXPECT_EQ(where, (std::vector<std::string>{"local", "local", "b", "b"}));
}

TEST(HybridPolicyTest, ThresholdZeroSpreadsAndOneKeepsWorkHere) {
  for (double threshold : {0.0, 1.0}) {
    LeaseScheduler scheduler("local", threshold);
    NodeResources local(R({{"CPU", 4}}));
    auto one = local.TryAcquire(R({{"CPU", 1}}));
    scheduler.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 4}})});
    LeaseRequest r = Req({{"CPU", 1}});
    Placement p = scheduler.Place(r, local);
    if (threshold == 0.0) {
      ASSERT_EQ(p.kind, Kind::kSpill);  // 25% here > 0% there
      EXPECT_EQ(p.node_id, "b");
    } else {
      EXPECT_EQ(p.kind, Kind::kQueueHere);  // everything below 100% counts as 0
    }
  }
}

TEST(HybridPolicyTest, CpuWorkAvoidsGpuNodesWhileOthersHaveRoom) {
  LeaseScheduler scheduler("local", 0.0);
  NodeResources local(R({{"CPU", 2}, {"GPU", 1}}));
  scheduler.SetNode("b", {"b:1", R({{"CPU", 2}}), R({{"CPU", 1}})});  // 50% used, no GPU
  LeaseRequest cpu = Req({{"CPU", 1}});
  Placement p = scheduler.Place(cpu, local);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "b");
  LeaseRequest gpu = Req({{"GPU", 1}});
  EXPECT_EQ(scheduler.Place(gpu, local).kind, Kind::kQueueHere);
}

// ---- label selectors

TEST(LabelPolicyTest, OnlyMatchingNodesRunIt) {
  LeaseScheduler scheduler("local");
  scheduler.SetLocalLabels({{"ray.io/node-id", "local"}, {"zone", "a"}});
  NodeResources local(R({{"CPU", 4}}));
  scheduler.SetNode("b", {"b:1", R({{"CPU", 4}}), R({{"CPU", 4}}), {{"zone", "b"}}});
  scheduler.SetNode("c", {"c:1", R({{"CPU", 4}}), R({{"CPU", 4}}), {{"zone", "c"}}});
  auto with = [](std::map<std::string, std::string> sel) {
    LeaseRequest r = Req({{"CPU", 1}});
    r.labels = LabelSelector::Parse(sel);
    return r;
  };
  LeaseRequest here = with({{"zone", "a"}});
  EXPECT_EQ(scheduler.Place(here, local).kind, Kind::kQueueHere);
  EXPECT_TRUE(scheduler.LabelsMatchHere(here));
  LeaseRequest to_c = with({{"zone", "c"}});
  Placement p = scheduler.Place(to_c, local);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");
  EXPECT_FALSE(scheduler.LabelsMatchHere(to_c));
  LeaseRequest not_a = with({{"zone", "!in(a, b)"}});
  p = scheduler.Place(not_a, local);
  ASSERT_EQ(p.kind, Kind::kSpill);
  EXPECT_EQ(p.node_id, "c");
  LeaseRequest nowhere = with({{"zone", "d"}});
  EXPECT_EQ(scheduler.Place(nowhere, local).kind, Kind::kQueueHere);  // waits, warned
  EXPECT_FALSE(scheduler.FeasibleAnywhere(nowhere, local));
  // SPREAD keeps to the matching nodes too.
  for (int i = 0; i < 4; i++) {
    LeaseRequest s = with({{"zone", "in(b,c)"}});
    s.strategy = SchedulingStrategy::kSpread;
    EXPECT_EQ(scheduler.Place(s, local).kind, Kind::kSpill);
  }
}

}  // namespace
}  // namespace fleet::node::scheduling
