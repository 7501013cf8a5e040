// ClientSession: what fleet-node knows about one connection to it (a driver,
// a worker, another node, fleet-gcs): its role, the worker id once a worker
// registered, its object store client id, the address it advertised.
// SessionTable holds one session per connection, so closing a connection is
// one Remove that hands back everything to clean up.
//
// Invariants: at most one session per connection and per registered worker
// id; a session's `conn` stays valid (held) until Remove. Sessions are
// shared so that a handler's session outlives a Remove its own work causes.
// Store client ids are unique for the table's life.
// Not thread-safe: fleet-node's io thread owns it.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "rpc/connection.h"
#include "rpc/dispatcher.h"
#include "store/object_store.h"

namespace fleet::node {

struct ClientSession {
  rpc::ConnectionPtr conn;
  rpc::PeerRole role = rpc::PeerRole::kUnknown;  // from its Hello
  std::string worker_id;           // a registered worker (binary id); empty otherwise
  store::ClientId store_client = 0;  // 0 until its first object store request
  std::string address;             // advertised by drivers and workers ("ip:port,unix:/path")
};

class SessionTable {
 public:
  // The session of `conn`, created if it has none yet (its role from the
  // connection's Hello).
  const std::shared_ptr<ClientSession>& Open(const rpc::ConnectionPtr& conn);
  // Null if the connection has no session.
  ClientSession* Find(const rpc::Connection* conn);
  // The session of the registered worker with that id; null if none.
  ClientSession* FindWorker(const std::string& worker_id);
  // Marks the session as the connection of that registered worker.
  void BindWorker(ClientSession& s, const std::string& worker_id);
  // Forgets the worker binding (the session stays, as a plain client) and
  // returns its connection; null if no session is bound to that id.
  rpc::ConnectionPtr UnbindWorker(const std::string& worker_id);
  // Removes the session of `conn` and returns it; null if it had none.
  std::shared_ptr<ClientSession> Remove(const rpc::Connection* conn);
  // The session's object store client id, assigned on first use.
  store::ClientId StoreClientOf(ClientSession& s);
  // A fresh store client id not tied to a connection (transfers).
  store::ClientId NewStoreClient() { return next_store_client_++; }
  // Whether a connected driver or worker advertised that address. O(sessions).
  bool HasAddress(const std::string& address) const;
  size_t size() const { return sessions_.size(); }

 private:
  std::unordered_map<const rpc::Connection*, std::shared_ptr<ClientSession>> sessions_;
  std::unordered_map<std::string, const rpc::Connection*> by_worker_;  // registered workers
  store::ClientId next_store_client_ = 1;
};

}  // namespace fleet::node
