// Spawning worker processes: fork + exec with stdout/stderr on pipes that
// fleet-node reads, and PR_SET_PDEATHSIG so a worker never outlives its
// fleet-node. The only platform-specific seam of the worker pool.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace fleet::node {

struct SpawnedProcess {
  int pid = 0;
  int stdout_fd = -1;  // read ends, owned by the caller
  int stderr_fd = -1;
};

// Runs argv[0] (a path) with argv and the current environment plus `env`.
Result<SpawnedProcess> SpawnWorker(const std::vector<std::string>& argv,
                                   const std::map<std::string, std::string>& env);

}  // namespace fleet::node
