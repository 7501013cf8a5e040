// NodeServer: moving objects between nodes. See node_server.h.
//
// A reader asks its own fleet-node for an object (StoreGet) and names the
// node holding the primary copy. If the object is not here, this node pulls
// it: it asks the source node for the first chunk (which tells the size and
// the owner), creates the object in its own store, and keeps
// `transfer_chunks_in_flight` chunk requests of `transfer_chunk_bytes`
// outstanding, copying each reply into place; the last one seals it. Every
// reader that wants the object meanwhile waits for the same pull (merged),
// and the copy stays (evictable, never spilled), so a large argument moves
// once per node. The source serves each chunk from a pin held only while it
// copies, and remembers which nodes copied the object, so its owner's free
// reaches the copies too. Once a copy is sealed, the owner is told where it
// is (AddObjectLocation).
#include <sys/mman.h>

#include <cstring>

#include "common/ids.h"
#include "common/logging.h"
#include "node/node_server.h"

#include <asio/post.hpp>

namespace fleet::node {

namespace {
// Copies a received chunk into the arena, faulting its pages in first in
// one call (a fresh page fault per 4 KiB inside memcpy costs more than the
// copy itself).
void CopyIn(uint8_t* dst, std::string_view src) {
  uintptr_t a = reinterpret_cast<uintptr_t>(dst) & ~uintptr_t{4095};
  uintptr_t b = (reinterpret_cast<uintptr_t>(dst) + src.size() + 4095) & ~uintptr_t{4095};
#ifdef MADV_POPULATE_WRITE
  ::madvise(reinterpret_cast<void*>(a), b - a, MADV_POPULATE_WRITE);  // best effort
#else
  (void)a;
  (void)b;
#endif
  std::memcpy(dst, src.data(), src.size());
}
}  // namespace

struct NodeServer::Pull {
  std::string id;
  std::string source;            // node id
  rpc::ConnectionPtr conn;
  uint64_t size = 0;
  uint64_t store_offset = 0;     // where the copy lives in our arena
  uint64_t next = 0;             // next byte to ask for
  uint64_t received = 0;
  int in_flight = 0;
  bool created = false;
  bool done = false;
  std::string owner;
  std::vector<std::function<void(const std::string&)>> waiters;
};

rpc::Hello NodeServer::NodeHello() const {
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role("node");
  hello.set_pid(getpid());
  return hello;
}

Result<rpc::ConnectionPtr> NodeServer::PeerNode(const std::string& node_id) {
  if (auto it = peer_nodes_.find(node_id); it != peer_nodes_.end() && !it->second->closed()) {
    return it->second;
  }
  auto n = cluster_.find(node_id);
  if (n == cluster_.end()) {
    return Status::NotFound("node " + ToHex(node_id) + " is not alive in this cluster");
  }
  auto c = rpc::Connect(io_, n->second.address(), NodeHello());
  if (!c.ok()) return c.status();
  c.value()->Start(nullptr, nullptr);
  peer_nodes_[node_id] = c.value();
  return c.value();
}

rpc::ConnectionPtr NodeServer::OwnerConnection(const std::string& owner) {
  if (owner.empty()) return nullptr;
  auto it = owner_conns_.find(owner);
  if (it != owner_conns_.end() && !it->second->closed()) return it->second;
  auto c = rpc::Connect(io_, owner, NodeHello());
  if (!c.ok()) {
    // Refused (nobody listens there any more): the owner is gone, and so are
    // its objects. Anything else (a timeout, a full fd table) proves nothing.
    const std::string& why = c.status().message();
    if (why.find("Connection refused") != std::string::npos ||
        why.find("No such file or directory") != std::string::npos) {
      store_->OwnerGone(owner);
    }
    owner_conns_.erase(owner);
    return nullptr;
  }
  // When the owner's process ends, the objects it owns here go too (the
  // owner may live on another node, so its local connection cannot tell us).
  c.value()->Start(nullptr, [this, owner](const rpc::ConnectionPtr& conn, const Status&) {
    asio::post(io_, [this, owner, conn] {
      auto it = owner_conns_.find(owner);
      if (it == owner_conns_.end() || it->second != conn || stopped_) return;
      owner_conns_.erase(it);
      store_->OwnerGone(owner);
    });
  });
  owner_conns_[owner] = c.value();
  return c.value();
}

void NodeServer::ServePull(const rpc::ConnectionPtr& conn, uint64_t rid, const rpc::PullObject& req) {
  std::weak_ptr<rpc::Connection> weak = conn;
  std::string id = req.object_id();
  uint64_t offset = req.offset();
  uint64_t length = req.length();
  std::string requester = req.requester_node_id();
  store_->Get(transfer_client_, {id}, [this, weak, rid, id, offset, length,
                                       requester](std::vector<store::ObjectLocation> locs) {
    rpc::Envelope reply;
    auto* r = reply.mutable_pull_object_reply();
    const auto& l = locs[0];
    auto c = weak.lock();
    if (!l.error.empty()) {
      r->set_error(l.error);
      if (c) c->Reply(rid, reply);
      return;
    }
    uint64_t off = std::min(offset, l.size);
    uint64_t len = std::min(length, l.size - off);
    r->set_total_size(l.size);
    if (offset == 0) {
      r->set_owner_address(store_->OwnerOf(id));
      if (!requester.empty()) copies_[id].insert(requester);
    }
    // The chunk goes out as the frame's raw payload: one copy, from the arena.
    if (c) c->ReplyWithPayload(rid, reply, reinterpret_cast<const char*>(store_->base() + l.offset + off), len);
    store_->Release(transfer_client_, id);
  });
}

void NodeServer::EnsureLocal(const std::vector<std::string>& ids,
                             const std::vector<std::string>& sources,
                             std::function<void(std::vector<std::string>, std::vector<std::string>)> done) {
  struct State {
    std::vector<std::string> errors;
    std::vector<std::string> held;  // pulled for us, pinned by transfer_client_ until we pin it
    size_t remaining = 1;  // +1 until every id is looked at
    std::function<void(std::vector<std::string>, std::vector<std::string>)> done;
  };
  auto st = std::make_shared<State>();
  st->errors.resize(ids.size());
  st->done = std::move(done);
  auto finish_one = [st] {
    if (--st->remaining == 0) st->done(std::move(st->errors), std::move(st->held));
  };
  for (size_t i = 0; i < ids.size(); i++) {
    const std::string source = i < sources.size() ? sources[i] : std::string();
    if (source.empty() || source == node_id_ || store_->Contains(ids[i])) continue;
    st->remaining++;
    auto it = pulls_.find(ids[i]);
    if (it == pulls_.end()) {
      StartPull(ids[i], source);
      it = pulls_.find(ids[i]);
      if (it == pulls_.end()) {  // failed at once (the source is not reachable)
        st->errors[i] = "cannot reach node " + ToHex(source) + " that holds it";
        finish_one();
        continue;
      }
    }
    std::string id = ids[i];
    it->second->waiters.push_back([st, i, id, finish_one](const std::string& error) {
      st->errors[i] = error;
      if (error.empty()) st->held.push_back(id);
      finish_one();
    });
  }
  finish_one();
}

void NodeServer::StartPull(const std::string& id, const std::string& source) {
  auto conn = PeerNode(source);
  if (!conn.ok()) {
    FLEET_LOG(WARNING) << "cannot pull object " << ToHex(id) << " from node " << ToHex(source)
                       << ": " << conn.status().message();
    return;
  }
  auto pull = std::make_shared<Pull>();
  pull->id = id;
  pull->source = source;
  pull->conn = conn.value();
  pulls_[id] = pull;
  rpc::Envelope req;
  auto* r = req.mutable_pull_object();
  r->set_object_id(id);
  r->set_offset(0);
  r->set_length(options_.transfer_chunk_bytes);
  r->set_requester_node_id(node_id_);
  pull->in_flight = 1;
  pull->next = options_.transfer_chunk_bytes;
  pull->conn->Call(req, [this, pull](const Status& s, rpc::Envelope& reply) {
    pull->in_flight--;
    if (pull->done) return;
    auto* r = reply.mutable_pull_object_reply();
    if (!s.ok()) return FinishPull(pull, "its transfer from node " + ToHex(pull->source) + " failed: " + s.message());
    if (!r->error().empty()) return FinishPull(pull, r->error());
    pull->size = r->total_size();
    pull->owner = r->owner_address();
    pull->next = std::min<uint64_t>(pull->next, pull->size);
    auto first = std::make_shared<std::string>(rpc::CurrentPayload());  // kept: create may wait
    store_->Create(transfer_client_, pull->id, pull->size, pull->owner,
                   "copy from node " + ToHex(pull->source).substr(0, 12),
                   [this, pull, first](Result<std::pair<uint64_t, bool>> created) {
                     if (pull->done) return;
                     if (!created.ok()) return FinishPull(pull, created.status().message());
                     if (created.value().second) return FinishPull(pull, "");  // already here
                     pull->created = true;
                     pull->store_offset = created.value().first;
                     CopyIn(store_->base() + pull->store_offset, *first);
                     pull->received = first->size();
                     PullNextChunks(pull);
                   });
  });
}

void NodeServer::PullNextChunks(const std::shared_ptr<Pull>& pull) {
  if (pull->received == pull->size) {
    Status s = store_->Seal(transfer_client_, pull->id);
    if (!s.ok()) return FinishPull(pull, s.message());
    store_->MarkSecondary(pull->id);
    return FinishPull(pull, "");
  }
  while (pull->in_flight < options_.transfer_chunks_in_flight && pull->next < pull->size) {
    uint64_t offset = pull->next;
    uint64_t length = std::min<uint64_t>(options_.transfer_chunk_bytes, pull->size - offset);
    pull->next += length;
    pull->in_flight++;
    rpc::Envelope req;
    auto* r = req.mutable_pull_object();
    r->set_object_id(pull->id);
    r->set_offset(offset);
    r->set_length(length);
    pull->conn->Call(req, [this, pull, offset, length](const Status& s, rpc::Envelope& reply) {
      pull->in_flight--;
      if (pull->done) return;
      const auto& r = reply.pull_object_reply();
      if (!s.ok()) {
        return FinishPull(pull, "its transfer from node " + ToHex(pull->source) + " failed: " + s.message());
      }
      if (!r.error().empty()) return FinishPull(pull, r.error());
      std::string_view data = rpc::CurrentPayload();
      if (data.size() != length) return FinishPull(pull, "a chunk came back short");
      CopyIn(store_->base() + pull->store_offset + offset, data);
      pull->received += length;
      PullNextChunks(pull);
    });
  }
}

void NodeServer::FinishPull(const std::shared_ptr<Pull>& pull, const std::string& error) {
  if (pull->done) return;
  pull->done = true;
  pulls_.erase(pull->id);
  if (!error.empty()) {
    if (pull->created) store_->Abort(transfer_client_, pull->id);
    FLEET_LOG(WARNING) << "pulling object " << ToHex(pull->id) << " from node "
                       << ToHex(pull->source) << " failed: " << error;
  } else if (!pull->owner.empty()) {
    // The owner keeps the list of copies (get_object_locations).
    if (auto owner = OwnerConnection(pull->owner)) {
      rpc::Envelope m;
      m.mutable_add_object_location()->set_object_id(pull->id);
      m.mutable_add_object_location()->set_node_id(node_id_);
      owner->Send(m);
    }
  }
  auto waiters = std::move(pull->waiters);
  if (error.empty()) {
    // Pin the copy once per waiting reader until that reader has pinned it
    // itself: another pull's room must not evict it in between.
    for (size_t k = 0; k < waiters.size(); k++) {
      store_->Get(transfer_client_, {pull->id}, [](std::vector<store::ObjectLocation>) {});
    }
  }
  for (auto& w : waiters) w(error);
}

}  // namespace fleet::node
