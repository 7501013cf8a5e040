// PeerConnections implementation; see peer_connections.h.
#include "core/peer_connections.h"

#include <unistd.h>

namespace fleet {

PeerConnections::PeerConnections(asio::io_context& io, std::string token, std::string worker_id,
                                 ClosedFn closed)
    : io_(io), token_(std::move(token)), worker_id_(std::move(worker_id)),
      closed_(std::move(closed)) {}

Result<rpc::ConnectionPtr> PeerConnections::To(const std::string& address) {
  MutexLock lk(&mu_);
  auto it = peers_.find(address);
  if (it != peers_.end() && !it->second->closed()) return it->second;
  rpc::Hello hello;
  hello.set_token(token_);
  hello.set_role("peer");
  hello.set_worker_id(worker_id_);
  hello.set_pid(getpid());
  hello.set_address(self_address_);
  auto c = rpc::Connect(io_, address, hello);
  if (!c.ok()) return c.status();
  c.value()->Start(nullptr, [this, address](const rpc::ConnectionPtr&, const Status&) {
    if (closed_) closed_(address);
  });
  peers_[address] = c.value();
  return c.value();
}

rpc::ConnectionPtr PeerConnections::Existing(const std::string& address) {
  MutexLock lk(&mu_);
  auto it = peers_.find(address);
  if (it != peers_.end() && !it->second->closed()) return it->second;
  return nullptr;
}

void PeerConnections::CloseAll() {
  MutexLock lk(&mu_);
  for (auto& [a, c] : peers_) c->Close();
}

}  // namespace fleet
