// ObjectStore: the node's shared-memory object store, inside fleet-node.
//
// One arena (a memfd of `capacity` bytes) that every local driver and worker
// maps once (as /proc/<fleet-node pid>/fd/<fd>). The store only allocates
// and keeps the books; clients copy bytes in and out of their own mapping.
// An object is created (space reserved for its creator), written by the
// creator, sealed (immutable from then on), read by pinning it (a reader's
// views keep their pin until released), and freed by its owner; a freed
// object that is still pinned goes when the last pin does.
//
// Memory pressure: a request that does not fit first evicts unpinned copies
// that also live on disk (least recently used first), then spills unpinned
// objects to files under `spill_dir` on a background thread and retries as
// each spill completes. A spilled object is restored on the next Get. A
// request that still cannot fit after `full_timeout_ms` (everything left is
// pinned or being written) fails with kObjectStoreFull, naming the sizes; one
// larger than the arena fails at once. A missing or truncated spill file
// makes that object lost (kObjectLost for its readers); the daemon carries on.
//
// Clients are identified by a ClientId chosen by the caller (one per
// connection); ClientGone() drops its pins and reclaims the objects it was
// still writing; OwnerGone() frees the objects a dead process owned.
//
// Threading: every method runs on the io thread that owns `io`; file I/O runs
// on one internal thread whose completions are posted back to `io`.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "fleet.pb.h"
#include "store/allocator.h"

namespace fleet::store {

using ClientId = uint64_t;

struct StoreOptions {
  uint64_t capacity = 0;
  std::string spill_dir;
  // How long a create waits for pinned memory to be released before failing.
  int full_timeout_ms = 10000;
};

struct ObjectLocation {
  uint64_t offset = 0;
  uint64_t size = 0;
  std::string error;  // non-empty: lost, or (full) no room to restore it now
  bool full = false;
};

class ObjectStore {
 public:
  // (offset, exists): exists = the object was already sealed (nothing to write).
  using CreateCallback = std::function<void(Result<std::pair<uint64_t, bool>>)>;
  using GetCallback = std::function<void(std::vector<ObjectLocation>)>;

  ObjectStore(asio::io_context& io, StoreOptions options);
  ~ObjectStore();
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // Creates and maps the arena.
  Status Init();
  int fd() const { return fd_; }
  uint64_t capacity() const { return alloc_.capacity(); }
  const std::string& spill_dir() const { return options_.spill_dir; }

  void Create(ClientId client, const std::string& id, uint64_t size, const std::string& owner,
              const std::string& call_site, CreateCallback done);
  Status Seal(ClientId client, const std::string& id);
  // Pins every object found (one pin each, for `client`); `done` gets one
  // location per id, in order, once spilled ones are restored.
  void Get(ClientId client, const std::vector<std::string>& ids, GetCallback done);
  void Release(ClientId client, const std::string& id);
  void Free(const std::string& id);
  void ClientGone(ClientId client);
  // The process at `owner_address` is gone: its objects are freed.
  void OwnerGone(const std::string& owner_address);
  void List(rpc::StoreListReply* out) const;
  // Whether a sealed, usable copy is here (in memory or spilled).
  bool Contains(const std::string& id) const;
  // Drops an object `client` is still writing (a transfer that failed).
  void Abort(ClientId client, const std::string& id);
  // The owner's address of an object here ("" if unknown).
  std::string OwnerOf(const std::string& id) const;
  // A copy pulled from another node: evicted (dropped) before anything is
  // spilled when room is needed and no reader pins it; never spilled.
  void MarkSecondary(const std::string& id);
  // The arena, for node-to-node transfer (reads of sealed, pinned objects;
  // writes of objects being created by the caller).
  uint8_t* base() const { return base_; }
  // Stops the I/O thread and removes every spill file. Idempotent.
  void Shutdown();

 private:
  enum class State { kCreating, kInMemory, kSpilling, kSpilled, kRestoring, kLost };
  struct GetRequest {
    ClientId client;
    std::vector<ObjectLocation> locations;
    size_t remaining = 0;
    GetCallback done;
  };
  struct Object {
    State state = State::kCreating;
    uint64_t size = 0;
    uint64_t offset = 0;
    bool has_region = false;
    bool on_disk = false;   // a complete spill file exists
    bool freed = false;     // the owner let go
    bool spill_failed = false;  // writing its spill file failed: not tried again
    bool secondary = false;     // a copy of another node's object (see MarkSecondary)
    ClientId creator = 0;
    std::string owner;
    std::string call_site;
    std::map<ClientId, int> pins;
    int total_pins = 0;
    uint64_t last_used = 0;
    std::string lost_reason;
    // Gets waiting for a restore: (request, index in it).
    std::vector<std::pair<std::shared_ptr<GetRequest>, size_t>> waiting;
  };
  struct PendingAlloc {
    uint64_t size;
    ClientId client;  // the creator; 0 for a restore
    std::string what;
    std::function<void(Result<uint64_t>)> done;
    std::chrono::steady_clock::time_point deadline;
  };
  class IoThread;

  using Iter = std::unordered_map<std::string, Object>::iterator;
  // Space for `size` bytes now (evicting disk-backed copies) or later.
  void RequestSpace(uint64_t size, ClientId client, const std::string& what,
                    std::function<void(Result<uint64_t>)> done);
  std::optional<uint64_t> AllocateEvicting(uint64_t size);
  void ProcessPending();
  void StartSpills(uint64_t need);
  void OnSpilled(const std::string& id, Status s);
  void StartRestore(Iter it);
  void OnRestored(const std::string& id, Status s);
  void Pin(Object& o, ClientId client);
  void Answer(const std::shared_ptr<GetRequest>& r, size_t i, ObjectLocation loc);
  void DropRegion(Object& o);
  // Erases a freed object once nothing uses it.
  void MaybeDelete(Iter it);
  void CheckDeadlines();
  Status FullError(uint64_t size, const std::string& what) const;
  std::string SpillPath(const std::string& id) const;

  asio::io_context& io_;
  StoreOptions options_;
  Allocator alloc_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  std::unordered_map<std::string, Object> objects_;
  std::deque<PendingAlloc> pending_;
  uint64_t spilling_bytes_ = 0;
  uint64_t tick_ = 0;
  uint64_t spilled_total_ = 0;
  uint64_t restored_total_ = 0;
  std::unique_ptr<IoThread> io_thread_;
  std::unique_ptr<asio::steady_timer> deadline_timer_;
  bool timer_armed_ = false;
  // Owners that are gone (the last 4096): an object created for one of them
  // later (a task that finished after its caller died) is freed when sealed.
  std::set<std::string> gone_owners_;
  std::deque<std::string> gone_order_;
};

}  // namespace fleet::store
