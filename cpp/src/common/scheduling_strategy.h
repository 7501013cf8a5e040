// SchedulingStrategy: where a task or actor may run, as the wire names it
// (TaskSpec.scheduling_strategy, RequestLease.strategy, ActorInfo): "" for
// the default (pack locally, then the least loaded node), "SPREAD", or
// "NODE_AFFINITY" (with a node id and a soft flag beside it). Parsed once
// where a request enters a daemon; decisions compare the enum.
// Placement groups' bundle strategies are gcs::BundleStrategy.
#pragma once

#include <string_view>

namespace fleet {

enum class SchedulingStrategy { kDefault, kSpread, kNodeAffinity };

// Unknown names (the Python layer validates what users pass) are the default.
inline SchedulingStrategy ParseSchedulingStrategy(std::string_view name) {
  if (name == "SPREAD") return SchedulingStrategy::kSpread;
  if (name == "NODE_AFFINITY") return SchedulingStrategy::kNodeAffinity;
  return SchedulingStrategy::kDefault;
}

inline const char* SchedulingStrategyName(SchedulingStrategy s) {
  switch (s) {
    case SchedulingStrategy::kSpread:
      return "SPREAD";
    case SchedulingStrategy::kNodeAffinity:
      return "NODE_AFFINITY";
    case SchedulingStrategy::kDefault:
      break;
  }
  return "";
}

}  // namespace fleet
