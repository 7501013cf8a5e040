// Actor placement: which alive node fleet-gcs asks to host an actor, as
// Ray's raylets decide for an actor creation task. A pure function of the
// actor's options and the node table (no I/O, no clock); ActorManager
// applies the answer.
//
//  - Label selectors: only nodes whose labels match the actor's
//    label_selector; when none could ever host it, each fallback_strategy
//    entry's label_selector in turn (Ray 2.60's fallback_strategy).
//  - NODE_AFFINITY: that node (soft: the default when it cannot host it;
//    hard and dead or unknown: the actor dies, `dead_reason`).
//  - SPREAD: round robin over the nodes that fit (free now first).
//  - Default, an actor that holds no resources while alive (num_cpus unset):
//    a random node among those that fit (free now first), as Ray, so such
//    actors do not all land on the driver's node.
//  - Actors that need no GPU keep off nodes with GPUs while other nodes
//    have room (Ray's scheduler_avoid_gpu_nodes).
//  - Default otherwise: Ray's hybrid policy: the owner's node while its
//    critical utilization is below `spread_threshold` (or no higher than
//    the best), else the node with the lowest score (ties: smallest id).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fleet.pb.h"

namespace fleet::gcs {

struct ActorPlacementInput {
  const rpc::ActorInfo& actor;
  const std::vector<rpc::NodeInfo>& nodes;  // alive, any order
  double spread_threshold = 0.5;
  uint64_t random = 0;  // for the random choice (any value)
};

struct ActorPlacement {
  const rpc::NodeInfo* node = nullptr;  // null: none now (wait: infeasible or busy)
  std::string dead_reason;              // non-empty: the actor can never be placed
};

// `spread_turn` is SPREAD's round-robin position (advanced when used).
ActorPlacement PlaceActor(const ActorPlacementInput& in, uint64_t& spread_turn);

}  // namespace fleet::gcs
