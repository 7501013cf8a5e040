// The decisions of object transfer between nodes, without I/O:
//  - PullWindow: which chunks of an object a pull asks for next. The first
//    request is one chunk at offset 0 (its reply tells the size); then up to
//    `max_in_flight` requests of `chunk_bytes` stay outstanding until every
//    byte was asked for; the pull is complete when every byte arrived.
//  - CopyTracker: which nodes copied which objects from this node, and so
//    where an owner's free must be forwarded.
// Not thread-safe (fleet-node's io thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "fleet.pb.h"

namespace fleet::node {

class PullWindow {
 public:
  struct Chunk {
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  PullWindow(uint64_t chunk_bytes, int max_in_flight)
      : chunk_bytes_(chunk_bytes), max_in_flight_(max_in_flight) {}

  // The first request (the size is not known yet).
  Chunk Start() {
    in_flight_ = 1;
    next_ = chunk_bytes_;
    return {0, chunk_bytes_};
  }
  // The first reply told the object's size.
  void SetSize(uint64_t size) {
    size_ = size;
    next_ = std::min<uint64_t>(next_, size_);
  }
  // A reply (any, failed or not) came back.
  void Replied() { in_flight_--; }
  // `n` more bytes are in place.
  void Received(uint64_t n) { received_ += n; }
  bool Complete() const { return received_ == size_; }
  // The next chunk to ask for; nullopt while `max_in_flight` are out or when
  // every byte was asked for.
  std::optional<Chunk> Next() {
    if (in_flight_ >= max_in_flight_ || next_ >= size_) return std::nullopt;
    Chunk c{next_, std::min<uint64_t>(chunk_bytes_, size_ - next_)};
    next_ += c.length;
    in_flight_++;
    return c;
  }
  uint64_t size() const { return size_; }
  uint64_t received() const { return received_; }
  int in_flight() const { return in_flight_; }

 private:
  const uint64_t chunk_bytes_;
  const int max_in_flight_;
  uint64_t size_ = 0;
  uint64_t next_ = 0;  // next byte to ask for
  uint64_t received_ = 0;
  int in_flight_ = 0;
};

class CopyTracker {
 public:
  // `node` pulled a copy of `object_id` from here.
  void Served(const std::string& object_id, const std::string& node) { copies_[object_id].insert(node); }
  // For a free of `f`'s objects received here (this node is `self`): adds to
  // `forward` (by node id) the frees other nodes must get: the node holding
  // each primary copy (when it is not this one), and every node that copied
  // one from here. Forgets those copies.
  void RouteFree(const rpc::StoreFree& f, const std::string& self,
                 std::map<std::string, rpc::Envelope>* forward) {
    for (int i = 0; i < f.object_ids_size(); i++) {
      const std::string& id = f.object_ids(i);
      if (i < f.node_ids_size() && !f.node_ids(i).empty() && f.node_ids(i) != self) {
        (*forward)[f.node_ids(i)].mutable_store_free()->add_object_ids(id);
      }
      auto c = copies_.find(id);
      if (c == copies_.end()) continue;
      for (const auto& node : c->second) {
        if (node != self) (*forward)[node].mutable_store_free()->add_object_ids(id);
      }
      copies_.erase(c);
    }
  }
  // Forgets the copies of objects for which `gone(id)` is true. O(objects).
  template <typename Pred>
  void Prune(Pred gone) {
    std::erase_if(copies_, [&](const auto& kv) { return gone(kv.first); });
  }
  size_t size() const { return copies_.size(); }

 private:
  std::map<std::string, std::set<std::string>> copies_;  // object id -> nodes that pulled it
};

}  // namespace fleet::node
