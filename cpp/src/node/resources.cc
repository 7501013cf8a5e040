// NodeResources implementation; see resources.h.
#include "node/resources.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace fleet::node {

ResourceSet FromDoubles(const std::map<std::string, double>& m) {
  ResourceSet r;
  for (auto& [k, v] : m) {
    int64_t units = static_cast<int64_t>(std::llround(v * kUnit));
    if (units != 0) r[k] = units;
  }
  return r;
}

std::map<std::string, double> ToDoubles(const ResourceSet& r) {
  std::map<std::string, double> m;
  for (auto& [k, v] : r) m[k] = static_cast<double>(v) / kUnit;
  return m;
}

std::string Describe(const ResourceSet& r) {
  std::ostringstream os;
  os << "{";
  bool first = true;
  for (auto& [k, v] : r) {
    if (!first) os << ", ";
    first = false;
    os << k << ": " << static_cast<double>(v) / kUnit;
  }
  os << "}";
  return os.str();
}

std::vector<int> Allocation::GpuIds() const {
  std::vector<int> ids;
  for (auto& [idx, amount] : gpus) ids.push_back(idx);
  for (auto& [name, idx, amount] : group_gpus) {
    if (std::find(ids.begin(), ids.end(), idx) == ids.end()) ids.push_back(idx);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

void NodeResources::AddDevices(const std::string& name,
                               const std::vector<std::pair<int, int64_t>>& devices) {
  for (auto& [idx, amount] : devices) {
    auto& share = group_devices_[name][idx];
    share.total += amount;
    share.free += amount;
  }
}

void NodeResources::RemoveDevices(const std::string& name,
                                  const std::vector<std::pair<int, int64_t>>& devices) {
  auto it = group_devices_.find(name);
  if (it == group_devices_.end()) return;
  for (auto& [idx, amount] : devices) {
    auto d = it->second.find(idx);
    if (d == it->second.end()) continue;
    d->second.total -= amount;
    d->second.free -= amount;  // negative while a lease still holds it
    if (d->second.total <= 0) it->second.erase(d);
  }
  if (it->second.empty()) group_devices_.erase(it);
}

NodeResources::NodeResources(ResourceSet total) : total_(std::move(total)), available_(total_) {
  auto it = total_.find("GPU");
  int n = it == total_.end() ? 0 : static_cast<int>(it->second / kUnit);
  gpu_free_.assign(n, kUnit);
}

void NodeResources::Add(const ResourceSet& r) {
  for (auto& [k, v] : r) {
    total_[k] += v;
    available_[k] += v;
  }
}

void NodeResources::Remove(const ResourceSet& r) {
  for (auto& [k, v] : r) {
    if ((total_[k] -= v) <= 0) total_.erase(k);
    available_[k] -= v;
    if (available_[k] == 0 && !total_.count(k)) available_.erase(k);
  }
}

bool Covers(const ResourceSet& have, const ResourceSet& need) {
  for (auto& [k, v] : need) {
    if (v <= 0) continue;
    auto it = have.find(k);
    if (it == have.end() || it->second < v) return false;
  }
  return true;
}

bool NodeResources::Fits(const ResourceSet& req) const { return Covers(available_, req); }

bool NodeResources::Feasible(const ResourceSet& req) const {
  if (!Covers(total_, req)) return false;
  auto g = req.find("GPU");
  if (g != req.end() && g->second > kUnit && g->second % kUnit != 0) return false;
  return true;
}

std::optional<Allocation> NodeResources::TryAcquire(const ResourceSet& req) {
  for (auto& [k, v] : req) {
    if (v <= 0) continue;
    auto it = available_.find(k);
    if (it == available_.end() || it->second < v) return std::nullopt;
  }
  Allocation a;
  auto g = req.find("GPU");
  if (g != req.end() && g->second > 0) {
    int64_t want = g->second;
    if (want >= kUnit) {
      if (want % kUnit != 0) return std::nullopt;
      int64_t n = want / kUnit;
      for (size_t i = 0; i < gpu_free_.size() && n > 0; ++i) {
        if (gpu_free_[i] == kUnit) {
          a.gpus.emplace_back(static_cast<int>(i), kUnit);
          n--;
        }
      }
      if (n > 0) return std::nullopt;
    } else {
      // Share the most used device that still fits, to keep whole ones free.
      int best = -1;
      for (size_t i = 0; i < gpu_free_.size(); ++i) {
        if (gpu_free_[i] >= want && (best < 0 || gpu_free_[i] < gpu_free_[best])) {
          best = static_cast<int>(i);
        }
      }
      if (best < 0) return std::nullopt;
      a.gpus.emplace_back(best, want);
    }
  }
  // Placement group GPU resources backed by devices: whole devices for whole
  // amounts, else a share of the most used device that still fits.
  for (auto& [k, v] : req) {
    auto pool = group_devices_.find(k);
    if (v <= 0 || pool == group_devices_.end()) continue;
    if (v >= kUnit && v % kUnit == 0) {
      int64_t n = v / kUnit;
      for (auto& [idx, share] : pool->second) {
        if (n > 0 && share.free == kUnit) {
          a.group_gpus.emplace_back(k, idx, kUnit);
          n--;
        }
      }
      if (n > 0) return std::nullopt;
    } else {
      const std::pair<const int, DeviceShare>* best = nullptr;
      for (auto& entry : pool->second) {
        if (entry.second.free >= v && (!best || entry.second.free < best->second.free)) best = &entry;
      }
      if (!best) return std::nullopt;
      a.group_gpus.emplace_back(k, best->first, v);
    }
  }
  for (auto& [name, idx, amount] : a.group_gpus) group_devices_[name][idx].free -= amount;
  for (auto& [idx, amount] : a.gpus) gpu_free_[idx] -= amount;
  for (auto& [k, v] : req) {
    if (v <= 0) continue;
    available_[k] -= v;
    a.amounts[k] = v;
  }
  return a;
}

void NodeResources::Release(const Allocation& a) {
  for (auto& [k, v] : a.amounts) {
    int64_t give = v;
    if (k == "CPU") give -= a.released_cpu;
    available_[k] += give;
  }
  for (auto& [idx, amount] : a.gpus) gpu_free_[idx] += amount;
  for (auto& [name, idx, amount] : a.group_gpus) {
    auto pool = group_devices_.find(name);
    if (pool == group_devices_.end()) continue;  // the bundle is gone
    auto d = pool->second.find(idx);
    if (d != pool->second.end()) d->second.free = std::min(d->second.total, d->second.free + amount);
  }
}

void NodeResources::ReleaseCpu(Allocation& a) {
  auto it = a.amounts.find("CPU");
  if (it == a.amounts.end() || a.released_cpu > 0) return;
  a.released_cpu = it->second;
  available_["CPU"] += it->second;
}

void NodeResources::ForceAcquireCpu(Allocation& a) {
  if (a.released_cpu == 0) return;
  available_["CPU"] -= a.released_cpu;
  a.released_cpu = 0;
}

}  // namespace fleet::node
