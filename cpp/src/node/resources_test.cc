// Tests of NodeResources: fixed-point accounting, GPU instances, blocked workers.
#include "node/resources.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace fleet::node {
namespace {

int64_t Avail(const NodeResources& r, const std::string& k) {
  auto it = r.available().find(k);
  return it == r.available().end() ? 0 : it->second;
}

TEST(ResourcesTest, FromDoublesToDoublesDescribe) {
  ResourceSet r = FromDoubles({{"CPU", 2.0}, {"GPU", 0.5}, {"memory", 0.0}, {"custom", 0.0001}});
  EXPECT_EQ(r.size(), 3u);  // zero amounts are dropped
  EXPECT_EQ(r["CPU"], 2 * kUnit);
  EXPECT_EQ(r["GPU"], kUnit / 2);
  EXPECT_EQ(r["custom"], 1);
  EXPECT_EQ(r.count("memory"), 0u);

  // Rounds to the nearest unit of 1/10000, so 0.1 + 0.2 adds up exactly.
  ResourceSet tenth = FromDoubles({{"CPU", 0.1}});
  ResourceSet fifth = FromDoubles({{"CPU", 0.2}});
  ResourceSet three = FromDoubles({{"CPU", 0.3}});
  EXPECT_EQ(tenth["CPU"] + fifth["CPU"], three["CPU"]);

  auto d = ToDoubles(r);
  EXPECT_DOUBLE_EQ(d["CPU"], 2.0);
  EXPECT_DOUBLE_EQ(d["GPU"], 0.5);
  EXPECT_DOUBLE_EQ(d["custom"], 0.0001);
  EXPECT_EQ(FromDoubles(ToDoubles(r)), r);

  EXPECT_EQ(Describe(FromDoubles({{"CPU", 1}, {"GPU", 0.5}})), "{CPU: 1, GPU: 0.5}");
  EXPECT_EQ(Describe({}), "{}");
  EXPECT_EQ(Describe(FromDoubles({{"CPU", 4}})), "{CPU: 4}");
}

TEST(ResourcesTest, AcquireReleaseReturnsToTotals) {
  NodeResources res(FromDoubles({{"CPU", 4}, {"memory", 1000}}));
  const ResourceSet total = res.total();
  EXPECT_EQ(res.available(), total);

  auto a = res.TryAcquire(FromDoubles({{"CPU", 1}, {"memory", 100}}));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(Avail(res, "CPU"), 3 * kUnit);
  EXPECT_EQ(Avail(res, "memory"), 900 * kUnit);
  EXPECT_TRUE(a->gpus.empty());
  EXPECT_TRUE(a->GpuIds().empty());

  auto b = res.TryAcquire(FromDoubles({{"CPU", 3}}));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(Avail(res, "CPU"), 0);
  // Nothing left, though it is feasible.
  EXPECT_TRUE(res.Feasible(FromDoubles({{"CPU", 1}})));
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"CPU", 1}})).has_value());
  // A failed acquire takes nothing.
  EXPECT_EQ(Avail(res, "memory"), 900 * kUnit);

  res.Release(*a);
  res.Release(*b);
  EXPECT_EQ(res.available(), total);
  EXPECT_EQ(res.total(), total);
}

TEST(ResourcesTest, EmptyRequestAlwaysFits) {
  NodeResources res(FromDoubles({{"CPU", 1}}));
  EXPECT_TRUE(res.Feasible({}));
  auto a = res.TryAcquire({});
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->amounts.empty());
  res.Release(*a);
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, LargerThanTotalIsInfeasible) {
  NodeResources res(FromDoubles({{"CPU", 2}, {"GPU", 1}}));
  EXPECT_TRUE(res.Feasible(FromDoubles({{"CPU", 2}})));
  EXPECT_FALSE(res.Feasible(FromDoubles({{"CPU", 2.5}})));
  EXPECT_FALSE(res.Feasible(FromDoubles({{"GPU", 2}})));
  EXPECT_FALSE(res.Feasible(FromDoubles({{"TPU", 1}})));  // unknown resource
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"CPU", 3}})).has_value());
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"TPU", 1}})).has_value());
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, FractionalCpu) {
  NodeResources res(FromDoubles({{"CPU", 1}}));
  auto a = res.TryAcquire(FromDoubles({{"CPU", 0.5}}));
  auto b = res.TryAcquire(FromDoubles({{"CPU", 0.5}}));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(Avail(res, "CPU"), 0);
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"CPU", 0.0001}})).has_value());
  res.Release(*a);
  EXPECT_EQ(Avail(res, "CPU"), kUnit / 2);
  res.Release(*b);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);

  // Tenths add up exactly: ten of 0.1 fill the CPU, an eleventh does not fit.
  std::vector<Allocation> tenths;
  for (int i = 0; i < 10; ++i) {
    auto t = res.TryAcquire(FromDoubles({{"CPU", 0.1}}));
    ASSERT_TRUE(t.has_value()) << i;
    tenths.push_back(*t);
  }
  EXPECT_EQ(Avail(res, "CPU"), 0);
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"CPU", 0.1}})).has_value());
  for (auto& t : tenths) res.Release(t);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);
}

TEST(ResourcesTest, WholeGpusGetDistinctIds) {
  NodeResources res(FromDoubles({{"CPU", 8}, {"GPU", 2}}));
  auto a = res.TryAcquire(FromDoubles({{"GPU", 1}}));
  auto b = res.TryAcquire(FromDoubles({{"GPU", 1}}));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  ASSERT_EQ(a->GpuIds().size(), 1u);
  ASSERT_EQ(b->GpuIds().size(), 1u);
  std::vector<int> ids = {a->GpuIds()[0], b->GpuIds()[0]};
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<int>{0, 1}));
  EXPECT_EQ(Avail(res, "GPU"), 0);

  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"GPU", 1}})).has_value());
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"GPU", 0.5}})).has_value());

  // Giving one back frees exactly that device.
  int freed = b->GpuIds()[0];
  res.Release(*b);
  auto c = res.TryAcquire(FromDoubles({{"GPU", 1}}));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->GpuIds(), std::vector<int>{freed});
  res.Release(*a);
  res.Release(*c);
  EXPECT_EQ(res.available(), res.total());

  // Two whole GPUs in one request.
  auto both = res.TryAcquire(FromDoubles({{"GPU", 2}}));
  ASSERT_TRUE(both.has_value());
  EXPECT_EQ(both->GpuIds(), (std::vector<int>{0, 1}));
  res.Release(*both);
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, FractionalGpusShareOneDevice) {
  NodeResources res(FromDoubles({{"GPU", 2}}));
  auto a = res.TryAcquire(FromDoubles({{"GPU", 0.5}}));
  auto b = res.TryAcquire(FromDoubles({{"GPU", 0.5}}));
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  ASSERT_EQ(a->GpuIds().size(), 1u);
  ASSERT_EQ(b->GpuIds().size(), 1u);
  EXPECT_EQ(a->GpuIds(), b->GpuIds());
  ASSERT_EQ(a->gpus.size(), 1u);
  EXPECT_EQ(a->gpus[0].second, kUnit / 2);
  EXPECT_EQ(Avail(res, "GPU"), kUnit);

  // The other device is still whole.
  auto whole = res.TryAcquire(FromDoubles({{"GPU", 1}}));
  ASSERT_TRUE(whole.has_value());
  EXPECT_NE(whole->GpuIds(), a->GpuIds());
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"GPU", 0.1}})).has_value());

  res.Release(*a);
  // A freed half goes back to the shared device; a new half fits there.
  auto c = res.TryAcquire(FromDoubles({{"GPU", 0.5}}));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->GpuIds(), b->GpuIds());
  res.Release(*b);
  res.Release(*c);
  res.Release(*whole);
  EXPECT_EQ(res.available(), res.total());
  auto two = res.TryAcquire(FromDoubles({{"GPU", 2}}));
  EXPECT_TRUE(two.has_value());
}

TEST(ResourcesTest, FractionalGpuPrefersMostUsedDevice) {
  NodeResources res(FromDoubles({{"GPU", 2}}));
  auto a = res.TryAcquire(FromDoubles({{"GPU", 0.25}}));
  ASSERT_TRUE(a.has_value());
  auto b = res.TryAcquire(FromDoubles({{"GPU", 0.5}}));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->GpuIds(), a->GpuIds());  // packed on the already-used device
  auto c = res.TryAcquire(FromDoubles({{"GPU", 0.5}}));
  ASSERT_TRUE(c.has_value());
  EXPECT_NE(c->GpuIds(), a->GpuIds());  // 0.25 left there: too small, goes to the other
}

TEST(ResourcesTest, NonIntegerGpuAboveOneIsInfeasible) {
  NodeResources res(FromDoubles({{"GPU", 4}}));
  EXPECT_FALSE(res.Feasible(FromDoubles({{"GPU", 1.5}})));
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"GPU", 1.5}})).has_value());
  EXPECT_EQ(res.available(), res.total());
  EXPECT_TRUE(res.Feasible(FromDoubles({{"GPU", 1}})));
  EXPECT_TRUE(res.Feasible(FromDoubles({{"GPU", 0.5}})));
  EXPECT_TRUE(res.Feasible(FromDoubles({{"GPU", 3}})));
}

TEST(ResourcesTest, CustomResources) {
  NodeResources res(FromDoubles({{"CPU", 2}, {"accelerator_x", 2}, {"license", 1}}));
  auto a = res.TryAcquire(FromDoubles({{"CPU", 1}, {"accelerator_x", 1.5}}));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(Avail(res, "accelerator_x"), kUnit / 2);
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"accelerator_x", 1}})).has_value());
  auto b = res.TryAcquire(FromDoubles({{"license", 1}, {"accelerator_x", 0.5}}));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(Avail(res, "license"), 0);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);  // untouched by b
  EXPECT_FALSE(res.Feasible(FromDoubles({{"license", 2}})));
  EXPECT_TRUE(res.Feasible(FromDoubles({{"license", 1}, {"accelerator_x", 2}})));
  res.Release(*a);
  res.Release(*b);
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, BlockedWorkerReleasesAndRetakesCpu) {
  NodeResources res(FromDoubles({{"CPU", 2}}));
  auto a = res.TryAcquire(FromDoubles({{"CPU", 2}}));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(Avail(res, "CPU"), 0);

  // Blocked in get(): its CPU is free for others.
  res.ReleaseCpu(*a);
  EXPECT_EQ(a->released_cpu, 2 * kUnit);
  EXPECT_EQ(Avail(res, "CPU"), 2 * kUnit);
  res.ReleaseCpu(*a);  // a second call is a no-op
  EXPECT_EQ(Avail(res, "CPU"), 2 * kUnit);

  // Someone else takes one CPU meanwhile.
  auto b = res.TryAcquire(FromDoubles({{"CPU", 1}}));
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(Avail(res, "CPU"), kUnit);

  // Resuming takes the CPU back even though that oversubscribes the node.
  res.ForceAcquireCpu(*a);
  EXPECT_EQ(a->released_cpu, 0);
  EXPECT_EQ(Avail(res, "CPU"), -kUnit);
  res.ForceAcquireCpu(*a);  // no-op
  EXPECT_EQ(Avail(res, "CPU"), -kUnit);
  EXPECT_FALSE(res.TryAcquire(FromDoubles({{"CPU", 0.5}})).has_value());

  res.Release(*b);
  EXPECT_EQ(Avail(res, "CPU"), 0);
  res.Release(*a);
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, ReleaseWhileBlockedDoesNotDoubleCount) {
  NodeResources res(FromDoubles({{"CPU", 1}, {"GPU", 1}}));
  auto a = res.TryAcquire(FromDoubles({{"CPU", 1}, {"GPU", 1}}));
  ASSERT_TRUE(a.has_value());
  res.ReleaseCpu(*a);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);
  EXPECT_EQ(Avail(res, "GPU"), 0);  // only the CPU is given back
  // The worker finishes while still blocked: the CPU was already returned.
  res.Release(*a);
  EXPECT_EQ(res.available(), res.total());
}

TEST(ResourcesTest, ReleaseCpuWithoutCpuIsNoop) {
  NodeResources res(FromDoubles({{"CPU", 1}, {"GPU", 1}}));
  auto a = res.TryAcquire(FromDoubles({{"GPU", 1}}));
  ASSERT_TRUE(a.has_value());
  res.ReleaseCpu(*a);
  EXPECT_EQ(a->released_cpu, 0);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);
  res.ForceAcquireCpu(*a);
  EXPECT_EQ(Avail(res, "CPU"), kUnit);
  res.Release(*a);
  EXPECT_EQ(res.available(), res.total());
}

}  // namespace
}  // namespace fleet::node
