// Spawning worker processes (and the worker zygote): fork + exec with
// stdout/stderr on pipes that fleet-node reads, and PR_SET_PDEATHSIG so a
// worker never outlives its fleet-node. The only platform-specific seam of
// the worker pool.
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

// The current environment with `env` added (overriding), as "K=V" strings.
std::vector<std::string> EnvironmentWith(const std::map<std::string, std::string>& env);

struct SpawnOptions {
  bool pipe_output = true;  // false: the child writes to our stdout/stderr
  int pass_as_fd3 = -1;     // this fd becomes the child's fd 3 (the zygote's socket)
};

// Runs argv[0] (a path) with argv and the current environment plus `env`.
// The child has stdin on /dev/null, an empty signal mask, and dies with us
// (PR_SET_PDEATHSIG).
Result<SpawnedProcess> SpawnWorker(const std::vector<std::string>& argv,
                                   const std::map<std::string, std::string>& env,
                                   const SpawnOptions& options = {});

}  // namespace fleet::node
