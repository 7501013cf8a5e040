// StoreService implementation; see store_service.h.
#include "node/store_service.h"

#include <unistd.h>

namespace fleet::node {

namespace {
// Answers `request_id` with an error (nothing if it is 0 or the asker left).
void ReplyError(const std::weak_ptr<rpc::Connection>& weak, uint64_t rid, const Status& s) {
  auto c = weak.lock();
  if (!c || rid == 0) return;
  rpc::Envelope reply;
  reply.mutable_error()->set_code(static_cast<int>(s.code()));
  reply.mutable_error()->set_message(s.message());
  c->Reply(rid, reply);
}
}  // namespace

void StoreService::HandleStoreInfo(ClientSession& s, uint64_t rid, const rpc::StoreInfo&) {
  sessions_.StoreClientOf(s);
  if (rid == 0) return;
  rpc::Envelope reply;
  auto* r = reply.mutable_store_info_reply();
  r->set_pid(getpid());
  r->set_fd(store_.fd());
  r->set_capacity(store_.capacity());
  s.conn->Reply(rid, reply);
}

void StoreService::HandleStoreCreate(ClientSession& s, uint64_t rid, const rpc::StoreCreate& c) {
  store::ClientId client = sessions_.StoreClientOf(s);
  // An owner on another node (a task's caller): watch it, so its objects go
  // when it does.
  if (!c.owner_address().empty() && !sessions_.HasAddress(c.owner_address())) {
    transfer_.OwnerConnection(c.owner_address());
  }
  std::weak_ptr<rpc::Connection> weak = s.conn;
  store_.Create(client, c.object_id(), c.size(), c.owner_address(), c.call_site(),
                [weak, rid](Result<std::pair<uint64_t, bool>> r) {
                  if (!r.ok()) return ReplyError(weak, rid, r.status());
                  auto conn = weak.lock();
                  if (!conn) return;
                  rpc::Envelope reply;
                  reply.mutable_store_create_reply()->set_offset(r.value().first);
                  reply.mutable_store_create_reply()->set_exists(r.value().second);
                  conn->Reply(rid, reply);
                });
}

void StoreService::HandleStoreSeal(ClientSession& s, uint64_t rid, const rpc::StoreSeal& m) {
  Status st = store_.Seal(sessions_.StoreClientOf(s), m.object_id());
  if (!st.ok()) return ReplyError(s.conn, rid, st);
  if (rid == 0) return;
  rpc::Envelope reply;
  reply.mutable_store_seal_reply();
  s.conn->Reply(rid, reply);
}

void StoreService::HandleStoreGet(ClientSession& s, uint64_t rid, const rpc::StoreGet& g) {
  store::ClientId client = sessions_.StoreClientOf(s);
  std::weak_ptr<rpc::Connection> weak = s.conn;
  std::vector<std::string> ids(g.object_ids().begin(), g.object_ids().end());
  std::vector<std::string> sources(g.source_node_ids().begin(), g.source_node_ids().end());
  // Objects whose primary copy is on another node are pulled here first.
  transfer_.EnsureLocal(ids, sources, [this, weak, rid, client, ids](std::vector<std::string> pull_errors,
                                                                     std::vector<std::string> held) {
    auto unhold = [this, held] { transfer_.Unhold(held); };
    if (!weak.lock()) return unhold();  // the reader left meanwhile: pin nothing for it
    store_.Get(client, ids, [weak, rid, pull_errors, unhold](std::vector<store::ObjectLocation> locs) {
      unhold();
      auto conn = weak.lock();
      if (!conn) return;
      rpc::Envelope reply;
      auto* r = reply.mutable_store_get_reply();
      for (size_t i = 0; i < locs.size(); i++) {
        auto& l = locs[i];
        auto* out = r->add_locations();
        out->set_offset(l.offset);
        out->set_size(l.size);
        out->set_error(l.error.empty() || pull_errors[i].empty() ? l.error : pull_errors[i]);
        out->set_full(l.full);
      }
      conn->Reply(rid, reply);
    });
  });
}

void StoreService::HandleStoreRelease(ClientSession& s, uint64_t, const rpc::StoreRelease& m) {
  store::ClientId client = sessions_.StoreClientOf(s);
  for (const auto& id : m.object_ids()) store_.Release(client, id);
}

void StoreService::HandleStoreFree(ClientSession& s, uint64_t, const rpc::StoreFree& m) {
  sessions_.StoreClientOf(s);
  transfer_.Free(m);  // copies other nodes pulled go too
}

void StoreService::HandleStoreList(ClientSession& s, uint64_t rid, const rpc::StoreList&) {
  sessions_.StoreClientOf(s);
  if (rid == 0) return;
  rpc::Envelope reply;
  store_.List(reply.mutable_store_list_reply());
  s.conn->Reply(rid, reply);
}

}  // namespace fleet::node
