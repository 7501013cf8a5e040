// LogPrinter: prints worker output that fleet-gcs relays to this driver,
// prefixed as Ray does ("(pid=N) ...", "(Counter pid=N, node=10.0.0.2) ...")
// and folded by a LogDeduplicator; a timer on the io thread prints what the
// deduplicator holds back once its deadline passes. Also prints warnings.
// Thread-safe: one mutex (mu_); writes to stdout/stderr happen outside it.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <string>

#include "common/thread_annotations.h"
#include "core/log_dedup.h"
#include "fleet.pb.h"
#include "rpc/dispatcher.h"

namespace fleet {

class LogPrinter {
 public:
  LogPrinter(asio::io_context& io, bool dedup);
  LogPrinter(const LogPrinter&) = delete;
  LogPrinter& operator=(const LogPrinter&) = delete;

  // This process's node: output from other nodes names theirs. Set before
  // output can arrive (it is read without a lock).
  void set_node_id(const std::string& node_id) { node_id_ = node_id; }
  // Adds LogLines and Warning to fleet-gcs's table, and Warning to
  // fleet-node's (the io thread runs them).
  void RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& gcs,
                        rpc::Dispatcher<const rpc::ConnectionPtr>& node);
  void HandleLogLines(const rpc::ConnectionPtr&, uint64_t, rpc::LogLines& m) {
    Print(m);
  }
  void HandleWarning(const rpc::ConnectionPtr&, uint64_t, rpc::Warning& m) {
    PrintWarning(m.message());
  }
  // Prints (or folds) the lines of one batch.
  void Print(const rpc::LogLines& l) EXCLUDES(mu_);
  // Prints what the deduplicator still holds.
  void FlushAll() EXCLUDES(mu_);
  // "fleet: WARNING: <message>" on stderr.
  static void PrintWarning(const std::string& message);

 private:
  void ArmFlushLocked() REQUIRES(mu_);

  std::string node_id_;
  asio::steady_timer timer_;
  Mutex mu_;
  LogDeduplicator dedup_ GUARDED_BY(mu_);
  bool flush_armed_ GUARDED_BY(mu_) = false;
};

}  // namespace fleet
