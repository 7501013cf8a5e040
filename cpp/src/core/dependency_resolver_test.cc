// Tests of ResolveDependencies (core/dependency_resolver.h).
#include "core/memory_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/dependency_resolver.h"
#include "core/memory_store_test_util.h"
#include "core/object_flags.h"

namespace fleet {
namespace {

using namespace testing_util;

TEST(DependencyResolverTest, InlinesReadyAndLateValuesAndReportsFailure) {
  MemoryStore store(NoFetch());
  store.PutReady(Id("a"), "A", 0, 1);
  store.CreatePending(Id("b"), 1);
  auto spec = std::make_shared<rpc::TaskSpec>();
  std::atomic<int> calls{0};
  const StoredObject* seen = reinterpret_cast<const StoredObject*>(1);
  ResolveDependencies(store, spec.get(), {Id("a"), Id("b")}, spec,
                      [&](const StoredObject* failure) {
                        seen = failure;
                        calls++;
                      });
  EXPECT_EQ(calls.load(), 0) << "done before every argument was ready";
  ASSERT_TRUE(store.Complete(Id("b"), "B", 0));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(seen, nullptr);
  EXPECT_EQ(spec->deps(0).data(), "A");
  EXPECT_EQ(spec->deps(1).data(), "B");
  EXPECT_TRUE(spec->deps(1).is_inline());

  auto spec2 = std::make_shared<rpc::TaskSpec>();
  store.CreatePending(Id("c"), 1);
  std::string failed_data;
  ResolveDependencies(store, spec2.get(), {Id("c")}, spec2, [&](const StoredObject* failure) {
    ASSERT_NE(failure, nullptr);
    failed_data = failure->data;
  });
  ASSERT_TRUE(store.Complete(Id("c"), "boom", kFlagSystemError));
  EXPECT_EQ(failed_data, "boom");

  int none_calls = 0;
  rpc::TaskSpec empty;
  ResolveDependencies(store, &empty, {}, nullptr, [&](const StoredObject* f) {
    EXPECT_EQ(f, nullptr);
    none_calls++;
  });
  EXPECT_EQ(none_calls, 1) << "no arguments: done at once";
}

}  // namespace
}  // namespace fleet
