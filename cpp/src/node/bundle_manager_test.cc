// Tests of BundleManager: two-phase reservation of placement group bundles
// against NodeResources, and what a release revokes. No sockets.
#include "node/bundle_manager.h"

#include <gtest/gtest.h>

#include <optional>

namespace fleet::node {
namespace {

ResourceSet R(std::map<std::string, double> m) { return FromDoubles(m); }

int64_t Get(const ResourceSet& r, const std::string& k) {
  auto it = r.find(k);
  return it == r.end() ? 0 : it->second;
}

class BundleManagerTest : public ::testing::Test {
 protected:
  BundleManagerTest()
      : bundles_(resources_, {.revoke = [this](const std::set<std::string>& n) { revoked_.push_back(n); },
                              .resources_changed = [this] { changed_++; },
                              .schedule = [this] { scheduled_++; }}) {}

  NodeResources resources_{R({{"CPU", 4}, {"GPU", 1}})};
  std::vector<std::set<std::string>> revoked_;
  int changed_ = 0;
  int scheduled_ = 0;
  BundleManager bundles_;
  const std::string pg_ = std::string("\xab\xcd", 2);  // hex "abcd"
};

TEST_F(BundleManagerTest, PrepareHoldsTheResourcesCommitAddsTheGroupResources) {
  ASSERT_TRUE(bundles_.Prepare(pg_, {{0, R({{"CPU", 1}})}, {1, R({{"CPU", 2}})}}).ok());
  EXPECT_EQ(Get(resources_.available(), "CPU"), 1 * kUnit);
  EXPECT_EQ(Get(resources_.total(), "CPU_group_abcd"), 0);  // not usable before commit
  EXPECT_EQ(changed_, 1);
  EXPECT_EQ(scheduled_, 0);

  EXPECT_TRUE(bundles_.Commit(pg_));
  const ResourceSet& total = resources_.total();
  EXPECT_EQ(Get(total, "CPU_group_0_abcd"), 1 * kUnit);
  EXPECT_EQ(Get(total, "CPU_group_1_abcd"), 2 * kUnit);
  EXPECT_EQ(Get(total, "CPU_group_abcd"), 3 * kUnit);
  EXPECT_EQ(Get(total, "bundle_group_0_abcd"), 1000 * kUnit);
  EXPECT_EQ(Get(total, "bundle_group_abcd"), 2000 * kUnit);
  EXPECT_EQ(Get(resources_.available(), "CPU_group_abcd"), 3 * kUnit);
  EXPECT_EQ(scheduled_, 1);
  EXPECT_FALSE(bundles_.Commit(pg_));  // nothing new
  EXPECT_FALSE(bundles_.Commit("other"));
}

TEST_F(BundleManagerTest, PrepareThatDoesNotFitTakesNothing) {
  const ResourceSet before = resources_.available();
  Status s = bundles_.Prepare(pg_, {{0, R({{"CPU", 3}})}, {1, R({{"CPU", 2}})}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bundle 1 {CPU: 2} does not fit"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("{CPU: 1, GPU: 1}"), std::string::npos) << s.message();  // what was free
  EXPECT_EQ(resources_.available(), before);
  EXPECT_TRUE(bundles_.Indexes(pg_).empty());
  EXPECT_EQ(changed_, 0);
  EXPECT_FALSE(bundles_.Prepare(pg_, {{0, R({{"GPU", 2}})}}).ok());
}

TEST_F(BundleManagerTest, PrepareAgainReplacesTheSameBundles) {
  ASSERT_TRUE(bundles_.Prepare(pg_, {{0, R({{"CPU", 1}})}}).ok());
  ASSERT_TRUE(bundles_.Prepare(pg_, {{0, R({{"CPU", 2}})}, {1, R({{"CPU", 1}})}}).ok());
  EXPECT_EQ(bundles_.Indexes(pg_), (std::vector<int>{0, 1}));
  EXPECT_EQ(Get(resources_.available(), "CPU"), 1 * kUnit);  // 2 + 1 held, not 1 + 2 + 1
}

TEST_F(BundleManagerTest, ReleaseOfOneBundleKeepsTheOthers) {
  ASSERT_TRUE(bundles_.Prepare(pg_, {{0, R({{"CPU", 1}})}, {1, R({{"CPU", 2}})}}).ok());
  ASSERT_TRUE(bundles_.Commit(pg_));
  scheduled_ = 0;
  EXPECT_TRUE(bundles_.Release(pg_, {0}));
  EXPECT_EQ(bundles_.Indexes(pg_), (std::vector<int>{1}));
  // Bundle 0's own resources go, and its share of the group-wide ones.
  const ResourceSet& total = resources_.total();
  EXPECT_EQ(total.count("CPU_group_0_abcd"), 0u);
  EXPECT_EQ(total.count("bundle_group_0_abcd"), 0u);
  EXPECT_EQ(Get(total, "CPU_group_1_abcd"), 2 * kUnit);
  EXPECT_EQ(Get(total, "CPU_group_abcd"), 2 * kUnit);
  EXPECT_EQ(Get(total, "bundle_group_abcd"), 1000 * kUnit);
  EXPECT_EQ(Get(resources_.available(), "CPU"), 2 * kUnit);  // bundle 0's CPU came back
  // Only leases of bundle 0's own resources are revoked: a lease holding
  // group-wide amounts may run in bundle 1.
  ASSERT_EQ(revoked_.size(), 1u);
  EXPECT_EQ(revoked_[0], (std::set<std::string>{"CPU_group_0_abcd", "bundle_group_0_abcd"}));
  EXPECT_EQ(scheduled_, 1);

  // The whole group: everything goes, group-wide names revoked too.
  EXPECT_TRUE(bundles_.Release(pg_, {}));
  EXPECT_TRUE(bundles_.Indexes(pg_).empty());
  EXPECT_EQ(resources_.total(), R({{"CPU", 4}, {"GPU", 1}}));
  EXPECT_EQ(resources_.available(), R({{"CPU", 4}, {"GPU", 1}}));
  ASSERT_EQ(revoked_.size(), 2u);
  EXPECT_TRUE(revoked_[1].count("CPU_group_abcd"));
  EXPECT_TRUE(revoked_[1].count("CPU_group_1_abcd"));
  EXPECT_FALSE(bundles_.Release(pg_, {}));  // nothing left
}

TEST_F(BundleManagerTest, ReleaseBeforeCommitOnlyGivesBackTheHeldResources) {
  ASSERT_TRUE(bundles_.Prepare(pg_, {{0, R({{"CPU", 1}, {"GPU", 1}})}}).ok());
  EXPECT_TRUE(bundles_.Release(pg_, {}));
  EXPECT_TRUE(revoked_.empty());  // nothing was usable yet
  EXPECT_EQ(resources_.available(), R({{"CPU", 4}, {"GPU", 1}}));
  EXPECT_EQ(resources_.total(), R({{"CPU", 4}, {"GPU", 1}}));
}

TEST(BundleManagerLeaseTest, RevokedLeasesGiveBackBeforeTheGroupResourcesGo) {
  NodeResources resources(R({{"CPU", 4}}));
  std::optional<Allocation> lease;
  BundleManager bundles(resources, {.revoke = [&](const std::set<std::string>& names) {
                                      // As LeaseManager: the lease holding them ends.
                                      ASSERT_TRUE(names.count("CPU_group_0_abcd"));
                                      resources.Release(*lease);
                                      lease.reset();
                                    },
                                    .resources_changed = [] {}, .schedule = [] {}});
  const std::string pg("\xab\xcd", 2);
  ASSERT_TRUE(bundles.Prepare(pg, {{0, R({{"CPU", 2}})}}).ok());
  ASSERT_TRUE(bundles.Commit(pg));
  lease = resources.TryAcquire(R({{"CPU_group_0_abcd", 1}}));
  ASSERT_TRUE(lease);
  ASSERT_TRUE(bundles.Release(pg, {}));
  EXPECT_FALSE(lease);
  EXPECT_EQ(resources.available(), R({{"CPU", 4}}));  // no group resource left behind
  EXPECT_EQ(resources.total(), R({{"CPU", 4}}));
}

TEST(BundleManagerGpuTest, LeasesInABundleGetTheBundlesGpuIds) {
  NodeResources resources(R({{"CPU", 4}, {"GPU", 3}}));
  BundleManager bundles(resources, {.revoke = [](const std::set<std::string>&) {},
                                    .resources_changed = [] {},
                                    .schedule = [] {}});
  auto other = resources.TryAcquire(R({{"GPU", 1}}));  // device 0 is taken outside the group
  ASSERT_TRUE(other);
  const std::string pg("\xab\xcd", 2);
  ASSERT_TRUE(bundles.Prepare(pg, {{0, R({{"GPU", 1}})}, {1, R({{"GPU", 1}})}}).ok());
  ASSERT_TRUE(bundles.Commit(pg));
  auto in0 = resources.TryAcquire(R({{"GPU_group_0_abcd", 1}}));
  ASSERT_TRUE(in0);
  EXPECT_EQ(in0->GpuIds(), std::vector<int>{1});  // bundle 0 holds device 1
  auto in1 = resources.TryAcquire(R({{"GPU_group_1_abcd", 0.5}}));
  ASSERT_TRUE(in1);
  EXPECT_EQ(in1->GpuIds(), std::vector<int>{2});
  auto any = resources.TryAcquire(R({{"GPU_group_abcd", 0.5}}));  // a share of a group device
  ASSERT_TRUE(any);
  ASSERT_EQ(any->GpuIds().size(), 1u);
  EXPECT_NE(any->GpuIds()[0], 0);
  resources.Release(*in0);
  auto again = resources.TryAcquire(R({{"GPU_group_0_abcd", 1}}));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->GpuIds(), std::vector<int>{1});
  resources.Release(*again);
  resources.Release(*in1);
  resources.Release(*any);
  EXPECT_TRUE(bundles.Release(pg, {}));
  resources.Release(*other);
  EXPECT_EQ(resources.available(), resources.total());
  auto whole = resources.TryAcquire(R({{"GPU", 3}}));  // every device is whole again
  ASSERT_TRUE(whole);
}

}  // namespace
}  // namespace fleet::node
