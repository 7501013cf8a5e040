// StoreClient: this process's side of its node's shared-memory object store
// (store/object_store.h). Maps the arena once, on first use; creates, writes
// and seals objects; reads them as pinned views; frees the ones it owns.
//
// A StoreView keeps its object pinned (the node will not move, spill or
// delete it) and the arena mapped until the view is destroyed, even after the
// client is gone: Python may hold numpy arrays over it past shutdown().
// Pages this process has not written yet are pre-faulted with
// MADV_POPULATE_WRITE before a write (a fresh 4 KiB fault costs ~1.5 µs;
// populating first, then copying runs ~7x faster than faulting page by page).
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet {

// The arena as mapped here; unmapped when the last user lets go.
struct StoreMapping {
  uint8_t* base = nullptr;
  uint64_t capacity = 0;
  std::atomic<int64_t> views{0};  // StoreViews alive
  ~StoreMapping();
};

// A pinned, read-only view of one sealed object.
class StoreView {
 public:
  StoreView(std::shared_ptr<StoreMapping> mapping, std::weak_ptr<rpc::Connection> node,
            std::string id, uint64_t offset, uint64_t size)
      : mapping_(std::move(mapping)), node_(std::move(node)), id_(std::move(id)),
        offset_(offset), size_(size) {
    mapping_->views++;
  }
  ~StoreView();
  StoreView(const StoreView&) = delete;
  StoreView& operator=(const StoreView&) = delete;
  const uint8_t* data() const { return mapping_->base + offset_; }
  uint64_t size() const { return size_; }
  const std::string& id() const { return id_; }

 private:
  std::shared_ptr<StoreMapping> mapping_;
  std::weak_ptr<rpc::Connection> node_;
  std::string id_;
  uint64_t offset_;
  uint64_t size_;
};

// One object's read: a view, or why the object is lost.
struct StoreRead {
  std::shared_ptr<StoreView> view;
  std::string error;
  bool full = false;  // not lost: no room to restore it now
};

class StoreClient {
 public:
  explicit StoreClient(rpc::ConnectionPtr node) : node_(std::move(node)) {}

  // Creates object `id` of `size` bytes, lets `fill` write it, and seals it.
  // If the object exists already (a retried task), `fill` is not called.
  // kObjectStoreFull when there is no room even after spilling.
  Status Put(const std::string& id, uint64_t size, const std::string& owner_address,
             const std::string& call_site, const std::function<void(uint8_t*)>& fill);
  // Pins and maps each object (one round trip for all).
  // `sources`: per id, the node holding the primary copy (may be shorter).
  Result<std::vector<StoreRead>> Get(const std::vector<std::string>& ids,
                                     const std::vector<std::string>& sources = {});
  // The owner lets go of its objects (one-way).
  // `nodes`: per id, the node holding it (may be shorter; empty: this one).
  void Free(const std::vector<std::string>& ids, const std::vector<std::string>& nodes = {});
  Result<rpc::StoreListReply> List();
  // Whether views of objects (numpy arrays from get) are alive here.
  bool ViewsAlive();

 private:
  Result<std::shared_ptr<StoreMapping>> Mapping();
  // Pre-faults the pages of [offset, offset+size) this process has not written.
  void Prefault(StoreMapping& m, uint64_t offset, uint64_t size);

  rpc::ConnectionPtr node_;
  std::mutex mu_;
  std::shared_ptr<StoreMapping> mapping_;  // guarded by mu_
  std::vector<bool> faulted_;              // per 2 MiB chunk; guarded by mu_
};

}  // namespace fleet
