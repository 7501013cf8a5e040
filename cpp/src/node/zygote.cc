// Zygote implementation; see zygote.h.
#include "node/zygote.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/logging.h"

namespace fleet::node {

namespace {

constexpr int kSpawnTimeoutMs = 5000;
constexpr size_t kMaxMessage = 1 << 16;

int32_t ReadI32(const std::string& m, size_t at) {
  int32_t v = 0;
  std::memcpy(&v, m.data() + at, sizeof(v));
  return v;
}

// One packet, or "" on EOF, or nullopt-like empty with errno EAGAIN.
bool RecvPacket(int fd, std::string* out, int flags) {
  out->resize(kMaxMessage);
  ssize_t n = ::recv(fd, out->data(), out->size(), flags);
  if (n < 0) {
    out->clear();
    return false;
  }
  out->resize(static_cast<size_t>(n));
  return true;
}

}  // namespace

Zygote::Zygote(asio::io_context& io, ExitFn on_exit) : io_(io), on_exit_(std::move(on_exit)) {}

Zygote::~Zygote() { Stop(); }

Status Zygote::Start(const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& env) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::IoError(std::string("socketpair: ") + strerror(errno));
  }
  SpawnOptions spawn;
  spawn.pipe_output = false;  // the zygote's own output goes to fleet-node's log
  spawn.pass_as_fd3 = sv[1];
  auto p = SpawnWorker(argv, env, spawn);
  if (!p.ok()) {
    ::close(sv[0]);
    ::close(sv[1]);
    return p.status();
  }
  pid_t pid = p->pid;
  ::close(sv[1]);
  fd_ = sv[0];
  pid_ = pid;
  sd_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(fd_));
  ReadAsync();
  return Status::OK();
}

void Zygote::ReadAsync() {
  // Reads on after a stall (broken_): the exits of the workers it forked
  // still have to be reported.
  if (!sd_ || closed_) return;
  sd_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
    if (ec || closed_) return;
    std::string msg;
    while (RecvPacket(fd_, &msg, MSG_DONTWAIT)) {
      if (msg.empty()) {
        closed_ = true;
        MarkBroken("it exited");
        return;
      }
      Dispatch(msg);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      closed_ = true;
      MarkBroken(std::string("recv: ") + strerror(errno));
      return;
    }
    ReadAsync();
  });
}

void Zygote::Dispatch(const std::string& msg) {
  switch (msg[0]) {
    case 'R':
      ready_ = true;
      FLEET_LOG(INFO) << "worker zygote (pid " << pid_ << ") is ready";
      break;
    case 'X':
      if (msg.size() >= 9) on_exit_(ReadI32(msg, 1), ReadI32(msg, 5));
      break;
    case 'P':
      // The answer to a spawn request given up on (its worker was started
      // with fork + exec instead, under the same id): that child must go.
      if (msg.size() >= 5) ::kill(ReadI32(msg, 1), SIGKILL);
      break;
    default:
      FLEET_LOG(WARNING) << "unexpected message from the worker zygote: " << msg.substr(0, 64);
  }
}

void Zygote::MarkBroken(const std::string& why) {
  if (broken_) return;
  broken_ = true;
  FLEET_LOG(WARNING) << "worker zygote (pid " << pid_ << ") stopped serving (" << why
                     << "); starting workers with fork + exec";
}

Result<SpawnedProcess> Zygote::Spawn(const std::map<std::string, std::string>& env) {
  if (!ready()) return Status::Internal("the worker zygote is not ready");
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return Status::IoError(std::string("pipe: ") + strerror(errno));
  if (pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return Status::IoError(std::string("pipe: ") + strerror(errno));
  }
  std::string msg = "S";
  for (auto& [k, v] : env) {
    msg += k + "=" + v;
    msg.push_back('\0');
  }
  int fds[2] = {out[1], err[1]};
  char control[CMSG_SPACE(sizeof(fds))] = {};
  iovec iov{msg.data(), msg.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(c), fds, sizeof(fds));
  ssize_t sent = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
  ::close(out[1]);
  ::close(err[1]);
  auto fail = [&](const std::string& why) -> Status {
    ::close(out[0]);
    ::close(err[0]);
    return Status::Internal(why);
  };
  if (sent < 0) {
    MarkBroken(std::string("sendmsg: ") + strerror(errno));
    return fail("the worker zygote is gone");
  }
  // Wait for the answer; exits reported meanwhile are handled after it.
  std::vector<std::string> later;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kSpawnTimeoutMs);
  Result<SpawnedProcess> result = Status::Internal("no answer");
  while (true) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) {
      MarkBroken("no answer to a spawn request within 5 s");
      result = fail("the worker zygote did not answer");
      break;
    }
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    std::string m;
    if (!RecvPacket(fd_, &m, MSG_DONTWAIT)) {
      if (errno == EAGAIN || errno == EINTR) continue;
      MarkBroken(std::string("recv: ") + strerror(errno));
      result = fail("the worker zygote is gone");
      break;
    }
    if (m.empty()) {
      closed_ = true;
      MarkBroken("it exited");
      result = fail("the worker zygote exited");
      break;
    }
    if (m[0] == 'P' && m.size() >= 5) {
      SpawnedProcess sp;
      sp.pid = ReadI32(m, 1);
      sp.stdout_fd = out[0];
      sp.stderr_fd = err[0];
      result = sp;
      break;
    }
    if (m[0] == 'E') {
      result = fail("the worker zygote could not fork: " + m.substr(1));
      break;
    }
    later.push_back(std::move(m));
  }
  for (auto& m : later) Dispatch(m);
  return result;
}

void Zygote::Stop() {
  if (sd_) {
    asio::error_code ec;
    sd_->cancel(ec);
    sd_->close(ec);
    sd_.reset();
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
}

}  // namespace fleet::node
