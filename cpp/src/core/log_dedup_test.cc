// Tests of LogDeduplicator: first copies pass, repeats fold into one summary
// with the exact count, windows end on Flush or the next Add, streams are
// separate, disabled mode and the bounds on line length and keys. Time is
// injected; nothing here reads a clock.
#include "core/log_dedup.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace fleet {
namespace {

using namespace std::chrono_literals;
using Clock = LogDeduplicator::Clock;

const Clock::time_point kT0 = Clock::time_point{} + 1000s;
const std::string kA = "(pid=1, node=10.0.0.1) ";
const std::string kB = "(pid=2, node=10.0.0.2) ";
const std::string kC = "(Counter pid=5) ";

TEST(LogDedupTest, FirstLinePrintsAtOnceWithPrefix) {
  LogDeduplicator d;
  LogOutput o = d.Add(kA, "hello", false, kT0);
  EXPECT_EQ(o.out, kA + "hello\n");
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(d.tracked_keys(), 1u);
}

TEST(LogDedupTest, RepeatsFromAnyPrefixFoldIntoOneSummary) {
  LogDeduplicator d;
  EXPECT_EQ(d.Add(kA, "loss=0.1", false, kT0).out, kA + "loss=0.1\n");
  EXPECT_TRUE(d.Add(kB, "loss=0.1", false, kT0 + 1s).empty());
  EXPECT_TRUE(d.Add(kA, "loss=0.1", false, kT0 + 2s).empty());
  EXPECT_TRUE(d.Add(kC, "loss=0.1", false, kT0 + 4s).empty());
  // Still inside the window: nothing yet.
  EXPECT_TRUE(d.Flush(kT0 + 4999ms).empty());
  LogOutput o = d.Flush(kT0 + 5s);
  EXPECT_EQ(o.out, kC + "loss=0.1 [repeated 3x across cluster]\n");
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(d.tracked_keys(), 0u);
  // The summary is emitted once only.
  EXPECT_TRUE(d.Flush(kT0 + 60s).empty());
}

TEST(LogDedupTest, WindowWithoutRepeatsEndsSilently) {
  LogDeduplicator d;
  d.Add(kA, "once", false, kT0);
  EXPECT_TRUE(d.Flush(kT0 + 10s).empty());
  EXPECT_EQ(d.tracked_keys(), 0u);
}

TEST(LogDedupTest, NextOccurrenceAfterWindowStartsNewWindowAndPrints) {
  LogDeduplicator d;
  d.Add(kA, "tick", false, kT0);
  d.Add(kB, "tick", false, kT0 + 1s);
  d.Add(kB, "tick", false, kT0 + 2s);
  // No Flush: the next Add after the window emits the summary, then the line.
  LogOutput o = d.Add(kA, "tick", false, kT0 + 6s);
  EXPECT_EQ(o.out, kB + "tick [repeated 2x across cluster]\n" + kA + "tick\n");
  // A new window opened at kT0 + 6s.
  EXPECT_TRUE(d.Add(kC, "tick", false, kT0 + 7s).empty());
  EXPECT_TRUE(d.Flush(kT0 + 10s).empty());
  EXPECT_EQ(d.Flush(kT0 + 11s).out, kC + "tick [repeated 1x across cluster]\n");
}

TEST(LogDedupTest, AddOfAnotherLineAlsoEndsExpiredWindows) {
  LogDeduplicator d;
  d.Add(kA, "x", false, kT0);
  d.Add(kA, "x", false, kT0 + 1s);
  LogOutput o = d.Add(kB, "y", true, kT0 + 5s);
  EXPECT_EQ(o.out, kA + "x [repeated 1x across cluster]\n");
  EXPECT_EQ(o.err, kB + "y\n");
}

TEST(LogDedupTest, CustomWindow) {
  LogDeduplicator d({.window = 100ms});
  d.Add(kA, "x", false, kT0);
  d.Add(kA, "x", false, kT0 + 50ms);
  EXPECT_TRUE(d.Flush(kT0 + 99ms).empty());
  EXPECT_EQ(d.Flush(kT0 + 100ms).out, kA + "x [repeated 1x across cluster]\n");
  EXPECT_EQ(d.Add(kA, "x", false, kT0 + 150ms).out, kA + "x\n");
}

TEST(LogDedupTest, StdoutAndStderrAreSeparateKeys) {
  LogDeduplicator d;
  EXPECT_EQ(d.Add(kA, "warn", false, kT0).out, kA + "warn\n");
  LogOutput o = d.Add(kA, "warn", true, kT0);
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(o.err, kA + "warn\n");
  EXPECT_TRUE(d.Add(kB, "warn", true, kT0 + 1s).empty());
  EXPECT_TRUE(d.Add(kB, "warn", true, kT0 + 1s).empty());
  EXPECT_TRUE(d.Add(kC, "warn", false, kT0 + 1s).empty());
  EXPECT_EQ(d.tracked_keys(), 2u);
  o = d.Flush(kT0 + 5s);
  EXPECT_EQ(o.out, kC + "warn [repeated 1x across cluster]\n");
  EXPECT_EQ(o.err, kB + "warn [repeated 2x across cluster]\n");
}

TEST(LogDedupTest, OnlyIdenticalLinesFold) {
  LogDeduplicator d;
  EXPECT_EQ(d.Add(kA, "", false, kT0).out, kA + "\n");
  EXPECT_TRUE(d.Add(kB, "", false, kT0).empty());
  EXPECT_EQ(d.Add(kA, " ", false, kT0).out, kA + " \n");
  EXPECT_EQ(d.Add(kA, "a", false, kT0).out, kA + "a\n");
  EXPECT_EQ(d.Add(kA, "A", false, kT0).out, kA + "A\n");
  EXPECT_EQ(d.Add(kA, "a ", false, kT0).out, kA + "a \n");
  EXPECT_TRUE(d.Add(kA, "a", false, kT0).empty());
  LogOutput o = d.FlushAll();
  EXPECT_EQ(o.out, kB + " [repeated 1x across cluster]\n" + kA + "a [repeated 1x across cluster]\n");
}

TEST(LogDedupTest, LongLinesNeverFold) {
  LogDeduplicator d;
  const std::string at_limit(8 * 1024, 'x');
  const std::string over(8 * 1024 + 1, 'y');
  EXPECT_EQ(d.Add(kA, over, false, kT0).out, kA + over + "\n");
  EXPECT_EQ(d.Add(kB, over, false, kT0).out, kB + over + "\n");
  EXPECT_EQ(d.tracked_keys(), 0u);
  EXPECT_EQ(d.Add(kA, at_limit, false, kT0).out, kA + at_limit + "\n");
  EXPECT_TRUE(d.Add(kB, at_limit, false, kT0).empty());
}

TEST(LogDedupTest, DisabledPassesEverythingThrough) {
  LogDeduplicator d({.enabled = false});
  EXPECT_EQ(d.Add(kA, "same", false, kT0).out, kA + "same\n");
  EXPECT_EQ(d.Add(kB, "same", false, kT0).out, kB + "same\n");
  LogOutput o = d.Add(kC, "same", true, kT0);
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(o.err, kC + "same\n");
  EXPECT_EQ(d.tracked_keys(), 0u);
  EXPECT_TRUE(d.Flush(kT0 + 10s).empty());
  EXPECT_TRUE(d.FlushAll().empty());
}

TEST(LogDedupTest, KeyBoundFlushesOldestWindowsEarly) {
  LogDeduplicator d;  // default bound: 10,000 keys
  const size_t kMax = 10000;
  for (size_t i = 0; i < kMax; ++i) {
    d.Add(kA, "line " + std::to_string(i), false, kT0);
  }
  d.Add(kB, "line 0", false, kT0);  // a repeat of the oldest window
  d.Add(kB, "line 1", false, kT0);
  EXPECT_EQ(d.tracked_keys(), kMax);
  // One more key: the oldest window ends early with its summary.
  LogOutput o = d.Add(kA, "new", false, kT0);
  EXPECT_EQ(o.out, kB + "line 0 [repeated 1x across cluster]\n" + kA + "new\n");
  EXPECT_EQ(d.tracked_keys(), kMax);
  // "line 0" is no longer tracked: it prints again and opens a new window.
  o = d.Add(kC, "line 0", false, kT0);
  EXPECT_EQ(o.out, kB + "line 1 [repeated 1x across cluster]\n" + kC + "line 0\n");
  EXPECT_EQ(d.tracked_keys(), kMax);
}

TEST(LogDedupTest, SmallKeyBound) {
  LogDeduplicator d({.max_keys = 2});
  d.Add(kA, "a", false, kT0);
  d.Add(kA, "b", true, kT0);
  d.Add(kB, "a", false, kT0);
  d.Add(kB, "b", true, kT0);
  LogOutput o = d.Add(kA, "c", false, kT0);
  EXPECT_EQ(o.out, kB + "a [repeated 1x across cluster]\n" + kA + "c\n");
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(d.tracked_keys(), 2u);
  EXPECT_EQ(d.FlushAll().err, kB + "b [repeated 1x across cluster]\n");
}

TEST(LogDedupTest, FlushAllEmitsEverythingAndEndsWindows) {
  LogDeduplicator d;
  d.Add(kA, "p", false, kT0);
  d.Add(kB, "p", false, kT0 + 1s);
  d.Add(kA, "q", true, kT0 + 1s);
  d.Add(kC, "q", true, kT0 + 2s);
  d.Add(kC, "q", true, kT0 + 2s);
  d.Add(kA, "r", false, kT0 + 2s);  // no repeats: no summary
  LogOutput o = d.FlushAll();
  EXPECT_EQ(o.out, kB + "p [repeated 1x across cluster]\n");
  EXPECT_EQ(o.err, kC + "q [repeated 2x across cluster]\n");
  EXPECT_EQ(d.tracked_keys(), 0u);
  EXPECT_TRUE(d.FlushAll().empty());
  EXPECT_EQ(d.Add(kA, "p", false, kT0 + 3s).out, kA + "p\n");
}

TEST(LogDedupTest, NextDeadlineIsOldestWindowEnd) {
  LogDeduplicator d;
  EXPECT_FALSE(d.NextDeadline().has_value());
  d.Add(kA, "a", false, kT0);
  d.Add(kA, "b", false, kT0 + 2s);
  EXPECT_EQ(d.NextDeadline(), kT0 + 5s);
  d.Flush(kT0 + 5s);
  EXPECT_EQ(d.NextDeadline(), kT0 + 7s);
}

TEST(LogDedupTest, TimeGoingBackwardsIsClamped) {
  LogDeduplicator d;
  d.Add(kA, "a", false, kT0 + 10s);
  // An earlier time counts as kT0 + 10s: still inside the window.
  EXPECT_TRUE(d.Add(kB, "a", false, kT0).empty());
  EXPECT_TRUE(d.Flush(kT0).empty());
  EXPECT_EQ(d.Flush(kT0 + 15s).out, kB + "a [repeated 1x across cluster]\n");
}

}  // namespace
}  // namespace fleet
