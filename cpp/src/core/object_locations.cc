// ObjectLocator implementation; see object_locations.h.
#include "core/object_locations.h"

#include <cstring>
#include <map>

#include "core/object_flags.h"

namespace fleet {

namespace {
constexpr int kRpcTimeoutMs = 60000;
}  // namespace

ObjectLocator::ObjectLocator(MemoryStore& store, PeerConnections& peers)
    : store_(store), peers_(peers) {}

void ObjectLocator::Forget(const std::string& id) {
  MutexLock lk(&mu_);
  copies_.erase(id);
}

rpc::ObjectLocations ObjectLocator::LocateOwned(const std::string& id) {
  rpc::ObjectLocations out;
  StoredObject v;
  auto r = store_.GetOrSubscribe(id, &v, nullptr);
  if (!r.ok() || !r.value()) return out;
  out.set_found(true);
  if (v.flags & kFlagInStore) {
    uint64_t size = 0;
    if (v.data.size() >= 8) std::memcpy(&size, v.data.data(), 8);  // little-endian, as written
    out.set_object_size(size);
    std::string primary = v.data.size() > 8 ? v.data.substr(8) : node_id_;
    out.add_node_ids(primary);
    MutexLock lk(&mu_);
    if (auto it = copies_.find(id); it != copies_.end()) {
      for (const auto& n : it->second) {
        if (n != primary) out.add_node_ids(n);
      }
    }
  } else {
    // A small value lives in its owner's memory (inline), on this node.
    out.set_object_size(v.data.size());
    out.add_node_ids(node_id_);
  }
  return out;
}

Result<std::vector<rpc::ObjectLocations>> ObjectLocator::Locate(
    const std::vector<std::string>& ids, int64_t timeout_ms) {
  std::vector<rpc::ObjectLocations> out(ids.size());
  std::map<std::string, std::vector<size_t>> by_owner;
  for (size_t i = 0; i < ids.size(); i++) {
    auto owner = store_.OwnerOf(ids[i]);
    if (owner && !owner->empty() && *owner != self_address_) {
      by_owner[*owner].push_back(i);
    } else {
      out[i] = LocateOwned(ids[i]);
    }
  }
  for (auto& [owner, idx] : by_owner) {
    auto conn = peers_.To(owner);
    if (!conn.ok()) continue;  // the owner is gone: not found
    rpc::Envelope req;
    for (size_t i : idx) req.mutable_get_object_locations()->add_object_ids(ids[i]);
    auto r = conn.value()->CallSync(req, timeout_ms < 0 ? kRpcTimeoutMs : static_cast<int>(timeout_ms));
    if (!r.ok()) return r.status();
    const auto& locs = r.value().get_object_locations_reply().locations();
    for (size_t k = 0; k < idx.size() && k < static_cast<size_t>(locs.size()); k++) {
      out[idx[k]] = locs[static_cast<int>(k)];
    }
  }
  return out;
}

void ObjectLocator::RegisterHandlers(rpc::Dispatcher<const rpc::ConnectionPtr>& listener) {
  using rpc::PeerRole;
  using rpc::RoleBit;
  FLEET_RPC_HANDLE(listener, AddObjectLocation, add_object_location, HandleAddObjectLocation,
                   RoleBit(PeerRole::kNode));
  FLEET_RPC_HANDLE(listener, GetObjectLocations, get_object_locations, HandleGetObjectLocations,
                   RoleBit(PeerRole::kPeer));
}

void ObjectLocator::HandleAddObjectLocation(const rpc::ConnectionPtr&, uint64_t,
                                            rpc::AddObjectLocation& a) {
  if (!store_.Contains(a.object_id())) return;  // freed meanwhile
  MutexLock lk(&mu_);
  copies_[a.object_id()].insert(a.node_id());
}

void ObjectLocator::HandleGetObjectLocations(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                             rpc::GetObjectLocations& m) {
  rpc::Envelope reply;
  auto* r = reply.mutable_get_object_locations_reply();
  for (const auto& id : m.object_ids()) *r->add_locations() = LocateOwned(id);
  conn->Reply(request_id, reply);
}

}  // namespace fleet
