// LogPrinter implementation; see log_printer.h.
#include "core/log_printer.h"

#include <unistd.h>

namespace fleet {

namespace {
void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

void Write(const LogOutput& out) {
  if (!out.out.empty()) WriteAll(1, out.out);
  if (!out.err.empty()) WriteAll(2, out.err);
}
}  // namespace

LogPrinter::LogPrinter(asio::io_context& io, bool dedup)
    : timer_(io), dedup_(LogDedupOptions{.enabled = dedup}) {}

void LogPrinter::RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& gcs,
                                  rpc::Dispatcher<const rpc::ConnectionPtr>& node) {
  using rpc::PeerRole;
  using rpc::RoleBit;
  FLEET_RPC_HANDLE(gcs, LogLines, log_lines, HandleLogLines, RoleBit(PeerRole::kGcs));
  FLEET_RPC_HANDLE(gcs, Warning, warning, HandleWarning, RoleBit(PeerRole::kGcs));
  FLEET_RPC_HANDLE(node, Warning, warning, HandleWarning, RoleBit(PeerRole::kNode));
}

void LogPrinter::PrintWarning(const std::string& message) {
  WriteAll(2, "fleet: WARNING: " + message + "\n");
}

void LogPrinter::Print(const rpc::LogLines& l) {
  // As Ray: "(pid=N) ..." for tasks, "(Counter pid=N) ..." for an actor, and
  // the node for output from another node: "(pid=N, node=10.0.0.2) ...".
  std::string prefix = "(" + (l.label().empty() ? std::string() : l.label() + " ") +
                       "pid=" + std::to_string(l.pid());
  if (!l.node_id().empty() && l.node_id() != node_id_) prefix += ", node=" + l.node_ip();
  prefix += ") ";
  LogOutput out;
  {
    MutexLock lk(&mu_);
    auto now = std::chrono::steady_clock::now();
    for (const auto& line : l.lines()) {
      LogOutput o = dedup_.Add(prefix, line, l.is_stderr(), now);
      out.out += o.out;
      out.err += o.err;
    }
    ArmFlushLocked();
  }
  Write(out);
}

void LogPrinter::ArmFlushLocked() {
  auto next = dedup_.NextDeadline();
  if (!next || flush_armed_) return;
  flush_armed_ = true;
  timer_.expires_at(*next);
  timer_.async_wait([this](const asio::error_code& ec) {
    LogOutput out;
    {
      MutexLock lk(&mu_);
      flush_armed_ = false;
      if (ec) return;
      out = dedup_.Flush(std::chrono::steady_clock::now());
      ArmFlushLocked();
    }
    Write(out);
  });
}

void LogPrinter::FlushAll() {
  LogOutput out;
  {
    MutexLock lk(&mu_);
    out = dedup_.FlushAll();
  }
  Write(out);
}

}  // namespace fleet
