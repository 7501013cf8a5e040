// PeerConnections: the connections this process opens to other drivers and
// workers (owners of objects it borrows, borrowers it watches, owners it
// asks for objects and locations), one per address, reopened after a close.
// Thread-safe: one mutex (mu_), held while connecting (Unix sockets connect
// at once; TCP blocks up to the connect timeout) and while CloseAll runs the
// close handlers, so the closed hook must not take a lock that is held
// around calls into this class. Lock order: PeerConnections::mu_ before
// MemoryStore::mu_ before ReferenceCounter::mu_.
#pragma once

#include <asio/io_context.hpp>
#include <functional>
#include <map>
#include <string>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "rpc/connection.h"

namespace fleet {

class PeerConnections {
 public:
  // Runs on the io thread when the connection to `address` closes.
  using ClosedFn = std::function<void(const std::string& address)>;
  PeerConnections(asio::io_context& io, std::string token, std::string worker_id, ClosedFn closed);
  PeerConnections(const PeerConnections&) = delete;
  PeerConnections& operator=(const PeerConnections&) = delete;

  // This process's own address (sent in the hello); set before first use.
  void set_self_address(const std::string& address) { self_address_ = address; }
  // The open connection to `address`, connecting if needed.
  Result<rpc::ConnectionPtr> To(const std::string& address) EXCLUDES(mu_);
  // The open connection to `address`, or null (never connects).
  rpc::ConnectionPtr Existing(const std::string& address) EXCLUDES(mu_);
  // Closes them all (io thread; Shutdown).
  void CloseAll() EXCLUDES(mu_);

 private:
  asio::io_context& io_;
  const std::string token_;
  const std::string worker_id_;
  const ClosedFn closed_;
  std::string self_address_;
  Mutex mu_;
  std::map<std::string, rpc::ConnectionPtr> peers_ GUARDED_BY(mu_);
};

}  // namespace fleet
