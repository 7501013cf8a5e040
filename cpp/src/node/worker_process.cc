// SpawnWorker implementation (Linux).
#include "node/worker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace fleet::node {

std::vector<std::string> EnvironmentWith(const std::map<std::string, std::string>& env) {
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    auto eq = s.find('=');
    if (eq != std::string::npos) merged[s.substr(0, eq)] = s.substr(eq + 1);
  }
  for (auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (auto& [k, v] : merged) out.push_back(k + "=" + v);
  return out;
}

Result<SpawnedProcess> SpawnWorker(const std::vector<std::string>& argv,
                                   const std::map<std::string, std::string>& env,
                                   const SpawnOptions& options) {
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (options.pipe_output) {
    if (pipe2(out, O_CLOEXEC) != 0) return Status::IoError(std::string("pipe: ") + strerror(errno));
    if (pipe2(err, O_CLOEXEC) != 0) {
      close(out[0]);
      close(out[1]);
      return Status::IoError(std::string("pipe: ") + strerror(errno));
    }
  }
  // Build argv/envp before fork: no allocation in the child.
  std::vector<std::string> env_strings = EnvironmentWith(env);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (auto& e : env_strings) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) close(fd);
    }
    return Status::IoError(std::string("fork: ") + strerror(e));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // fleet-node died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    if (options.pipe_output) {
      dup2(out[1], 1);
      dup2(err[1], 2);
    }
    if (options.pass_as_fd3 >= 0) dup2(options.pass_as_fd3, 3);  // dup2 clears FD_CLOEXEC
    execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "fleet-node: exec of the worker's Python failed\n";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
  }
  if (options.pipe_output) {
    close(out[1]);
    close(err[1]);
  }
  SpawnedProcess p;
  p.pid = pid;
  p.stdout_fd = out[0];
  p.stderr_fd = err[0];
  return p;
}

}  // namespace fleet::node
