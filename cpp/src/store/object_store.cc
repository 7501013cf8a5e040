// ObjectStore implementation; see object_store.h.
#include "store/object_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/post.hpp>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/ids.h"
#include "common/logging.h"

namespace fleet::store {

namespace {

std::string Bytes(uint64_t n) {
  char buf[64];
  if (n >= (1ull << 30)) {
    snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(n) / (1ull << 30));
  } else if (n >= (1ull << 20)) {
    snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1ull << 20));
  } else {
    snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  }
  return buf;
}

Status WriteFile(const std::string& path, const uint8_t* data, uint64_t size) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IoError("cannot create spill file " + path + ": " + strerror(errno));
  uint64_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, std::min<uint64_t>(size - off, 1 << 30));
    if (n <= 0) {
      Status s = Status::IoError("cannot write spill file " + path + ": " + strerror(errno));
      ::close(fd);
      ::unlink(path.c_str());
      return s;
    }
    off += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return Status::OK();
}

Status ReadFile(const std::string& path, uint8_t* data, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return {StatusCode::kObjectLost,
            "its spill file " + path + " cannot be opened: " + strerror(errno)};
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
    uint64_t have = static_cast<uint64_t>(st.st_size);
    ::close(fd);
    return {StatusCode::kObjectLost, "its spill file " + path + " is damaged: it holds " +
                                         std::to_string(have) + " bytes, not " +
                                         std::to_string(size)};
  }
  uint64_t off = 0;
  while (off < size) {
    ssize_t n = ::read(fd, data + off, std::min<uint64_t>(size - off, 1 << 30));
    if (n <= 0) {
      ::close(fd);
      return {StatusCode::kObjectLost, "its spill file " + path + " could not be read fully (" +
                                           std::to_string(off) + " of " + std::to_string(size) +
                                           " bytes)"};
    }
    off += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return Status::OK();
}

}  // namespace

// Runs file jobs one at a time on its own thread; each job's completion is
// posted to the io thread.
class ObjectStore::IoThread {
 public:
  explicit IoThread(asio::io_context& io) : io_(io), thread_([this] { Run(); }) {}
  ~IoThread() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void Submit(std::function<Status()> job, std::function<void(Status)> done) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      jobs_.emplace_back(std::move(job), std::move(done));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    while (true) {
      std::pair<std::function<Status()>, std::function<void(Status)>> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      Status s = job.first();
      asio::post(io_, [done = std::move(job.second), s] { done(s); });
    }
  }
  asio::io_context& io_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::function<Status()>, std::function<void(Status)>>> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

ObjectStore::ObjectStore(asio::io_context& io, StoreOptions options)
    : io_(io), options_(std::move(options)), alloc_(options_.capacity) {}

ObjectStore::~ObjectStore() {
  Shutdown();
  if (base_ != nullptr) ::munmap(base_, alloc_.capacity());
  if (fd_ >= 0) ::close(fd_);
}

Status ObjectStore::Init() {
  if (alloc_.capacity() == 0) return Status::Invalid("the object store needs a capacity > 0");
  fd_ = ::memfd_create("fleet-object-store", MFD_CLOEXEC);
  if (fd_ < 0) return Status::IoError(std::string("memfd_create failed: ") + strerror(errno));
  if (::ftruncate(fd_, static_cast<off_t>(alloc_.capacity())) != 0) {
    return Status::IoError("cannot size the object store to " + Bytes(alloc_.capacity()) + ": " +
                           strerror(errno));
  }
  void* p = ::mmap(nullptr, alloc_.capacity(), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) return Status::IoError(std::string("cannot map the object store: ") + strerror(errno));
  base_ = static_cast<uint8_t*>(p);
  io_thread_ = std::make_unique<IoThread>(io_);
  deadline_timer_ = std::make_unique<asio::steady_timer>(io_);
  return Status::OK();
}

void ObjectStore::Shutdown() {
  io_thread_.reset();  // joins; pending completions are dropped with io_
  if (deadline_timer_) deadline_timer_->cancel();
  for (auto& [id, o] : objects_) {
    // kSpilling: its file may be complete, the completion not yet seen.
    if (o.on_disk || o.state == State::kSpilling) ::unlink(SpillPath(id).c_str());
  }
  if (!options_.spill_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove(options_.spill_dir, ec);  // only if empty
  }
}

std::string ObjectStore::SpillPath(const std::string& id) const {
  return options_.spill_dir + "/" + ToHex(id);
}

// ---- create / seal -----------------------------------------------------------

void ObjectStore::Create(ClientId client, const std::string& id, uint64_t size,
                         const std::string& owner, const std::string& call_site,
                         CreateCallback done) {
  auto [it, added] = objects_.try_emplace(id);
  if (!added) {
    Object& o = it->second;
    if (o.state == State::kCreating) {
      done(Status(StatusCode::kAlreadyExists,
                  "object " + ToHex(id) + " is being written by another process"));
    } else if (o.state == State::kLost) {
      done(Status(StatusCode::kObjectLost, "object " + ToHex(id) + " is lost: " + o.lost_reason));
    } else {
      done(std::make_pair(uint64_t{0}, true));
    }
    return;
  }
  Object& o = it->second;
  o.state = State::kCreating;
  o.size = size;
  o.creator = client;
  o.owner = owner;
  o.call_site = call_site;
  o.freed = gone_owners_.count(owner) > 0;  // nobody will ever free it otherwise
  RequestSpace(size, client, "object " + ToHex(id), [this, id, client, done = std::move(done)](
                                                 Result<uint64_t> r) {
    auto it = objects_.find(id);
    bool ours = it != objects_.end() && it->second.state == State::kCreating &&
                it->second.creator == client && !it->second.has_region;
    if (!r.ok()) {
      if (ours) objects_.erase(it);
      done(r.status());
      return;
    }
    if (!ours) {  // the creator left meanwhile
      alloc_.Free(r.value());
      ProcessPending();
      done(Status::Disconnected("the creator left"));
      return;
    }
    it->second.offset = r.value();
    it->second.has_region = true;
    done(std::make_pair(r.value(), false));
  });
}

bool ObjectStore::Contains(const std::string& id) const {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.freed) return false;
  State st = it->second.state;
  return st != State::kCreating && st != State::kLost;
}

void ObjectStore::Abort(ClientId client, const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.state != State::kCreating || it->second.creator != client) {
    return;
  }
  DropRegion(it->second);
  objects_.erase(it);
  ProcessPending();
}

std::string ObjectStore::OwnerOf(const std::string& id) const {
  auto it = objects_.find(id);
  return it == objects_.end() ? std::string() : it->second.owner;
}

void ObjectStore::MarkSecondary(const std::string& id) {
  auto it = objects_.find(id);
  if (it != objects_.end()) it->second.secondary = true;
}

Status ObjectStore::Seal(ClientId client, const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second.state != State::kCreating ||
      it->second.creator != client || !it->second.has_region) {
    return Status::NotFound("object " + ToHex(id) + " is not being created by this client");
  }
  it->second.state = State::kInMemory;
  it->second.last_used = ++tick_;
  MaybeDelete(it);  // freed by its owner before it was sealed
  return Status::OK();
}

// ---- get / release / free ----------------------------------------------------

void ObjectStore::Pin(Object& o, ClientId client) {
  o.pins[client]++;
  o.total_pins++;
  o.last_used = ++tick_;
}

void ObjectStore::Answer(const std::shared_ptr<GetRequest>& r, size_t i, ObjectLocation loc) {
  r->locations[i] = std::move(loc);
  if (--r->remaining == 0) {
    r->locations.pop_back();  // the slot of Get's own +1
    auto done = std::move(r->done);
    done(std::move(r->locations));
  }
}

void ObjectStore::Get(ClientId client, const std::vector<std::string>& ids, GetCallback done) {
  auto req = std::make_shared<GetRequest>();
  req->client = client;
  req->locations.resize(ids.size() + 1);
  req->remaining = ids.size() + 1;  // +1 until every id is looked at
  req->done = std::move(done);
  for (size_t i = 0; i < ids.size(); i++) {
    auto it = objects_.find(ids[i]);
    if (it == objects_.end()) {
      Answer(req, i, {0, 0,
                      "it is not in the object store of this node (it was freed, or its "
                      "creator died before sealing it)"});
      continue;
    }
    Object& o = it->second;
    switch (o.state) {
      case State::kInMemory:
      case State::kSpilling:
        Pin(o, client);
        Answer(req, i, {o.offset, o.size, ""});
        break;
      case State::kCreating:
        Answer(req, i, {0, 0, "it is still being written (not sealed)"});
        break;
      case State::kLost:
        Answer(req, i, {0, 0, o.lost_reason});
        break;
      case State::kSpilled:
        o.waiting.emplace_back(req, i);
        StartRestore(it);
        break;
      case State::kRestoring:
        o.waiting.emplace_back(req, i);
        break;
    }
  }
  Answer(req, ids.size(), {});  // drops the +1
}

void ObjectStore::Release(ClientId client, const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  Object& o = it->second;
  auto p = o.pins.find(client);
  if (p == o.pins.end()) return;
  o.total_pins--;
  if (--p->second == 0) o.pins.erase(p);
  if (o.total_pins == 0) {
    MaybeDelete(it);
    if (!pending_.empty()) ProcessPending();
  }
}

void ObjectStore::Free(const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.freed = true;
  MaybeDelete(it);
  if (!pending_.empty()) ProcessPending();
}

void ObjectStore::ClientGone(ClientId client) {
  for (auto it = objects_.begin(); it != objects_.end();) {
    Object& o = it->second;
    auto p = o.pins.find(client);
    if (p != o.pins.end()) {
      o.total_pins -= p->second;
      o.pins.erase(p);
    }
    std::erase_if(o.waiting, [&](const auto& w) { return w.first->client == client; });
    if (o.state == State::kCreating && o.creator == client) {
      // Unsealed: the creator died while writing. Reclaim its space.
      DropRegion(o);
      it = objects_.erase(it);
      continue;
    }
    auto next = std::next(it);
    MaybeDelete(it);
    it = next;
  }
  // Its creates still waiting for room: nobody will write them.
  for (auto p = pending_.begin(); p != pending_.end();) {
    if (p->client != client) {
      ++p;
      continue;
    }
    auto done = std::move(p->done);
    p = pending_.erase(p);
    done(Status::Disconnected("the creator left"));
  }
  ProcessPending();
}

void ObjectStore::OwnerGone(const std::string& owner_address) {
  if (owner_address.empty()) return;
  if (gone_owners_.insert(owner_address).second) {
    gone_order_.push_back(owner_address);
    if (gone_order_.size() > 4096) {
      gone_owners_.erase(gone_order_.front());
      gone_order_.pop_front();
    }
  }
  for (auto it = objects_.begin(); it != objects_.end();) {
    auto next = std::next(it);
    if (it->second.owner == owner_address) {
      it->second.freed = true;
      MaybeDelete(it);
    }
    it = next;
  }
  ProcessPending();
}

void ObjectStore::DropRegion(Object& o) {
  if (!o.has_region) return;
  alloc_.Free(o.offset);
  o.has_region = false;
}

void ObjectStore::MaybeDelete(Iter it) {
  Object& o = it->second;
  if (!o.freed || o.total_pins > 0 || !o.waiting.empty()) return;
  if (o.state == State::kCreating || o.state == State::kSpilling ||
      o.state == State::kRestoring) {
    return;  // finished when the write or the file job completes
  }
  DropRegion(o);
  if (o.on_disk) ::unlink(SpillPath(it->first).c_str());
  objects_.erase(it);
}

// ---- space: eviction, spilling, restoring ------------------------------------

void ObjectStore::RequestSpace(uint64_t size, ClientId client, const std::string& what,
                               std::function<void(Result<uint64_t>)> done) {
  if (size > alloc_.capacity()) {
    done(Status(StatusCode::kObjectStoreFull,
                what + " is " + Bytes(size) + " (" + std::to_string(size) +
                    " bytes), larger than this node's whole object store (" +
                    Bytes(alloc_.capacity()) +
                    "). Start the node with a larger object_store_memory "
                    "(fleet.init(object_store_memory=...) or fleet start --object-store-memory)."));
    return;
  }
  if (pending_.empty()) {
    if (auto off = AllocateEvicting(size)) {
      done(*off);
      return;
    }
  }
  pending_.push_back({size, client, what, std::move(done),
                      std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(options_.full_timeout_ms)});
  ProcessPending();
}

std::optional<uint64_t> ObjectStore::AllocateEvicting(uint64_t size) {
  if (auto off = alloc_.Allocate(size)) return off;
  // Drop copies of other nodes' objects, then in-memory copies that also
  // live on disk, least recently used first.
  std::vector<std::pair<uint64_t, std::string>> copies;
  for (auto& [id, o] : objects_) {
    if (o.state == State::kInMemory && o.secondary && o.total_pins == 0) {
      copies.emplace_back(o.last_used, id);
    }
  }
  std::sort(copies.begin(), copies.end());
  for (auto& [tick, id] : copies) {
    auto it = objects_.find(id);
    DropRegion(it->second);
    objects_.erase(it);
    if (auto off = alloc_.Allocate(size)) return off;
  }
  std::vector<std::pair<uint64_t, Object*>> victims;
  for (auto& [id, o] : objects_) {
    if (o.state == State::kInMemory && o.on_disk && o.total_pins == 0) {
      victims.emplace_back(o.last_used, &o);
    }
  }
  std::sort(victims.begin(), victims.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [tick, o] : victims) {
    DropRegion(*o);
    o->state = State::kSpilled;
    if (auto off = alloc_.Allocate(size)) return off;
  }
  return std::nullopt;
}

void ObjectStore::ProcessPending() {
  while (!pending_.empty()) {
    PendingAlloc& p = pending_.front();
    if (auto off = AllocateEvicting(p.size)) {
      auto done = std::move(p.done);
      pending_.pop_front();
      done(*off);
      continue;
    }
    StartSpills(p.size);
    if (!timer_armed_) {
      timer_armed_ = true;
      deadline_timer_->expires_after(std::chrono::milliseconds(100));
      deadline_timer_->async_wait([this](const asio::error_code& ec) {
        timer_armed_ = false;
        if (!ec) CheckDeadlines();
      });
    }
    return;
  }
}

void ObjectStore::StartSpills(uint64_t need) {
  if (!io_thread_) return;  // shut down
  if (spilling_bytes_ > 0 && alloc_.free_bytes() + spilling_bytes_ >= need) return;
  std::vector<std::pair<uint64_t, std::string>> candidates;
  for (auto& [id, o] : objects_) {
    if (o.state == State::kInMemory && !o.on_disk && o.total_pins == 0 && !o.freed &&
        !o.spill_failed && !o.secondary) {
      candidates.emplace_back(o.last_used, id);
    }
  }
  std::sort(candidates.begin(), candidates.end());
  bool started = false;
  for (auto& [tick, id] : candidates) {
    if (started && alloc_.free_bytes() + spilling_bytes_ >= need) break;
    Object& o = objects_[id];
    o.state = State::kSpilling;
    spilling_bytes_ += o.size;
    started = true;
    const uint8_t* data = base_ + o.offset;
    uint64_t size = o.size;
    std::string path = SpillPath(id);
    io_thread_->Submit([path, data, size] { return WriteFile(path, data, size); },
                       [this, id = id](Status s) { OnSpilled(id, s); });
  }
}

void ObjectStore::OnSpilled(const std::string& id, Status s) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  Object& o = it->second;
  spilling_bytes_ -= o.size;
  o.state = State::kInMemory;
  if (s.ok()) {
    o.on_disk = true;
    spilled_total_++;
    if (o.total_pins == 0) {  // read meanwhile? then keep it in memory too
      DropRegion(o);
      o.state = State::kSpilled;
    }
  } else {
    FLEET_LOG(WARNING) << "spilling object " << ToHex(id) << " failed: " << s.message();
    o.spill_failed = true;  // a disk that refuses once is not asked again for it
  }
  MaybeDelete(it);
  ProcessPending();
}

void ObjectStore::StartRestore(Iter it) {
  Object& o = it->second;
  o.state = State::kRestoring;
  std::string id = it->first;
  RequestSpace(o.size, 0, "restoring object " + ToHex(id), [this, id](Result<uint64_t> r) {
    auto it = objects_.find(id);
    if (it == objects_.end()) {
      if (r.ok()) alloc_.Free(r.value());
      return;
    }
    Object& o = it->second;
    if (r.ok() && !io_thread_) {  // shut down meanwhile
      alloc_.Free(r.value());
      r = Status::Disconnected("the object store is shutting down");
    }
    if (!r.ok()) {
      o.state = State::kSpilled;  // may fit later
      auto waiting = std::move(o.waiting);
      for (auto& [req, i] : waiting) Answer(req, i, {0, 0, r.status().message(), true});
      MaybeDelete(it);
      return;
    }
    o.offset = r.value();
    o.has_region = true;
    uint8_t* data = base_ + o.offset;
    uint64_t size = o.size;
    std::string path = SpillPath(id);
    io_thread_->Submit([path, data, size] { return ReadFile(path, data, size); },
                       [this, id](Status s) { OnRestored(id, s); });
  });
}

void ObjectStore::OnRestored(const std::string& id, Status s) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  Object& o = it->second;
  auto waiting = std::move(o.waiting);
  if (s.ok()) {
    restored_total_++;
    o.state = State::kInMemory;
    for (auto& [req, i] : waiting) {
      Pin(o, req->client);
      Answer(req, i, {o.offset, o.size, ""});
    }
  } else {
    FLEET_LOG(WARNING) << "object " << ToHex(id) << " is lost: " << s.message();
    DropRegion(o);
    o.state = State::kLost;
    if (o.on_disk) ::unlink(SpillPath(id).c_str());  // damaged: of no use any more
    o.on_disk = false;
    o.lost_reason = s.message();
    for (auto& [req, i] : waiting) Answer(req, i, {0, 0, o.lost_reason});
  }
  MaybeDelete(it);
  ProcessPending();
}

void ObjectStore::CheckDeadlines() {
  auto now = std::chrono::steady_clock::now();
  while (!pending_.empty() && pending_.front().deadline <= now && spilling_bytes_ == 0) {
    PendingAlloc p = std::move(pending_.front());
    pending_.pop_front();
    p.done(FullError(p.size, p.what));
  }
  ProcessPending();
}

Status ObjectStore::FullError(uint64_t size, const std::string& what) const {
  uint64_t pinned = 0, creating = 0;
  for (const auto& [id, o] : objects_) {
    if (!o.has_region) continue;
    if (o.state == State::kCreating) {
      creating += o.size;
    } else if (o.total_pins > 0) {
      pinned += o.size;
    }
  }
  return Status(StatusCode::kObjectStoreFull,
                "cannot make room for " + what + " (" + Bytes(size) + ") in this node's object " +
                    "store of " + Bytes(alloc_.capacity()) + " after waiting " +
                    std::to_string(options_.full_timeout_ms / 1000.0).substr(0, 4) + " s: " +
                    Bytes(pinned) + " are pinned by readers (values being read, or numpy "
                    "arrays from get() still alive), " + Bytes(creating) +
                    " are objects still being written, " + Bytes(alloc_.free_bytes()) +
                    " are free (largest free range " + Bytes(alloc_.largest_free()) +
                    "); spilling cannot free more. Delete references to large values you no "
                    "longer need, or start the node with a larger object_store_memory.");
}

void ObjectStore::List(rpc::StoreListReply* out) const {
  static const char* kWhere[] = {"creating", "memory", "spilling", "spilled", "restoring", "lost"};
  uint64_t spilled = 0;
  for (const auto& [id, o] : objects_) {
    auto* info = out->add_objects();
    info->set_object_id(id);
    info->set_size(o.size);
    info->set_owner_address(o.owner);
    info->set_call_site(o.call_site);
    info->set_where(kWhere[static_cast<int>(o.state)]);
    info->set_pins(o.total_pins);
    info->set_freed(o.freed);
    if (o.on_disk && !o.has_region) spilled += o.size;
  }
  out->set_capacity(alloc_.capacity());
  out->set_used(alloc_.allocated());
  out->set_spilled_bytes(spilled);
  out->set_spilled_total(spilled_total_);
  out->set_restored_total(restored_total_);
  out->set_spill_dir(options_.spill_dir);
}

}  // namespace fleet::store
