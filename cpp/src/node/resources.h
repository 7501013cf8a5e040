// Resource accounting of one node: totals, what is free, and which GPU
// instances a lease holds.
//
// Amounts are fixed-point (1/10000 of a unit) so fractional requests add up
// exactly. GPUs are tracked per device: a whole-number request takes whole
// free devices, a fractional one shares a device. Invariant: available never
// exceeds total; it may go negative only through ForceAcquireCpu (a blocked
// worker resuming, as in Ray). Not thread-safe: fleet-node's io thread owns it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace fleet::node {

constexpr int64_t kUnit = 10000;

using ResourceSet = std::map<std::string, int64_t>;

ResourceSet FromDoubles(const std::map<std::string, double>& m);
std::map<std::string, double> ToDoubles(const ResourceSet& r);
std::string Describe(const ResourceSet& r);  // "{CPU: 1, GPU: 0.5}"
// Whether `have` holds at least every positive amount of `need`.
bool Covers(const ResourceSet& have, const ResourceSet& need);

struct Allocation {
  ResourceSet amounts;
  std::vector<std::pair<int, int64_t>> gpus;  // (device index, amount)
  // Devices taken through placement group GPU resources: (resource name, device, amount).
  std::vector<std::tuple<std::string, int, int64_t>> group_gpus;
  int64_t released_cpu = 0;                    // CPU given back while blocked
  std::vector<int> GpuIds() const;
};

class NodeResources {
 public:
  explicit NodeResources(ResourceSet total);

  // True if `req` fits in the node's totals (could ever run here).
  bool Feasible(const ResourceSet& req) const;
  // Takes `req` if it fits what is free now.
  std::optional<Allocation> TryAcquire(const ResourceSet& req);
  void Release(const Allocation& a);
  // A worker blocked in get() gives its CPU back; on resume it takes it again
  // even if that oversubscribes the node for a while.
  void ReleaseCpu(Allocation& a);
  void ForceAcquireCpu(Allocation& a);

  // Adds resources the node did not have (placement group bundles: "CPU_group_<pg>"...)
  // to its totals and to what is free; Remove takes them away again (free
  // may go negative while leases still hold them).
  void Add(const ResourceSet& r);
  void Remove(const ResourceSet& r);
  // The GPU devices behind a placement group's GPU resource ("GPU_group_0_<pg>",
  // "GPU_group_<pg>"): a lease taking that resource gets device ids from it
  // (as from "GPU"), so a task in a bundle sees the bundle's GPUs.
  void AddDevices(const std::string& name, const std::vector<std::pair<int, int64_t>>& devices);
  void RemoveDevices(const std::string& name, const std::vector<std::pair<int, int64_t>>& devices);
  // Whether what is free now covers `req` (ignoring per-device GPU packing).
  bool Fits(const ResourceSet& req) const;
  const ResourceSet& total() const { return total_; }
  const ResourceSet& available() const { return available_; }

 private:
  ResourceSet total_;
  ResourceSet available_;
  std::vector<int64_t> gpu_free_;  // per device
  struct DeviceShare {
    int64_t total = 0;
    int64_t free = 0;
  };
  // Placement group GPU resource name -> device -> its share of that device.
  std::map<std::string, std::map<int, DeviceShare>> group_devices_;
};

}  // namespace fleet::node
