// ObjectTransfer implementation; see object_transfer.h.
//
// A pull asks the source node for the first chunk (which tells the size and
// the owner), creates the object in this store, and keeps
// `chunks_in_flight` chunk requests of `chunk_bytes` outstanding, copying
// each reply into place; the last one seals it. The source serves each chunk
// from a pin held only while it copies. Once a copy is sealed, its owner is
// told where it is (AddObjectLocation).
#include "node/object_transfer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cstring>

#include "common/ids.h"
#include "common/logging.h"

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

struct ObjectTransfer::Pull {
  Pull(uint64_t chunk_bytes, int max_in_flight) : window(chunk_bytes, max_in_flight) {}
  std::string id;
  std::string source;            // node id
  rpc::ConnectionPtr conn;
  PullWindow window;
  uint64_t store_offset = 0;     // where the copy lives in our arena
  bool created = false;
  bool done = false;
  std::string owner;
  std::vector<std::function<void(const std::string&)>> waiters;
};

ObjectTransfer::ObjectTransfer(asio::io_context& io, TransferOptions options, store::ObjectStore& store,
                               store::ClientId transfer_client, const scheduling::ClusterView& cluster)
    : io_(io), options_(std::move(options)), store_(store), transfer_client_(transfer_client),
      cluster_(cluster) {}

ObjectTransfer::~ObjectTransfer() = default;

void ObjectTransfer::OnClusterChanged() {
  for (auto it = peer_nodes_.begin(); it != peer_nodes_.end();) {
    if (!cluster_.count(it->first)) {
      it->second->Close();
      it = peer_nodes_.erase(it);
    } else {
      ++it;
    }
  }
}

void ObjectTransfer::Tick() {
  copies_.Prune([&](const std::string& id) { return !store_.Contains(id); });
}

void ObjectTransfer::Unhold(const std::vector<std::string>& held) {
  for (const auto& id : held) store_.Release(transfer_client_, id);
}

void ObjectTransfer::Free(const rpc::StoreFree& f) {
  std::map<std::string, rpc::Envelope> forward;
  // Held by another node (the primary copy): that node frees it (and the
  // copies it served); a copy here goes now.
  copies_.RouteFree(f, options_.node_id, &forward);
  for (const auto& id : f.object_ids()) store_.Free(id);
  for (auto& [node, m] : forward) {
    if (auto peer = PeerNode(node); peer.ok()) peer.value()->Send(m);
  }
}

rpc::Hello ObjectTransfer::NodeHello() const {
  rpc::Hello hello;
  hello.set_token(options_.token);
  hello.set_role("node");
  hello.set_pid(getpid());
  return hello;
}

Result<rpc::ConnectionPtr> ObjectTransfer::PeerNode(const std::string& node_id) {
  if (auto it = peer_nodes_.find(node_id); it != peer_nodes_.end() && !it->second->closed()) {
    return it->second;
  }
  auto n = cluster_.find(node_id);
  if (n == cluster_.end()) {
    return Status::NotFound("node " + ToHex(node_id) + " is not alive in this cluster");
  }
  auto c = rpc::Connect(io_, n->second.address, NodeHello());
  if (!c.ok()) return c.status();
  c.value()->Start(nullptr, nullptr);
  peer_nodes_[node_id] = c.value();
  return c.value();
}

rpc::ConnectionPtr ObjectTransfer::OwnerConnection(const std::string& owner) {
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
      store_.OwnerGone(owner);
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
      store_.OwnerGone(owner);
    });
  });
  owner_conns_[owner] = c.value();
  return c.value();
}

void ObjectTransfer::HandlePullObject(ClientSession& s, uint64_t rid, const rpc::PullObject& req) {
  std::weak_ptr<rpc::Connection> weak = s.conn;
  std::string id = req.object_id();
  uint64_t offset = req.offset();
  uint64_t length = req.length();
  std::string requester = req.requester_node_id();
  store_.Get(transfer_client_, {id}, [this, weak, rid, id, offset, length,
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
      r->set_owner_address(store_.OwnerOf(id));
      if (!requester.empty()) copies_.Served(id, requester);
    }
    // The chunk goes out as the frame's raw payload: one copy, from the arena.
    if (c) c->ReplyWithPayload(rid, reply, reinterpret_cast<const char*>(store_.base() + l.offset + off), len);
    store_.Release(transfer_client_, id);
  });
}

void ObjectTransfer::EnsureLocal(const std::vector<std::string>& ids,
                                 const std::vector<std::string>& sources, EnsureDone done) {
  struct State {
    std::vector<std::string> errors;
    std::vector<std::string> held;  // pulled for us, pinned by transfer_client_ until we pin it
    size_t remaining = 1;  // +1 until every id is looked at
    EnsureDone done;
  };
  auto st = std::make_shared<State>();
  st->errors.resize(ids.size());
  st->done = std::move(done);
  auto finish_one = [st] {
    if (--st->remaining == 0) st->done(std::move(st->errors), std::move(st->held));
  };
  for (size_t i = 0; i < ids.size(); i++) {
    const std::string source = i < sources.size() ? sources[i] : std::string();
    if (source.empty() || source == options_.node_id || store_.Contains(ids[i])) continue;
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

void ObjectTransfer::StartPull(const std::string& id, const std::string& source) {
  auto conn = PeerNode(source);
  if (!conn.ok()) {
    FLEET_LOG(WARNING) << "cannot pull object " << ToHex(id) << " from node " << ToHex(source)
                       << ": " << conn.status().message();
    return;
  }
  auto pull = std::make_shared<Pull>(options_.chunk_bytes, options_.chunks_in_flight);
  pull->id = id;
  pull->source = source;
  pull->conn = conn.value();
  pulls_[id] = pull;
  PullWindow::Chunk first = pull->window.Start();
  rpc::Envelope req;
  auto* r = req.mutable_pull_object();
  r->set_object_id(id);
  r->set_offset(first.offset);
  r->set_length(first.length);
  r->set_requester_node_id(options_.node_id);
  pull->conn->Call(req, [this, pull](const Status& s, rpc::Envelope& reply) {
    pull->window.Replied();
    if (pull->done) return;
    auto* r = reply.mutable_pull_object_reply();
    if (!s.ok()) return FinishPull(pull, "its transfer from node " + ToHex(pull->source) + " failed: " + s.message());
    if (!r->error().empty()) return FinishPull(pull, r->error());
    pull->window.SetSize(r->total_size());
    pull->owner = r->owner_address();
    auto first = std::make_shared<std::string>(rpc::CurrentPayload());  // kept: create may wait
    store_.Create(transfer_client_, pull->id, pull->window.size(), pull->owner,
                   "copy from node " + ToHex(pull->source).substr(0, 12),
                   [this, pull, first](Result<std::pair<uint64_t, bool>> created) {
                     if (pull->done) return;
                     if (!created.ok()) return FinishPull(pull, created.status().message());
                     if (created.value().second) return FinishPull(pull, "");  // already here
                     pull->created = true;
                     pull->store_offset = created.value().first;
                     CopyIn(store_.base() + pull->store_offset, *first);
                     pull->window.Received(first->size());
                     PullNextChunks(pull);
                   });
  });
}

void ObjectTransfer::PullNextChunks(const std::shared_ptr<Pull>& pull) {
  if (pull->window.Complete()) {
    Status s = store_.Seal(transfer_client_, pull->id);
    if (!s.ok()) return FinishPull(pull, s.message());
    store_.MarkSecondary(pull->id);
    return FinishPull(pull, "");
  }
  while (auto chunk = pull->window.Next()) {
    uint64_t offset = chunk->offset;
    uint64_t length = chunk->length;
    rpc::Envelope req;
    auto* r = req.mutable_pull_object();
    r->set_object_id(pull->id);
    r->set_offset(offset);
    r->set_length(length);
    pull->conn->Call(req, [this, pull, offset, length](const Status& s, rpc::Envelope& reply) {
      pull->window.Replied();
      if (pull->done) return;
      const auto& r = reply.pull_object_reply();
      if (!s.ok()) {
        return FinishPull(pull, "its transfer from node " + ToHex(pull->source) + " failed: " + s.message());
      }
      if (!r.error().empty()) return FinishPull(pull, r.error());
      std::string_view data = rpc::CurrentPayload();
      if (data.size() != length) return FinishPull(pull, "a chunk came back short");
      CopyIn(store_.base() + pull->store_offset + offset, data);
      pull->window.Received(length);
      PullNextChunks(pull);
    });
  }
}

void ObjectTransfer::FinishPull(const std::shared_ptr<Pull>& pull, const std::string& error) {
  if (pull->done) return;
  pull->done = true;
  pulls_.erase(pull->id);
  if (!error.empty()) {
    if (pull->created) store_.Abort(transfer_client_, pull->id);
    FLEET_LOG(WARNING) << "pulling object " << ToHex(pull->id) << " from node "
                       << ToHex(pull->source) << " failed: " << error;
  } else if (!pull->owner.empty()) {
    // The owner keeps the list of copies (get_object_locations).
    if (auto owner = OwnerConnection(pull->owner)) {
      rpc::Envelope m;
      m.mutable_add_object_location()->set_object_id(pull->id);
      m.mutable_add_object_location()->set_node_id(options_.node_id);
      owner->Send(m);
    }
  }
  auto waiters = std::move(pull->waiters);
  if (error.empty()) {
    // Pin the copy once per waiting reader until that reader has pinned it
    // itself: another pull's room must not evict it in between.
    for (size_t k = 0; k < waiters.size(); k++) {
      store_.Get(transfer_client_, {pull->id}, [](std::vector<store::ObjectLocation>) {});
    }
  }
  for (auto& w : waiters) w(error);
}

}  // namespace fleet::node
