// Tests of the typed ids: bytes in and out unchanged, kinds kept apart.
#include "common/typed_id.h"

#include <gtest/gtest.h>

#include <type_traits>
#include <unordered_set>

namespace fleet {
namespace {

static_assert(!std::is_convertible_v<NodeId, ActorId>, "kinds of id do not mix");
static_assert(!std::is_convertible_v<std::string, NodeId>, "bytes become an id only through FromBinary");
static_assert(!std::is_convertible_v<uint32_t, JobId>, "a number becomes a JobId only by a cast");

TEST(TypedIdTest, BinaryRoundTripsAndHexMatchesToHex) {
  std::string bin = RandomId();
  NodeId id = NodeId::FromBinary(bin);
  EXPECT_EQ(id.Binary(), bin);
  EXPECT_EQ(id.Hex(), ToHex(bin));
  EXPECT_FALSE(id.IsNil());
  EXPECT_TRUE(NodeId().IsNil());
  EXPECT_EQ(NodeId::Nil(), NodeId());
}

TEST(TypedIdTest, OrderedAndHashedAsBytes) {
  auto a = ActorId::FromBinary("a"), b = ActorId::FromBinary("b");
  EXPECT_LT(a, b);
  EXPECT_NE(a, b);
  EXPECT_EQ(a, ActorId::FromBinary("a"));
  std::unordered_set<ActorId> set = {a, b, ActorId::FromBinary("a")};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(JobNumber(static_cast<JobId>(7)), 7u);
}

}  // namespace
}  // namespace fleet
