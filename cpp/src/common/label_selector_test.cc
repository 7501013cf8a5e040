// Tests of LabelSelector: each of Ray's operators, keys a node lacks, and
// several constraints together.
#include "common/label_selector.h"

#include <gtest/gtest.h>

namespace fleet {
namespace {

using Labels = std::map<std::string, std::string>;

bool Match(Labels selector, Labels node) { return LabelSelector::Parse(selector).Matches(node); }

TEST(LabelSelectorTest, Equals) {
  EXPECT_TRUE(Match({{"zone", "a"}}, {{"zone", "a"}}));
  EXPECT_FALSE(Match({{"zone", "a"}}, {{"zone", "b"}}));
  EXPECT_FALSE(Match({{"zone", "a"}}, {}));  // a node without the key does not match
}

TEST(LabelSelectorTest, NotEquals) {
  EXPECT_FALSE(Match({{"zone", "!a"}}, {{"zone", "a"}}));
  EXPECT_TRUE(Match({{"zone", "!a"}}, {{"zone", "b"}}));
  EXPECT_TRUE(Match({{"zone", "!a"}}, {}));  // absent counts as "not a"
}

TEST(LabelSelectorTest, InAndNotIn) {
  EXPECT_TRUE(Match({{"gpu", "in(A100, H100)"}}, {{"gpu", "H100"}}));
  EXPECT_TRUE(Match({{"gpu", "in(A100,H100)"}}, {{"gpu", "A100"}}));
  EXPECT_FALSE(Match({{"gpu", "in(A100, H100)"}}, {{"gpu", "T4"}}));
  EXPECT_FALSE(Match({{"gpu", "in(A100)"}}, {}));
  EXPECT_FALSE(Match({{"gpu", "!in(A100, H100)"}}, {{"gpu", "H100"}}));
  EXPECT_TRUE(Match({{"gpu", "!in(A100, H100)"}}, {{"gpu", "T4"}}));
  EXPECT_TRUE(Match({{"gpu", "!in(A100, H100)"}}, {}));
}

TEST(LabelSelectorTest, EveryConstraintMustHold) {
  Labels node{{"zone", "a"}, {"market", "spot"}};
  EXPECT_TRUE(Match({{"zone", "a"}, {"market", "!on-demand"}}, node));
  EXPECT_FALSE(Match({{"zone", "a"}, {"market", "on-demand"}}, node));
  EXPECT_TRUE(Match({}, node));
  EXPECT_TRUE(LabelSelector().empty());
}

}  // namespace
}  // namespace fleet
