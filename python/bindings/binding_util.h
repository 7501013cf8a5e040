// What every part of the fleet._core binding shares: bytes/str conversions,
// Status to Python exceptions, the Core object (PyCore), GIL-released waits
// in interruptible slices, and the Bind* entry point of each part (objects,
// tasks, actors, control_store; core_module.cc makes the module).
// Conversions only: every decision lives in cpp/src/core. Threading: called
// with the GIL held; anything that blocks releases it.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ids.h"
#include "core/core_worker.h"
#include "core/object_flags.h"

namespace fleet_py {

namespace nb = nanobind;
using fleet::CoreWorker;
using fleet::Status;
using fleet::StatusCode;

inline std::string Str(const nb::bytes& b) { return std::string(b.c_str(), b.size()); }
inline nb::bytes Bytes(const std::string& s) { return nb::bytes(s.data(), s.size()); }
inline nb::str PyStr(const std::string& s) { return nb::str(s.data(), s.size()); }

// Raises the fleet.exceptions class for a store error, else RuntimeError.
[[noreturn]] inline void RaiseStatus(const Status& s) {
  const char* cls = nullptr;
  if (s.code() == StatusCode::kObjectStoreFull) cls = "ObjectStoreFullError";
  if (s.code() == StatusCode::kObjectLost) cls = "ObjectLostError";
  if (cls != nullptr) {
    nb::object type = nb::module_::import_("fleet.exceptions").attr(cls);
    PyErr_SetString(type.ptr(), s.message().c_str());
    throw nb::python_error();
  }
  throw std::runtime_error(s.message());
}

template <typename T>
inline T Check(fleet::Result<T>&& r) {
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}

inline nb::object IdsToPy(const std::vector<std::string>& ids) {
  if (ids.size() == 1) return Bytes(ids[0]);
  nb::list out;
  for (auto& id : ids) out.append(Bytes(id));
  return out;
}

class PyCore {
 public:
  explicit PyCore(const std::map<std::string, std::string>& o) {
    fleet::CoreOptions opts;
    auto get = [&](const char* k, const std::string& d = "") {
      auto it = o.find(k);
      return it == o.end() ? d : it->second;
    };
    opts.is_worker = get("is_worker") == "1";
    opts.node_address = get("node_address");
    opts.gcs_address = get("gcs_address");
    opts.token = get("token");
    opts.session_dir = get("session_dir");
    opts.worker_id = fleet::FromHex(get("worker_id"));
    opts.listen_path = get("listen_path");
    opts.node_ip = get("node_ip");
    if (!opts.node_ip.empty()) fleet::rpc::SetLocalHost(opts.node_ip);
    opts.log_to_driver = get("log_to_driver", "1") == "1";
    opts.dedup_logs = get("dedup_logs", "1") == "1";
    opts.namespace_name = get("namespace");
    // Every connection this process makes carries it; servers compare.
    if (!get("version").empty()) fleet::rpc::SetLocalVersion(get("version"));
    if (!get("max_tasks_in_flight").empty()) {
      opts.submitter.max_tasks_in_flight_per_worker = std::stoi(get("max_tasks_in_flight"));
    }
    fleet::Result<std::unique_ptr<CoreWorker>> r = [&] {
      nb::gil_scoped_release release;
      return CoreWorker::Create(opts);
    }();
    if (!r.ok()) throw std::runtime_error(r.status().message());
    core_ = std::move(r).value();
  }

  CoreWorker& core() {
    if (!core_) throw std::runtime_error("fleet core is shut down");
    return *core_;
  }

  void Shutdown() {
    nb::gil_scoped_release release;
    if (core_) core_->Shutdown();
  }

  std::unique_ptr<CoreWorker> core_;
};

// One request to fleet-gcs (GIL released); a failure raises RuntimeError.
inline fleet::rpc::Envelope GcsCall(PyCore& c, const fleet::rpc::Envelope& req, int64_t timeout_ms) {
  fleet::Result<fleet::rpc::Envelope> r = [&] {
    nb::gil_scoped_release release;
    return c.core().GcsCall(req, timeout_ms);
  }();
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}

// Runs attempt(slice_ms, last) until it returns a value. Without
// `interruptible` that is one attempt with the whole timeout. With it, the
// wait is cut into 100 ms slices with a Ctrl-C check (PyErr_CheckSignals)
// between them; `last` tells the attempt that the timeout is used up.
template <typename Attempt>
auto WaitInSlices(int64_t timeout_ms, bool interruptible, Attempt&& attempt) {
  constexpr int64_t kSliceMs = 100;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int64_t slice = timeout_ms;
    bool last = true;
    if (interruptible && timeout_ms != 0) {
      if (timeout_ms < 0) {
        slice = kSliceMs;
        last = false;
      } else {
        // Rounded up: the whole wait must not end before the timeout.
        int64_t left = std::chrono::ceil<std::chrono::milliseconds>(
                           deadline - std::chrono::steady_clock::now())
                           .count();
        slice = std::clamp<int64_t>(left, 0, kSliceMs);
        last = left <= kSliceMs;
      }
    }
    if (auto r = attempt(slice, last)) return std::move(*r);
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// A sliced get/wait of a worker's task keeps its CPU lent between slices;
// whatever way the wait ends (value, timeout, a signal's exception), the CPU
// is taken back. (No-op when it was never lent.)
class EndBlockedOnError {
 public:
  explicit EndBlockedOnError(fleet::CoreWorker& core) : core_(core) {}
  ~EndBlockedOnError() { core_.EndBlocked(); }
  EndBlockedOnError(const EndBlockedOnError&) = delete;
  EndBlockedOnError& operator=(const EndBlockedOnError&) = delete;

 private:
  fleet::CoreWorker& core_;
};

// ---- shared between the parts -------------------------------------------------


struct TaskTemplate {
  fleet::rpc::TaskSpec spec;
  std::string key;
};

// A submission of `spec` (a template's) with this call's arguments: a fresh
// task id in the process's job, refs nested in the arguments held until it
// ends, and `parent` (the submitting call's task id, for recursive cancel)
// when the caller knows it.
inline fleet::TaskSubmission MakeSubmission(PyCore& c, const fleet::rpc::TaskSpec& spec,
                                            const nb::bytes& args,
                                            const std::vector<nb::bytes>& deps,
                                            const std::vector<nb::bytes>& nested,
                                            const nb::bytes& parent) {
  fleet::TaskSubmission t;
  for (auto& n : nested) t.held_ids.push_back(Str(n));
  t.spec = spec;
  if (parent.size() > 0) t.spec.set_parent_task_id(parent.c_str(), parent.size());
  t.spec.set_task_id(c.core().NextTaskId());
  t.spec.set_job_id(c.core().job_id());
  t.spec.set_args(args.c_str(), args.size());
  t.dep_ids.reserve(deps.size());
  for (auto& d : deps) t.dep_ids.push_back(Str(d));
  return t;
}

// objects.cc: (descriptor, kFlagInStore) values become StoreBuffers, or
// ObjectLost error values, with one round trip to the node (see there).
void ResolveStoreValues(CoreWorker& core, const std::vector<std::string>& ids,
                        std::vector<std::pair<nb::object, uint32_t>>* values,
                        bool errors_as_values = false);
// objects.cc: a list of (value, flags) for Python, store values resolved.
nb::list ToPyObjects(CoreWorker& core, const std::vector<std::string>& ids,
                     const std::vector<fleet::StoredObject>& objs);
// control_store.cc: the node table as a list of dicts.
nb::list NodesToList(const fleet::rpc::GetNodesReply& reply);

// Each part adds its module functions, classes and Core methods.
void BindObjects(nb::module_& m, nb::class_<PyCore>& core);
void BindTasks(nb::module_& m, nb::class_<PyCore>& core);
void BindActors(nb::module_& m, nb::class_<PyCore>& core);
void BindControlStore(nb::module_& m, nb::class_<PyCore>& core);

}  // namespace fleet_py
