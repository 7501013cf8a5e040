// WorkerSupervisor implementation; see worker_supervisor.h.
#include "node/worker_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <sstream>

#include "common/ids.h"
#include "common/logging.h"
#include "node/worker_process.h"

namespace fleet::node {

struct WorkerSupervisor::WorkerIo {
  std::string worker_id;
  int pid = 0;
  asio::posix::stream_descriptor out, err;
  std::string out_partial, err_partial;
  int log_fd = -1;
  std::deque<std::string> tail;  // last stderr lines, for error messages
  bool err_eof = false;
  bool exited = false;
  std::string exit_reason;
  std::string label;  // "Counter" while it hosts an actor of that class
  std::array<char, 8192> out_buf{}, err_buf{};
  WorkerIo(asio::io_context& io, int o, int e) : out(io, o), err(io, e) {}
  ~WorkerIo() {
    if (log_fd >= 0) ::close(log_fd);
  }
};

WorkerSupervisor::WorkerSupervisor(asio::io_context& io, WorkerSupervisorOptions options,
                                   WorkerPool& pool, Hooks hooks)
    : io_(io), options_(std::move(options)), pool_(pool), hooks_(std::move(hooks)),
      sigchld_(io, SIGCHLD) {}

WorkerSupervisor::~WorkerSupervisor() = default;

void WorkerSupervisor::Start() {
  sigchld_.async_wait([this](const asio::error_code& ec, int) {
    if (!ec) OnSigchld();
  });
}

void WorkerSupervisor::Prestart(int n) {
  started_at_ = std::chrono::steady_clock::now();
  StartWorkers(n);
  MaybeStartZygote(false);  // nothing to prestart: start it now
}

void WorkerSupervisor::Tick(std::chrono::steady_clock::time_point now) {
  if (now - started_at_ > std::chrono::seconds(1)) MaybeStartZygote(true);
}

void WorkerSupervisor::Stop() {
  stopped_ = true;
  for (int pid : pool_.Pids()) ::kill(pid, SIGKILL);
  for (int pid : pool_.Pids()) ::waitpid(pid, nullptr, 0);  // ECHILD for the zygote's
  if (zygote_) zygote_->Stop();
}

void WorkerSupervisor::MaybeStartZygote(bool force) {
  // The prestarted workers start with fork + exec; the fork server starts
  // once they are up (or after a second), so it does not compete with them
  // for the CPU while init() waits for its first task.
  if (!options_.use_zygote || zygote_started_) return;
  if (!force && pool_.num_starting() > 0) return;
  zygote_started_ = true;
  zygote_ = std::make_unique<Zygote>(io_, [this](int pid, int status) { OnProcessExit(pid, status); });
  Status zs = zygote_->Start({options_.python, "-m", "fleet._private.zygote"},
                             {{"PYTHONUNBUFFERED", "1"}});
  if (!zs.ok()) {
    FLEET_LOG(WARNING) << "cannot start the worker zygote (" << zs.message()
                       << "); workers start with fork + exec";
    zygote_.reset();
  }
}

void WorkerSupervisor::StartWorkers(int n) {
  for (int i = 0; i < n; ++i) {
    std::string id = RandomId();
    std::string hex = ToHex(id);
    std::map<std::string, std::string> env = {
        {"FLEET_WORKER_ID", hex},
        {"FLEET_NODE_ADDRESS", "unix:" + options_.unix_socket},
        {"FLEET_GCS_ADDRESS", options_.gcs_address},
        {"FLEET_CLUSTER_TOKEN", options_.token},
        {"FLEET_SESSION_DIR", options_.session_dir},
        {"FLEET_NODE_ID", ToHex(options_.node_id)},
        {"FLEET_NODE_IP", options_.node_ip},
        {"PYTHONUNBUFFERED", "1"},
    };
    Result<SpawnedProcess> p = Status::Internal("no zygote");
    if (zygote_ && zygote_->ready()) {
      p = zygote_->Spawn(env);
      if (!p.ok()) {
        FLEET_LOG(WARNING) << "zygote spawn failed: " << p.status().message();
      }
    }
    if (!p.ok()) p = SpawnWorker({options_.python, "-m", "fleet._private.worker_main"}, env);
    if (!p.ok()) {
      FLEET_LOG(ERROR) << "cannot start a worker: " << p.status().message();
      last_start_failure_ = p.status().message();
      consecutive_start_failures_++;
      continue;
    }
    pool_.AddStarting(id, p->pid);
    FLEET_LOG(INFO) << "started worker pid " << p->pid << " (" << pool_.size() << " workers, "
                    << pool_.num_starting() << " starting)";
    auto wio = std::make_shared<WorkerIo>(io_, p->stdout_fd, p->stderr_fd);
    wio->worker_id = id;
    wio->pid = p->pid;
    std::string log = options_.session_dir + "/logs/worker-" + hex.substr(0, 8) + "-" +
                      std::to_string(p->pid) + ".log";
    wio->log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    worker_io_[id] = wio;
    ReadOutput(wio, false);
    ReadOutput(wio, true);
  }
}

void WorkerSupervisor::ReadOutput(std::shared_ptr<WorkerIo> wio, bool is_stderr) {
  auto& sd = is_stderr ? wio->err : wio->out;
  auto& buf = is_stderr ? wio->err_buf : wio->out_buf;
  sd.async_read_some(asio::buffer(buf), [this, wio, is_stderr](const asio::error_code& ec, size_t n) {
    if (ec) {  // EOF: the worker exited (or closed its stderr)
      if (is_stderr && !stopped_) {
        wio->err_eof = true;
        MaybeFinalizeExit(wio);
      }
      return;
    }
    auto& buf2 = is_stderr ? wio->err_buf : wio->out_buf;
    auto& partial = is_stderr ? wio->err_partial : wio->out_partial;
    if (wio->log_fd >= 0) {
      ssize_t ignored = ::write(wio->log_fd, buf2.data(), n);
      (void)ignored;
    }
    partial.append(buf2.data(), n);
    rpc::Envelope msg;
    auto* l = msg.mutable_log_lines();
    l->set_pid(wio->pid);
    l->set_is_stderr(is_stderr);
    if (!wio->label.empty()) l->set_label(wio->label);
    size_t start = 0, nl;
    while ((nl = partial.find('\n', start)) != std::string::npos) {
      std::string line = partial.substr(start, nl - start);
      if (is_stderr) {
        wio->tail.push_back(line);
        if (wio->tail.size() > 20) wio->tail.pop_front();
      }
      l->add_lines(std::move(line));
      start = nl + 1;
    }
    partial.erase(0, start);
    if (l->lines_size() > 0) {
      // Through fleet-gcs, which sends them to every driver that wants them
      // (drivers on other nodes too).
      l->set_node_ip(options_.node_ip);
      l->set_node_id(options_.node_id);
      hooks_.output(msg);
    }
    ReadOutput(wio, is_stderr);
  });
}

void WorkerSupervisor::KillWorker(const std::string& worker_id) {
  const WorkerInfo* w = pool_.Find(worker_id);
  if (w && w->pid > 0) ::kill(w->pid, SIGKILL);
}

void WorkerSupervisor::SetLabel(const std::string& worker_id, const std::string& label) {
  auto wio = worker_io_.find(worker_id);
  if (wio != worker_io_.end()) wio->second->label = label;
}

bool WorkerSupervisor::OnStartFailure(const std::string& worker_id, int pid, const std::string& why) {
  std::string tail;
  auto it = worker_io_.find(worker_id);
  if (it != worker_io_.end()) {
    for (auto& l : it->second->tail) tail += "\n  " + l;
  }
  last_start_failure_ = "worker pid " + std::to_string(pid) + " exited before connecting (" +
                        why + ")" + (tail.empty() ? "" : "; its last output:" + tail);
  consecutive_start_failures_++;
  FLEET_LOG(ERROR) << last_start_failure_;
  return failing();
}

void WorkerSupervisor::MaybeFinalizeExit(const std::shared_ptr<WorkerIo>& wio) {
  if (!wio->exited || !wio->err_eof) return;
  ExitInfo info;
  info.reason = wio->exit_reason;
  info.last_lines.assign(wio->tail.begin(), wio->tail.end());
  exited_[wio->worker_id] = std::move(info);
  exited_order_.push_back(wio->worker_id);
  if (exited_order_.size() > 256) {
    exited_.erase(exited_order_.front());
    exited_order_.pop_front();
  }
  auto waiters = exit_waiters_.find(wio->worker_id);
  if (waiters != exit_waiters_.end()) {
    auto list = std::move(waiters->second);
    exit_waiters_.erase(waiters);
    for (auto& w : list) {
      if (auto c = w.conn.lock()) AnswerExit(c, w.request_id, wio->worker_id);
    }
  }
  worker_io_.erase(wio->worker_id);
}

void WorkerSupervisor::AnswerExit(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                  const std::string& worker_id) {
  rpc::Envelope reply;
  auto* r = reply.mutable_get_worker_exit_reply();
  auto it = exited_.find(worker_id);
  if (it != exited_.end()) {
    r->set_known(true);
    r->set_reason(it->second.reason);
    for (auto& l : it->second.last_lines) r->add_last_lines(l);
  }
  conn->Reply(request_id, reply);
}

void WorkerSupervisor::HandleGetWorkerExit(ClientSession& s, uint64_t rid,
                                           const rpc::GetWorkerExit& m) {
  const std::string& wid = m.worker_id();
  if (exited_.count(wid) || !worker_io_.count(wid)) {
    AnswerExit(s.conn, rid, wid);  // known, or never ours
    return;
  }
  exit_waiters_[wid].push_back({s.conn, rid});
  // Do not let the asker wait long for a worker that lingers.
  auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(2));
  std::weak_ptr<rpc::Connection> weak = s.conn;
  timer->async_wait([this, timer, weak, rid, wid](const asio::error_code& ec) {
    if (ec || stopped_) return;
    auto it = exit_waiters_.find(wid);
    if (it == exit_waiters_.end()) return;
    auto& list = it->second;
    for (auto w = list.begin(); w != list.end(); ++w) {
      if (w->request_id == rid && w->conn.lock() == weak.lock()) {
        if (auto c = weak.lock()) AnswerExit(c, rid, wid);
        list.erase(w);
        break;
      }
    }
    if (list.empty()) exit_waiters_.erase(it);
  });
}

void WorkerSupervisor::OnSigchld() {
  int status;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) OnProcessExit(pid, status);
  sigchld_.async_wait([this](const asio::error_code& ec, int) {
    if (!ec) OnSigchld();
  });
}

void WorkerSupervisor::OnProcessExit(int pid, int status) {
  auto id = pool_.IdOfPid(pid);
  std::ostringstream why;
  if (WIFEXITED(status)) {
    why << "exited with code " << WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    why << "was killed by signal " << sig;
    if (sig == SIGKILL) why << " (SIGKILL: killed by a user or another process, or out of memory)";
    if (sig == SIGSEGV) why << " (SIGSEGV: a crash in native code)";
  }
  if (id) {
    FLEET_LOG(INFO) << "worker pid " << pid << " " << why.str();
    hooks_.exited(*id, why.str());
  }
  for (auto& [wid, wio] : worker_io_) {
    if (wio->pid == pid) {
      wio->exited = true;
      wio->exit_reason = why.str();
      auto keep = wio;
      MaybeFinalizeExit(keep);
      break;
    }
  }
}

}  // namespace fleet::node
