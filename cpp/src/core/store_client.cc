// StoreClient implementation; see store_client.h.
#include "core/store_client.h"

#include "core/parallel_copy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "common/ids.h"

namespace fleet {

namespace {
constexpr int kStoreRpcTimeoutMs = 600000;  // a create may wait for spilling
constexpr uint64_t kChunk = 2ull << 20;

}  // namespace

StoreMapping::~StoreMapping() {
  if (base != nullptr) ::munmap(base, capacity);
}

bool StoreClient::ViewsAlive() {
  std::lock_guard<std::mutex> lk(mu_);
  return mapping_ && mapping_->views.load() > 0;
}

StoreView::~StoreView() {
  mapping_->views--;
  if (auto node = node_.lock()) {
    rpc::Envelope m;
    m.mutable_store_release()->add_object_ids(id_);
    node->Send(m);
  }
}

Result<std::shared_ptr<StoreMapping>> StoreClient::Mapping() {
  std::lock_guard<std::mutex> lk(mu_);
  if (mapping_) return mapping_;
  rpc::Envelope req;
  req.mutable_store_info();
  auto r = node_->CallSync(req, 10000);
  if (!r.ok()) return r.status();
  const auto& info = r.value().store_info_reply();
  std::string path = "/proc/" + std::to_string(info.pid()) + "/fd/" + std::to_string(info.fd());
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return Status::IoError("cannot open the node's object store (" + path + "): " +
                           strerror(errno) + ". fleet-node must run as the same user.");
  }
  void* p = ::mmap(nullptr, info.capacity(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    return Status::IoError(std::string("cannot map the node's object store: ") + strerror(errno));
  }
  auto m = std::make_shared<StoreMapping>();
  m->base = static_cast<uint8_t*>(p);
  m->capacity = info.capacity();
  mapping_ = m;
  faulted_.assign((info.capacity() + kChunk - 1) / kChunk, false);
  return m;
}

void StoreClient::Prefault(StoreMapping& m, uint64_t offset, uint64_t size) {
  uint64_t first = offset / kChunk;
  uint64_t last = (offset + size + kChunk - 1) / kChunk;
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t run_start = last;
  auto flush = [&](uint64_t end) {
    if (run_start == last) return;
    uint64_t a = run_start * kChunk;
    uint64_t b = std::min(end * kChunk, m.capacity);
    // Best effort: on kernels without MADV_POPULATE_WRITE the copy faults.
    ParallelPopulateWrite(m.base + a, b - a);
    run_start = last;
  };
  for (uint64_t c = first; c < last && c < faulted_.size(); c++) {
    if (faulted_[c]) {
      flush(c);
    } else {
      if (run_start == last) run_start = c;
      faulted_[c] = true;
    }
  }
  flush(std::min<uint64_t>(last, faulted_.size()));
}

Status StoreClient::Put(const std::string& id, uint64_t size, const std::string& owner_address,
                        const std::string& call_site, const std::function<void(uint8_t*)>& fill) {
  auto m = Mapping();
  if (!m.ok()) return m.status();
  rpc::Envelope req;
  auto* c = req.mutable_store_create();
  c->set_object_id(id);
  c->set_size(size);
  c->set_owner_address(owner_address);
  c->set_call_site(call_site);
  // Error replies (kObjectStoreFull...) arrive as a failed status.
  auto r = node_->CallSync(req, kStoreRpcTimeoutMs);
  if (!r.ok()) return r.status();
  const auto& created = r.value().store_create_reply();
  if (created.exists()) return Status::OK();
  StoreMapping& map = *m.value();
  Prefault(map, created.offset(), size);
  fill(map.base + created.offset());
  rpc::Envelope seal;
  seal.mutable_store_seal()->set_object_id(id);
  auto s = node_->CallSync(seal, kStoreRpcTimeoutMs);
  if (!s.ok()) return s.status();
  return Status::OK();
}

Result<std::vector<StoreRead>> StoreClient::Get(const std::vector<std::string>& ids,
                                                const std::vector<std::string>& sources) {
  auto m = Mapping();
  if (!m.ok()) return m.status();
  rpc::Envelope req;
  for (const auto& id : ids) req.mutable_store_get()->add_object_ids(id);
  for (const auto& node : sources) req.mutable_store_get()->add_source_node_ids(node);
  auto r = node_->CallSync(req, kStoreRpcTimeoutMs);
  if (!r.ok()) return r.status();
  const auto& locs = r.value().store_get_reply().locations();
  if (static_cast<size_t>(locs.size()) != ids.size()) {
    return Status::Internal("fleet-node answered a store read with the wrong number of objects");
  }
  std::vector<StoreRead> out(ids.size());
  for (size_t i = 0; i < ids.size(); i++) {
    const auto& l = locs[static_cast<int>(i)];
    if (!l.error().empty()) {
      out[i].error = l.error();
      out[i].full = l.full();
    } else {
      out[i].view = std::make_shared<StoreView>(m.value(), node_, ids[i], l.offset(), l.size());
    }
  }
  return out;
}

void StoreClient::Free(const std::vector<std::string>& ids, const std::vector<std::string>& nodes) {
  if (ids.empty()) return;
  rpc::Envelope m;
  for (const auto& id : ids) m.mutable_store_free()->add_object_ids(id);
  for (const auto& node : nodes) m.mutable_store_free()->add_node_ids(node);
  node_->Send(m);
}

Result<rpc::StoreListReply> StoreClient::List() {
  rpc::Envelope req;
  req.mutable_store_list();
  auto r = node_->CallSync(req, 10000);
  if (!r.ok()) return r.status();
  return r.value().store_list_reply();
}

}  // namespace fleet
