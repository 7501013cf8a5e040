// ResolveDependencies: waits for a task's top-level ObjectRef arguments and
// writes their values inline into its spec (TaskSpec.deps), so the executor
// needs no further round trip. Used for normal tasks, actor creation and
// actor calls alike.
//
// `done` runs exactly once, on whichever thread resolves the last argument
// (at once, on the calling thread, when all are ready or there are none),
// with the value of the first failed argument, or nullptr if none failed.
// `spec` must stay valid until then: pass its owner as `keep_alive`.
// Thread-safe: arguments resolve concurrently under the resolver's own lock.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/memory_store.h"
#include "fleet.pb.h"

namespace fleet {

using DepsDone = std::function<void(const StoredObject* failure)>;

void ResolveDependencies(MemoryStore& store, rpc::TaskSpec* spec,
                         const std::vector<std::string>& dep_ids,
                         std::shared_ptr<void> keep_alive, DepsDone done);

}  // namespace fleet
