// SessionTable implementation; see client_session.h.
#include "node/client_session.h"

namespace fleet::node {

const std::shared_ptr<ClientSession>& SessionTable::Open(const rpc::ConnectionPtr& conn) {
  auto [it, added] = sessions_.try_emplace(conn.get());
  if (added) {
    it->second = std::make_shared<ClientSession>();
    it->second->conn = conn;
    it->second->role = rpc::ParseRole(conn->hello().role());
  }
  return it->second;
}

ClientSession* SessionTable::Find(const rpc::Connection* conn) {
  auto it = sessions_.find(conn);
  return it == sessions_.end() ? nullptr : it->second.get();
}

ClientSession* SessionTable::FindWorker(const std::string& worker_id) {
  auto it = by_worker_.find(worker_id);
  return it == by_worker_.end() ? nullptr : Find(it->second);
}

void SessionTable::BindWorker(ClientSession& s, const std::string& worker_id) {
  if (!s.worker_id.empty()) by_worker_.erase(s.worker_id);
  s.worker_id = worker_id;
  by_worker_[worker_id] = s.conn.get();
}

rpc::ConnectionPtr SessionTable::UnbindWorker(const std::string& worker_id) {
  auto it = by_worker_.find(worker_id);
  if (it == by_worker_.end()) return nullptr;
  ClientSession* s = Find(it->second);
  by_worker_.erase(it);
  if (!s) return nullptr;
  s->worker_id.clear();
  return s->conn;
}

std::shared_ptr<ClientSession> SessionTable::Remove(const rpc::Connection* conn) {
  auto it = sessions_.find(conn);
  if (it == sessions_.end()) return nullptr;
  std::shared_ptr<ClientSession> s = std::move(it->second);
  sessions_.erase(it);
  if (!s->worker_id.empty()) by_worker_.erase(s->worker_id);
  return s;
}

store::ClientId SessionTable::StoreClientOf(ClientSession& s) {
  if (s.store_client == 0) s.store_client = next_store_client_++;
  return s.store_client;
}

bool SessionTable::HasAddress(const std::string& address) const {
  for (auto& [conn, s] : sessions_) {
    if (!s->address.empty() && s->address == address) return true;
  }
  return false;
}

}  // namespace fleet::node
