// Zygote: a fork server for workers. One Python process per node imports
// fleet (and cloudpickle) once, then forks a worker per request: starting a
// worker costs a fork (~2 ms) instead of an interpreter start plus imports
// (~100 ms of CPU), and the workers share the imported modules' pages.
//
// Protocol over a SOCK_SEQPACKET socketpair (fd 3 in the zygote, see
// python/fleet/_private/zygote.py); one message per packet:
//   node -> zygote   "S" + "K=V\0K=V..." (the worker's extra environment),
//                    with the write ends of its stdout and stderr pipes
//                    attached (SCM_RIGHTS)
//   zygote -> node   "R"                 ready (imports done)
//                    "P" + int32 pid     spawned
//                    "E" + text          spawn failed
//                    "X" + int32 pid + int32 wait status   a worker exited
// The zygote reaps its children (the workers are not fleet-node's) and reports
// each exit, which fleet-node treats like its own SIGCHLD. Workers get
// PR_SET_PDEATHSIG(SIGKILL) in the zygote; the zygote gets it from fleet-node
// and exits when the socket closes. If the zygote is not ready or fails,
// fleet-node starts workers with fork + exec as before.
// Threading: io thread only.
#pragma once

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "node/worker_process.h"

namespace fleet::node {

class Zygote {
 public:
  using ExitFn = std::function<void(int pid, int wait_status)>;
  Zygote(asio::io_context& io, ExitFn on_exit);
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  // Starts the zygote process (argv[0] a path); it becomes ready later.
  Status Start(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  bool ready() const { return ready_ && !broken_; }
  int pid() const { return pid_; }
  // Forks a worker with `env` added; blocks until the zygote answers (~ms).
  Result<SpawnedProcess> Spawn(const std::map<std::string, std::string>& env);
  // Closes the socket (the zygote exits) and kills it.
  void Stop();

 private:
  void ReadAsync();
  // Handles one message read outside Spawn; false on EOF/error.
  void Dispatch(const std::string& msg);
  void MarkBroken(const std::string& why);

  asio::io_context& io_;
  ExitFn on_exit_;
  int pid_ = 0;
  int fd_ = -1;
  std::unique_ptr<asio::posix::stream_descriptor> sd_;
  bool ready_ = false;
  bool broken_ = false;  // not used for spawning any more (stalled, or gone)
  bool closed_ = false;  // its socket reached EOF or failed
};

}  // namespace fleet::node
