// fleet._core: the nanobind binding of the C++ core library (CoreWorker).
// Conversions only: every decision lives in cpp/src/core. Calls that can wait
// (connect, get, wait, next_task, control-store RPCs) release the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "common/ids.h"
#include "core/core_worker.h"
#include "core/object_flags.h"

namespace nb = nanobind;
using fleet::CoreWorker;
using fleet::Status;
using fleet::StatusCode;

namespace {

std::string Str(const nb::bytes& b) { return std::string(b.c_str(), b.size()); }
nb::bytes Bytes(const std::string& s) { return nb::bytes(s.data(), s.size()); }

// A pinned object of the node's store, seen from Python as a read-only
// buffer (memoryview(b), numpy arrays over it). Every view made from it keeps
// it, and so the pin, alive.
struct StoreBuffer {
  std::shared_ptr<fleet::StoreView> view;
};

int StoreBufferGetBuffer(PyObject* self, Py_buffer* out, int flags) {
  StoreBuffer* b = nb::inst_ptr<StoreBuffer>(self);
  return PyBuffer_FillInfo(out, self, const_cast<uint8_t*>(b->view->data()),
                           static_cast<Py_ssize_t>(b->view->size()), /*readonly=*/1, flags);
}

PyType_Slot kStoreBufferSlots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(StoreBufferGetBuffer)},
                                   {0, nullptr}};

// Raises the fleet.exceptions class for a store error, else RuntimeError.
[[noreturn]] void RaiseStatus(const Status& s) {
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

// The Py_buffer views of a list of bytes-like objects, released on scope exit.
class BufferViews {
 public:
  explicit BufferViews(const nb::list& objs) {
    views_.reserve(nb::len(objs));
    for (nb::handle o : objs) {
      Py_buffer v;
      if (PyObject_GetBuffer(o.ptr(), &v, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
      views_.push_back(v);
      spans_.push_back({static_cast<const uint8_t*>(v.buf), static_cast<uint64_t>(v.len)});
    }
  }
  ~BufferViews() {
    for (auto& v : views_) PyBuffer_Release(&v);
  }
  const std::vector<fleet::ByteSpan>& spans() const { return spans_; }

 private:
  std::vector<Py_buffer> views_;
  std::vector<fleet::ByteSpan> spans_;
};

// Replaces each (descriptor, kFlagInStore) value by (StoreBuffer, flags), or
// by an ObjectLost error value, with one round trip to the node. An object
// that cannot be restored for lack of room raises ObjectStoreFullError, or
// with `errors_as_values` becomes a pickled ObjectStoreFullError value (a
// task's argument: the task fails with it, the worker carries on).
void ResolveStoreValues(CoreWorker& core, const std::vector<std::string>& ids,
                        std::vector<std::pair<nb::object, uint32_t>>* values,
                        bool errors_as_values = false) {
  std::vector<std::string> want;
  std::vector<std::string_view> descriptors;
  std::vector<size_t> where;
  for (size_t i = 0; i < values->size(); i++) {
    if ((*values)[i].second & fleet::kFlagInStore) {
      want.push_back(ids[i]);
      where.push_back(i);
      nb::bytes desc = nb::cast<nb::bytes>((*values)[i].first);
      descriptors.emplace_back(desc.c_str(), desc.size());  // kept alive by *values
    }
  }
  if (want.empty()) return;
  std::vector<fleet::StoreRead> reads = [&] {
    nb::gil_scoped_release release;
    return core.ReadStoredValues(want, descriptors);
  }();
  for (size_t k = 0; k < where.size(); k++) {
    auto& v = (*values)[where[k]];
    fleet::StoreRead& read = reads[k];
    if (read.view) {
      v.first = nb::cast(StoreBuffer{std::move(read.view)});
    } else if (read.full) {
      if (!errors_as_values) RaiseStatus(Status(StatusCode::kObjectStoreFull, read.error));
      nb::object exc = nb::module_::import_("fleet.exceptions").attr("ObjectStoreFullError")(read.error);
      v.first = nb::module_::import_("pickle").attr("dumps")(exc);
      v.second = fleet::kFlagPickledError;
    } else {
      v.first = Bytes(read.error);
      v.second = fleet::kFlagObjectLost;
    }
  }
}


struct TaskTemplate {
  fleet::rpc::TaskSpec spec;
  std::string key;
};

// The same for one method of one actor handle (with one set of options).
struct ActorCallTemplate {
  fleet::rpc::TaskSpec spec;
  int max_task_retries = 0;
};

nb::dict ActorInfoToDict(const fleet::rpc::ActorInfo& a) {
  static const char* kStates[] = {"PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD"};
  nb::dict d;
  d["actor_id"] = Bytes(a.actor_id());
  d["job_id"] = a.job_id();
  d["name"] = a.name();
  d["namespace"] = a.namespace_();
  d["class_name"] = a.class_name();
  d["state"] = kStates[std::clamp<int>(a.state(), 0, 3)];
  d["pid"] = a.pid();
  d["node_id"] = fleet::ToHex(a.node_id());
  d["num_restarts"] = a.num_restarts();
  d["max_restarts"] = a.max_restarts();
  d["detached"] = a.detached();
  d["death_reason"] = a.death_reason();
  d["handle_meta"] = Bytes(a.handle_meta());
  d["resources"] = std::map<std::string, double>(a.resources().begin(), a.resources().end());
  return d;
}

template <typename T>
T Check(fleet::Result<T>&& r) {
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}

nb::object IdsToPy(const std::vector<std::string>& ids) {
  if (ids.size() == 1) return Bytes(ids[0]);
  nb::list out;
  for (auto& id : ids) out.append(Bytes(id));
  return out;
}

nb::list NodesToList(const fleet::rpc::GetNodesReply& reply) {
  nb::list out;
  for (const auto& n : reply.nodes()) {
    nb::dict d;
    d["node_id"] = fleet::ToHex(n.node_id());
    d["node_ip"] = n.node_ip();
    d["hostname"] = n.hostname();
    d["unix_socket"] = n.unix_socket();
    d["address"] = n.address();
    d["is_head"] = n.is_head();
    d["alive"] = n.alive();
    d["session_dir"] = n.session_dir();
    d["death_reason"] = n.death_reason();
    d["start_time_ms"] = n.start_time_ms();
    d["total"] = std::map<std::string, double>(n.total().begin(), n.total().end());
    d["available"] = std::map<std::string, double>(n.available().begin(), n.available().end());
    nb::list pending;
    for (const auto& p : n.pending()) {
      nb::dict pd;
      pd["shape"] = std::map<std::string, double>(p.shape().begin(), p.shape().end());
      pd["count"] = p.count();
      pd["infeasible"] = p.infeasible();
      pd["description"] = p.description();
      pending.append(pd);
    }
    d["pending"] = pending;
    out.append(d);
  }
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
fleet::rpc::Envelope GcsCall(PyCore& c, const fleet::rpc::Envelope& req, int64_t timeout_ms) {
  fleet::Result<fleet::rpc::Envelope> r = [&] {
    nb::gil_scoped_release release;
    return c.core().GcsCall(req, timeout_ms);
  }();
  if (!r.ok()) throw std::runtime_error(r.status().message());
  return std::move(r).value();
}

nb::list ToPyObjects(CoreWorker& core, const std::vector<std::string>& ids,
                     const std::vector<fleet::StoredObject>& objs) {
  std::vector<std::pair<nb::object, uint32_t>> values;
  values.reserve(objs.size());
  for (const auto& o : objs) values.emplace_back(Bytes(o.data), o.flags);
  ResolveStoreValues(core, ids, &values);
  nb::list out;
  for (auto& [d, f] : values) out.append(nb::make_tuple(d, f));
  return out;
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
        int64_t left = std::chrono::duration_cast<std::chrono::milliseconds>(
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

// A task pushed to this worker, as Python sees it (fleet._core.Task): a
// struct sequence, i.e. a tuple with named read-only fields, so making one is
// one allocation and each field read is a C-level slot access (the worker
// reads about a dozen per call). handle == 0: a cancel notice for the call
// `task_id` running concurrently; its other fields are empty.
PyStructSequence_Field kTaskFields[] = {
    {"handle", "Names the task to finish_task and encode_return."},
    {"task_id", nullptr},
    {"job_id", nullptr},
    {"function_key", "Key of the pickled function or class."},
    {"function_name", nullptr},
    {"args", "Pickled (args, kwargs[, positions]); empty: no arguments."},
    {"deps", "(data, flags) of each top-level ObjectRef argument, resolved."},
    {"num_returns", nullptr},
    {"retry_exceptions", nullptr},
    {"env_vars", nullptr},
    {"gpu_ids", nullptr},
    {"attempt", nullptr},
    {"resources", "The resource shape, as \"CPU=1;GPU=0.5\"."},
    {"max_calls", nullptr},
    {"actor_id", nullptr},
    {"method_name", nullptr},
    {"kind", "A TaskKind value (an int: compared per task, no enum lookup)."},
    {"actor_options", nullptr},
    {"concurrency_group", nullptr},
    {"streaming", nullptr},
    {nullptr, nullptr}};
constexpr int kTaskFieldCount = sizeof(kTaskFields) / sizeof(kTaskFields[0]) - 1;
PyStructSequence_Desc kTaskDesc = {
    "fleet._core.Task",
    "One task pushed to this worker (read-only). handle == 0: a cancel notice for the running "
    "call task_id.",
    kTaskFields, kTaskFieldCount};
PyTypeObject* g_task_type = nullptr;  // made once, at module init

// A Task from its fields, in kTaskFields order.
nb::object MakeTask(std::initializer_list<nb::object> fields) {
  PyObject* t = PyStructSequence_New(g_task_type);
  if (t == nullptr) throw nb::python_error();
  Py_ssize_t i = 0;
  for (const nb::object& f : fields) PyStructSequence_SetItem(t, i++, f.inc_ref().ptr());
  return nb::steal(t);
}

nb::str PyStr(const std::string& s) { return nb::str(s.data(), s.size()); }

nb::object TaskToPy(CoreWorker& core, const fleet::ExecutableTask& t) {
  const auto& s = t.spec;
  if (t.handle == 0) {
    nb::object none = nb::bytes("", 0), empty = nb::str("", 0), zero = nb::int_(0);
    return MakeTask({zero, Bytes(s.task_id()), zero, empty, empty, none, nb::list(), zero, none,
                     nb::dict(), nb::list(), zero, empty, zero, none, empty,
                     nb::int_(static_cast<int>(s.kind())), none, empty, nb::bool_(false)});
  }
  nb::list deps;
  if (s.deps_size() > 0) {
    std::vector<std::string> ids;
    std::vector<std::pair<nb::object, uint32_t>> values;
    for (const auto& d : s.deps()) {
      ids.push_back(d.object_id());
      values.emplace_back(Bytes(d.data()), d.flags());
    }
    ResolveStoreValues(core, ids, &values, /*errors_as_values=*/true);
    for (auto& [d, f] : values) deps.append(nb::make_tuple(d, f));
  }
  nb::dict env;
  for (const auto& [k, v] : s.env_vars()) env[PyStr(k)] = PyStr(v);
  nb::list gpus;
  for (int g : s.gpu_ids()) gpus.append(g);
  return MakeTask({nb::int_(t.handle), Bytes(s.task_id()), nb::int_(s.job_id()),
                   PyStr(s.function_key()), PyStr(s.function_name()), Bytes(s.args()),
                   std::move(deps), nb::int_(s.num_returns()), Bytes(s.retry_exceptions()),
                   std::move(env), std::move(gpus), nb::int_(s.attempt()), PyStr(s.resources()),
                   nb::int_(s.max_calls()), Bytes(s.actor_id()), PyStr(s.method_name()),
                   nb::int_(static_cast<int>(s.kind())), Bytes(s.actor_options()),
                   PyStr(s.concurrency_group()), nb::bool_(s.streaming())});
}

// A schema enum as a Python IntEnum, its names and values read from the
// generated descriptor (so they cannot drift from cpp/proto/fleet.proto).
template <typename E>
void BindSchemaEnum(nb::module_& m, const char* name, const char* doc,
                    const google::protobuf::EnumDescriptor* d) {
  nb::enum_<E> e(m, name, doc, nb::is_arithmetic());
  for (int i = 0; i < d->value_count(); i++) {
    e.value(d->value(i)->name().c_str(), static_cast<E>(d->value(i)->number()));
  }
}

}  // namespace

NB_MODULE(_core, m) {
  m.attr("FLAG_PICKLED_ERROR") = static_cast<int>(fleet::kFlagPickledError);
  m.attr("FLAG_WORKER_CRASHED") = static_cast<int>(fleet::kFlagWorkerCrashed);
  m.attr("FLAG_OBJECT_LOST") = static_cast<int>(fleet::kFlagObjectLost);
  m.attr("FLAG_OWNER_DIED") = static_cast<int>(fleet::kFlagOwnerDied);
  m.attr("FLAG_TASK_CANCELLED") = static_cast<int>(fleet::kFlagTaskCancelled);
  m.attr("FLAG_SYSTEM_ERROR") = static_cast<int>(fleet::kFlagSystemError);
  m.attr("FLAG_ACTOR_DIED") = static_cast<int>(fleet::kFlagActorDied);
  m.attr("FLAG_GENERATOR_END") = static_cast<int>(fleet::kFlagGeneratorEnd);
  m.attr("FLAG_IN_STORE") = static_cast<int>(fleet::kFlagInStore);
  m.attr("ERROR_FLAGS") = static_cast<int>(fleet::kErrorFlags);
  m.attr("INLINE_THRESHOLD") = CoreWorker::kInlineThreshold;

  BindSchemaEnum<fleet::rpc::TaskKind>(m, "TaskKind", "What a task is (TaskSpec.kind).",
                                       fleet::rpc::TaskKind_descriptor());
  BindSchemaEnum<fleet::rpc::ActorInfo_State>(m, "ActorState", "An actor's state (ActorInfo.State).",
                                              fleet::rpc::ActorInfo_State_descriptor());
  BindSchemaEnum<fleet::rpc::PlacementGroupInfo_State>(
      m, "PlacementGroupState", "A placement group's state (PlacementGroupInfo.State).",
      fleet::rpc::PlacementGroupInfo_State_descriptor());

  g_task_type = PyStructSequence_NewType(&kTaskDesc);
  if (g_task_type == nullptr) throw nb::python_error();
  m.attr("Task") = nb::handle(reinterpret_cast<PyObject*>(g_task_type));

  nb::class_<StoreBuffer>(m, "StoreBuffer", nb::type_slots(kStoreBufferSlots))
      .def("__len__", [](const StoreBuffer& b) { return b.view->size(); })
      .def_prop_ro("object_id", [](const StoreBuffer& b) { return Bytes(b.view->id()); });

  m.def("random_id", [] { return Bytes(fleet::RandomId()); });
  m.def("return_object_id", [](const nb::bytes& task_id, uint32_t index) {
    return Bytes(fleet::ReturnObjectId(Str(task_id), index));
  });
  // A small value with out-of-band buffers as one inline bytes object.
  m.def("frame", [](const nb::bytes& inband, const nb::list& buffers) {
    BufferViews views(buffers);
    uint64_t size = fleet::FramedSize(inband.size(), views.spans());
    std::string out(size, '\0');
    fleet::WriteFramed(reinterpret_cast<uint8_t*>(out.data()),
                       std::string_view(inband.c_str(), inband.size()), views.spans());
    return Bytes(out);
  });
  m.def("generator_item_id", [](const nb::bytes& task_id, uint32_t index) {
    return Bytes(fleet::GeneratorItemId(Str(task_id), index));
  });

  // What stays the same across calls of one remote function with one set of
  // options, converted once: the per-call work is then args + deps only.
  m.def("probe_nodes",
        [](const std::string& gcs_address, const std::string& token, const std::string& version,
           int timeout_ms) {
          if (!version.empty()) fleet::rpc::SetLocalVersion(version);
          fleet::Result<fleet::rpc::GetNodesReply> r = [&] {
            nb::gil_scoped_release release;
            return fleet::ProbeNodes(gcs_address, token, timeout_ms);
          }();
          if (!r.ok()) throw std::runtime_error(r.status().message());
          return NodesToList(r.value());
        },
        nb::arg("gcs_address"), nb::arg("token"), nb::arg("version"), nb::arg("timeout_ms") = 10000);

  nb::class_<TaskTemplate>(m, "TaskTemplate")
      .def("__init__", [](TaskTemplate* tt, const std::string& function_key,
                          const std::string& function_name, int num_returns,
                          const std::map<std::string, double>& resources,
                          const nb::bytes& retry_exceptions,
                          const std::map<std::string, std::string>& env_vars, int max_calls,
                          bool streaming) {
        new (tt) TaskTemplate();
        fleet::rpc::TaskSpec* t = &tt->spec;
        t->set_function_key(function_key);
        t->set_function_name(function_name);
        t->set_num_returns(num_returns);
        t->set_retry_exceptions(retry_exceptions.c_str(), retry_exceptions.size());
        t->set_resources(fleet::TaskSubmitter::EncodeResources(resources));
        t->set_max_calls(max_calls);
        t->set_streaming(streaming);
        for (auto& [k, v] : env_vars) (*t->mutable_env_vars())[k] = v;
        tt->key = fleet::TaskSubmitter::SchedulingKey(*t);
      },
      nb::arg("function_key"), nb::arg("function_name"), nb::arg("num_returns"),
      nb::arg("resources"), nb::arg("retry_exceptions"), nb::arg("env_vars"),
      nb::arg("max_calls"), nb::arg("streaming") = false)
      // Where its tasks run: "" / "SPREAD" / "NODE_AFFINITY", and the
      // placement group they belong to (resources already the bundle's).
      .def("set_strategy",
           [](TaskTemplate& tt, const std::string& strategy, const nb::bytes& node_id, bool soft,
              const nb::bytes& pg_id, int bundle_index, bool capture) {
             fleet::rpc::TaskSpec* t = &tt.spec;
             t->set_scheduling_strategy(strategy);
             t->set_affinity_node_id(Str(node_id));
             t->set_affinity_soft(soft);
             t->set_placement_group_id(Str(pg_id));
             t->set_placement_group_bundle_index(bundle_index);
             t->set_placement_group_capture_child_tasks(capture);
             tt.key = fleet::TaskSubmitter::SchedulingKey(*t);
           });

  nb::class_<ActorCallTemplate>(m, "ActorCallTemplate")
      .def("__init__", [](ActorCallTemplate* t, const nb::bytes& actor_id, const std::string& method,
                          const std::string& function_name, int num_returns,
                          const std::string& concurrency_group, bool streaming,
                          int max_task_retries) {
        new (t) ActorCallTemplate();
        t->spec.set_kind(fleet::rpc::ACTOR_TASK);
        t->spec.set_actor_id(Str(actor_id));
        t->spec.set_method_name(method);
        t->spec.set_function_name(function_name);
        t->spec.set_num_returns(num_returns);
        t->spec.set_concurrency_group(concurrency_group);
        t->spec.set_streaming(streaming);
        t->max_task_retries = max_task_retries;
      });

  nb::class_<PyCore>(m, "Core")
      .def(nb::init<const std::map<std::string, std::string>&>())
      .def("shutdown", &PyCore::Shutdown)
      .def_prop_ro("address", [](PyCore& c) { return c.core().address(); })
      .def_prop_ro("worker_id", [](PyCore& c) { return Bytes(c.core().worker_id()); })
      .def_prop_ro("node_id", [](PyCore& c) { return Bytes(c.core().node_id()); })
      .def_prop_rw(
          "job_id", [](PyCore& c) { return c.core().job_id(); },
          [](PyCore& c, uint32_t j) { c.core().set_job_id(j); })
      .def("next_task_id", [](PyCore& c) { return Bytes(c.core().NextTaskId()); })
      // ---- objects
      .def("put",
           [](PyCore& c, const nb::bytes& data, uint32_t flags) {
             return Bytes(c.core().Put(Str(data), flags));
           })
      // put() of a value pickled with out-of-band buffers (or too large to
      // travel inline): inline if small, else into the node's store.
      .def(
          "put_value",
          [](PyCore& c, const nb::bytes& inband, const nb::list& buffers,
             const std::string& call_site) {
            BufferViews views(buffers);
            fleet::Result<std::string> r = [&] {
              nb::gil_scoped_release release;
              return c.core().PutValue(std::string_view(inband.c_str(), inband.size()),
                                       views.spans(), call_site);
            }();
            if (!r.ok()) RaiseStatus(r.status());
            return Bytes(r.value());
          },
          nb::arg("inband"), nb::arg("buffers"), nb::arg("call_site") = "")
      // Return `index` (or generator item `index`) of the running task
      // behind `handle`: (data, flags) for finish_task/send_generator_item.
      .def(
          "encode_return",
          [](PyCore& c, uint64_t handle, uint32_t index, bool generator_item,
             const nb::bytes& inband, const nb::list& buffers) {
            BufferViews views(buffers);
            fleet::Result<fleet::StoredObject> r = [&] {
              nb::gil_scoped_release release;
              return c.core().EncodeReturn(handle, index, generator_item,
                                           std::string_view(inband.c_str(), inband.size()),
                                           views.spans());
            }();
            if (!r.ok()) RaiseStatus(r.status());
            return nb::make_tuple(Bytes(r.value().data), r.value().flags);
          },
          nb::arg("handle"), nb::arg("index"), nb::arg("generator_item"), nb::arg("inband"),
          nb::arg("buffers"))
      .def("store_list",
           [](PyCore& c) {
             fleet::Result<fleet::rpc::StoreListReply> r = [&] {
               nb::gil_scoped_release release;
               return c.core().StoreList();
             }();
             if (!r.ok()) RaiseStatus(r.status());
             const auto& l = r.value();
             nb::list objs;
             for (const auto& o : l.objects()) {
               nb::dict d;
               d["object_id"] = fleet::ToHex(o.object_id());
               d["size"] = o.size();
               d["owner"] = o.owner_address();
               d["call_site"] = o.call_site();
               d["where"] = o.where();
               d["pins"] = o.pins();
               d["freed"] = o.freed();
               objs.append(d);
             }
             nb::dict out;
             out["objects"] = objs;
             out["capacity"] = l.capacity();
             out["used"] = l.used();
             out["spilled_bytes"] = l.spilled_bytes();
             out["spilled_total"] = l.spilled_total();
             out["restored_total"] = l.restored_total();
             out["spill_dir"] = l.spill_dir();
             return out;
           })
      .def(
          "get",
          [](PyCore& c, const std::vector<nb::bytes>& ids, int64_t timeout_ms, bool interruptible) {
            std::vector<std::string> v;
            v.reserve(ids.size());
            for (auto& i : ids) v.push_back(Str(i));
            return WaitInSlices(timeout_ms, interruptible,
                                [&](int64_t slice, bool last) -> std::optional<nb::list> {
                                  fleet::Result<std::vector<fleet::StoredObject>> r = [&] {
                                    nb::gil_scoped_release release;
                                    return c.core().Get(v, slice);
                                  }();
                                  if (r.ok()) return ToPyObjects(c.core(), v, r.value());
                                  if (r.status().code() != StatusCode::kTimedOut) {
                                    throw std::runtime_error(r.status().message());
                                  }
                                  if (last) {
                                    PyErr_SetString(PyExc_TimeoutError, r.status().message().c_str());
                                    throw nb::python_error();
                                  }
                                  return std::nullopt;
                                });
          },
          nb::arg("ids"), nb::arg("timeout_ms"), nb::arg("interruptible") = false)
      .def(
          "wait",
          [](PyCore& c, const std::vector<nb::bytes>& ids, int num_returns, int64_t timeout_ms,
             bool fetch_local, bool interruptible) {
            std::vector<std::string> v;
            v.reserve(ids.size());
            for (auto& i : ids) v.push_back(Str(i));
            return WaitInSlices(
                timeout_ms, interruptible,
                [&](int64_t slice, bool last) -> std::optional<std::vector<bool>> {
                  fleet::Result<std::vector<bool>> r = [&] {
                    nb::gil_scoped_release release;
                    return c.core().Wait(v, num_returns, slice, fetch_local);
                  }();
                  if (!r.ok()) throw std::runtime_error(r.status().message());
                  int ready = 0;
                  for (bool b : r.value()) ready += b ? 1 : 0;
                  if (ready >= num_returns || last) return r.value();
                  return std::nullopt;
                });
          },
          nb::arg("ids"), nb::arg("num_returns"), nb::arg("timeout_ms"), nb::arg("fetch_local"),
          nb::arg("interruptible") = false)
      .def("add_ref", [](PyCore& c, const nb::bytes& id) { c.core().store().AddLocalRef(Str(id)); })
      .def("remove_ref",
           [](PyCore& c, const nb::bytes& id) {
             if (c.core_) c.core_->store().RemoveLocalRef(Str(id));
           })
      // A ref owned by `owner` was deserialized here: a new entry is queued
      // for registration with the owner (flush_borrows sends them).
      .def("register_borrowed",
           // True: call flush_borrows before relying on the ref (its
           // registration is queued here, or in flight from another thread).
           [](PyCore& c, const nb::bytes& id, const std::string& owner) {
             using Borrow = fleet::MemoryStore::Borrow;
             std::string i = Str(id);
             Borrow b = c.core().store().RegisterBorrowed(i, owner, true);
             if (b == Borrow::kRegister) c.core().QueueBorrowRegistration(owner, i);
             return b != Borrow::kKnown;
           })
      .def("register_return_refs",
           [](PyCore& c, uint64_t handle, uint32_t index, const std::vector<nb::bytes>& ids,
              bool generator_item) {
             std::vector<std::string> v;
             for (auto& i : ids) v.push_back(Str(i));
             nb::gil_scoped_release release;
             c.core().RegisterReturnRefs(handle, index, v, generator_item);
           },
           nb::arg("handle"), nb::arg("index"), nb::arg("ids"), nb::arg("generator_item") = false)
      .def("flush_borrows",
           [](PyCore& c) {
             nb::gil_scoped_release release;
             c.core().FlushBorrowRegistrations();
           })
      // `outer` (a put of ours) holds the refs `inner` while it exists.
      .def("set_contains",
           [](PyCore& c, const nb::bytes& outer, const std::vector<nb::bytes>& inner) {
             std::vector<std::string> v;
             for (auto& i : inner) v.push_back(Str(i));
             c.core().store().SetContains(Str(outer), v);
           })
      .def("mark_escaped", [](PyCore& c, const nb::bytes& id) { c.core().store().MarkEscaped(Str(id)); })
      .def("num_objects", [](PyCore& c) { return c.core().store().Size(); })
      // ---- tasks
      .def("submit",
           [](PyCore& c, const TaskTemplate& tmpl, int max_retries, const nb::bytes& args,
              const std::vector<nb::bytes>& deps, const std::vector<nb::bytes>& nested,
              const nb::bytes& parent) -> nb::object {
             fleet::TaskSubmission t;
             for (auto& n : nested) t.held_ids.push_back(Str(n));
             t.spec = tmpl.spec;
             t.scheduling_key = tmpl.key;
             if (parent.size() > 0) t.spec.set_parent_task_id(parent.c_str(), parent.size());
             t.spec.set_task_id(c.core().NextTaskId());
             t.spec.set_job_id(c.core().job_id());
             t.spec.set_args(args.c_str(), args.size());
             t.dep_ids.reserve(deps.size());
             for (auto& d : deps) t.dep_ids.push_back(Str(d));
             t.max_retries = max_retries;
             auto ids = c.core().SubmitTask(std::move(t));
             if (ids.size() == 1) return Bytes(ids[0]);
             nb::list out;
             for (auto& id : ids) out.append(Bytes(id));
             return out;
           },
           nb::arg("template"), nb::arg("max_retries"), nb::arg("args"), nb::arg("deps"),
           nb::arg("nested") = std::vector<nb::bytes>{}, nb::arg("parent") = nb::bytes("", 0))
      // ---- actors
      .def("register_actor",
           [](PyCore& c, const nb::bytes& actor_id, const std::string& name, const std::string& ns,
              const std::string& class_name, int max_restarts, bool detached,
              const nb::bytes& handle_meta, const std::map<std::string, double>& resources,
              const std::map<std::string, double>& placement, bool get_if_exists,
              const std::string& strategy, const nb::bytes& affinity_node_id, bool affinity_soft) {
             fleet::rpc::ActorInfo info;
             info.set_scheduling_strategy(strategy);
             info.set_affinity_node_id(Str(affinity_node_id));
             info.set_affinity_soft(affinity_soft);
             info.set_actor_id(Str(actor_id));
             info.set_job_id(c.core().job_id());
             info.set_name(name);
             info.set_namespace_(ns);
             info.set_class_name(class_name);
             info.set_max_restarts(max_restarts);
             info.set_detached(detached);
             info.set_handle_meta(Str(handle_meta));
             for (auto& [k, v] : resources) (*info.mutable_resources())[k] = v;
             for (auto& [k, v] : placement) (*info.mutable_placement())[k] = v;
             fleet::Result<fleet::RegisteredActor> r = [&] {
               nb::gil_scoped_release release;
               return c.core().actors().Register(info, get_if_exists);
             }();
             if (!r.ok()) {
               if (r.status().code() == StatusCode::kInvalidArgument) {
                 PyErr_SetString(PyExc_ValueError, r.status().message().c_str());
                 throw nb::python_error();
               }
               throw std::runtime_error(r.status().message());
             }
             return nb::make_tuple(Bytes(r->actor_id), r->existed, Bytes(r->handle_meta));
           },
           nb::arg("actor_id"), nb::arg("name"), nb::arg("ns"), nb::arg("class_name"),
           nb::arg("max_restarts"), nb::arg("detached"), nb::arg("handle_meta"), nb::arg("resources"),
           nb::arg("placement"), nb::arg("get_if_exists"), nb::arg("strategy") = "",
           nb::arg("affinity_node_id") = nb::bytes("", 0), nb::arg("affinity_soft") = false)
      .def("create_actor",
           [](PyCore& c, const TaskTemplate& tmpl, const nb::bytes& actor_id, const nb::bytes& args,
              const std::vector<nb::bytes>& deps, const nb::bytes& actor_options) {
             fleet::TaskSubmission t;
             t.spec = tmpl.spec;
             t.spec.set_kind(fleet::rpc::ACTOR_CREATION);
             t.spec.set_actor_id(Str(actor_id));
             t.spec.set_task_id(c.core().NextTaskId());
             t.spec.set_job_id(c.core().job_id());
             t.spec.set_num_returns(1);
             t.spec.set_args(args.c_str(), args.size());
             t.spec.set_actor_options(actor_options.c_str(), actor_options.size());
             t.spec.set_owner_address(c.core().address());
             for (auto& d : deps) t.dep_ids.push_back(Str(d));
             c.core().actors().Create(std::move(t));
           })
      .def("submit_actor_task",
           [](PyCore& c, const ActorCallTemplate& tmpl, const nb::bytes& args,
              const std::vector<nb::bytes>& deps, const std::vector<nb::bytes>& nested,
              const nb::bytes& parent) -> nb::object {
             fleet::TaskSubmission t;
             for (auto& n : nested) t.held_ids.push_back(Str(n));
             t.spec = tmpl.spec;
             if (parent.size() > 0) t.spec.set_parent_task_id(parent.c_str(), parent.size());
             t.spec.set_task_id(c.core().NextTaskId());
             t.spec.set_job_id(c.core().job_id());
             t.spec.set_args(args.c_str(), args.size());
             t.dep_ids.reserve(deps.size());
             for (auto& d : deps) t.dep_ids.push_back(Str(d));
             auto ids = c.core().SubmitActorTask(std::move(t), tmpl.max_task_retries);
             if (ids.empty()) return nb::none();
             return IdsToPy(ids);
           },
           nb::arg("template"), nb::arg("args"), nb::arg("deps"),
           nb::arg("nested") = std::vector<nb::bytes>{}, nb::arg("parent") = nb::bytes("", 0))
      .def("release_actor",
           [](PyCore& c, const nb::bytes& actor_id) {
             if (c.core_) c.core_->actors().ReleaseHandle(Str(actor_id));
           })
      .def("kill_actor",
           [](PyCore& c, const nb::bytes& actor_id, bool no_restart, const std::string& reason) {
             Status s;
             {
               nb::gil_scoped_release release;
               s = c.core().KillActor(Str(actor_id), no_restart, reason);
             }
             if (s.code() == StatusCode::kNotFound) return false;
             if (!s.ok()) throw std::runtime_error(s.message());
             return true;
           })
      .def("get_named_actor",
           [](PyCore& c, const std::string& name, const std::string& ns) -> nb::object {
             fleet::Result<std::optional<fleet::rpc::ActorInfo>> r = [&] {
               nb::gil_scoped_release release;
               return c.core().GetNamedActor(name, ns);
             }();
             auto v = Check(std::move(r));
             if (!v) return nb::none();
             return ActorInfoToDict(*v);
           })
      .def("list_actors",
           [](PyCore& c) {
             fleet::Result<std::vector<fleet::rpc::ActorInfo>> r = [&] {
               nb::gil_scoped_release release;
               return c.core().ListActors();
             }();
             nb::list out;
             for (const auto& a : Check(std::move(r))) out.append(ActorInfoToDict(a));
             return out;
           })
      .def("actor_exiting",
           [](PyCore& c, const nb::bytes& actor_id, const std::string& reason) {
             std::string id = Str(actor_id);
             nb::gil_scoped_release release;
             Status s = c.core().ReportActorExiting(id, reason);
             (void)s;  // best effort: the process exits either way
           })
      .def("actor_state",
           [](PyCore& c, const nb::bytes& actor_id) { return c.core().actors().StateOf(Str(actor_id)); })
      .def("cancel",
           [](PyCore& c, const nb::bytes& task_id, bool force, bool recursive) {
             return c.core().CancelTask(Str(task_id), force, recursive);
           })
      .def(
          "take_cancel_request",
          [](PyCore& c, const nb::bytes& task_id, bool keep) {
            return c.core().TakeCancelRequest(Str(task_id), keep);
          },
          nb::arg("task_id"), nb::arg("keep") = false)
      .def("actor_call_pending",
           [](PyCore& c, const nb::bytes& task_id) { return c.core().actors().IsPending(Str(task_id)); })
      .def("actor_pending_calls",
           [](PyCore& c, const nb::bytes& actor_id) {
             return c.core().actors().NumPendingCalls(Str(actor_id));
           })
      .def("set_concurrent", [](PyCore& c, bool v) { c.core().SetConcurrent(v); })
      .def("send_generator_item",
           [](PyCore& c, uint64_t handle, int index, const nb::bytes& data, uint32_t flags) {
             c.core().SendGeneratorItem(handle, index, Str(data), flags);
           })
      // A dropped ObjectRefGenerator: frees the items it never handed out
      // (those that have arrived; later ones are dropped on arrival).
      .def("generator_release",
           [](PyCore& c, const nb::bytes& task_id, uint32_t from_index) {
             if (!c.core_) return;
             c.core_->ReleaseGenerator(Str(task_id), from_index);
           })
      // Streaming generators: waits until item `index` of `task_id` exists
      // (returns its id; the caller's ObjectRef takes over one ref) or the
      // stream has ended (None).
      .def(
          "generator_next",
          [](PyCore& c, const nb::bytes& task_id, uint32_t index, int64_t timeout_ms,
             bool interruptible) {
            std::string tid = Str(task_id);
            std::string item = fleet::GeneratorItemId(tid, index);
            std::string end = fleet::ReturnObjectId(tid, 1);
            auto& store = c.core().store();
            store.CreatePendingIfAbsent(item);
            std::vector<std::string> ids = {item, end};
            return WaitInSlices(timeout_ms, interruptible,
                                [&](int64_t slice, bool last) -> std::optional<nb::object> {
                                  fleet::Result<std::vector<bool>> r = [&] {
                                    nb::gil_scoped_release release;
                                    return store.Wait(ids, 1, slice, true);
                                  }();
                                  if (!r.ok()) throw std::runtime_error(r.status().message());
                                  if (r.value()[0]) return nb::object(Bytes(item));
                                  if (r.value()[1] || last) {
                                    // Atomically: the item may have come just now.
                                    if (!store.DropPendingRef(item)) return nb::object(Bytes(item));
                                    if (r.value()[1]) return nb::none();
                                    PyErr_SetString(PyExc_TimeoutError,
                                                    "the generator's next item did not arrive in time");
                                    throw nb::python_error();
                                  }
                                  return std::nullopt;
                                });
          },
          nb::arg("task_id"), nb::arg("index"), nb::arg("timeout_ms"),
          nb::arg("interruptible") = false)
      .def("next_task",
           [](PyCore& c) -> nb::object {
             std::optional<fleet::ExecutableTask> t;
             {
               nb::gil_scoped_release release;
               t = c.core().NextTask();
             }
             if (!t) return nb::none();
             return TaskToPy(c.core(), *t);
           })
      .def("enable_task_events", [](PyCore& c) { return c.core().EnableTaskEvents(); })
      // Non-blocking: None if nothing is queued, False if the worker must exit.
      .def("try_next_task",
           [](PyCore& c) -> nb::object {
             auto t = c.core().TryNextTask();
             if (!t) return nb::none();
             if (t->handle == UINT64_MAX) return nb::bool_(false);
             return TaskToPy(c.core(), *t);
           })
      .def("finish_task",
           [](PyCore& c, uint64_t handle, const std::vector<std::pair<nb::bytes, uint32_t>>& returns,
              bool retryable, bool worker_exiting) {
             std::vector<std::pair<std::string, uint32_t>> r;
             r.reserve(returns.size());
             for (auto& [d, f] : returns) r.emplace_back(Str(d), f);
             c.core().FinishTask(handle, std::move(r), retryable, worker_exiting);
           },
           nb::arg("handle"), nb::arg("returns"), nb::arg("retryable"),
           nb::arg("worker_exiting") = false)
      // ---- control store
      .def("kv_put",
           [](PyCore& c, const std::string& key, const nb::bytes& value, bool overwrite) {
             bool added = false;
             std::string v = Str(value);
             Status s;
             {
               nb::gil_scoped_release release;
               s = c.core().KvPut(key, v, overwrite, &added);
             }
             if (!s.ok()) throw std::runtime_error(s.message());
             return added;
           })
      .def("kv_get",
           [](PyCore& c, const std::string& key) -> nb::object {
             fleet::Result<std::optional<std::string>> r = [&] {
               nb::gil_scoped_release release;
               return c.core().KvGet(key);
             }();
             if (!r.ok()) throw std::runtime_error(r.status().message());
             if (!r.value()) return nb::none();
             return Bytes(*r.value());
           })
      .def("kv_del",
           [](PyCore& c, const std::string& key) {
             fleet::Result<int> r = [&] {
               nb::gil_scoped_release release;
               return c.core().KvDel(key);
             }();
             if (!r.ok()) throw std::runtime_error(r.status().message());
             return r.value();
           })
      .def("kv_keys",
           [](PyCore& c, const std::string& prefix) {
             fleet::Result<std::vector<std::string>> r = [&] {
               nb::gil_scoped_release release;
               return c.core().KvKeys(prefix);
             }();
             if (!r.ok()) throw std::runtime_error(r.status().message());
             return r.value();
           })
      .def("nodes",
           [](PyCore& c) {
             fleet::Result<fleet::rpc::GetNodesReply> r = [&] {
               nb::gil_scoped_release release;
               return c.core().GetNodes();
             }();
             if (!r.ok()) throw std::runtime_error(r.status().message());
             return NodesToList(r.value());
           })
      .def("object_locations",
           [](PyCore& c, const std::vector<nb::bytes>& ids, int64_t timeout_ms) {
             std::vector<std::string> want;
             for (auto& i : ids) want.push_back(Str(i));
             fleet::Result<std::vector<fleet::rpc::ObjectLocations>> r = [&] {
               nb::gil_scoped_release release;
               return c.core().ObjectLocations(want, timeout_ms);
             }();
             if (!r.ok()) throw std::runtime_error(r.status().message());
             nb::list out;
             for (const auto& l : r.value()) {
               if (!l.found()) {
                 out.append(nb::none());
                 continue;
               }
               nb::list nodes;
               for (const auto& n : l.node_ids()) nodes.append(fleet::ToHex(n));
               nb::dict d;
               d["node_ids"] = nodes;
               d["object_size"] = l.object_size();
               out.append(d);
             }
             return out;
           })
      // ---- placement groups
      .def("create_placement_group",
           [](PyCore& c, const nb::bytes& pg_id, const std::string& name, const std::string& ns,
              const std::string& strategy, const std::vector<std::map<std::string, double>>& bundles,
              bool detached, uint32_t job_id) {
             fleet::rpc::Envelope req;
             auto* info = req.mutable_create_placement_group()->mutable_info();
             info->set_job_id(job_id);  // the caller's job (a worker runs tasks of a job)
             info->set_pg_id(Str(pg_id));
             info->set_name(name);
             info->set_namespace_(ns);
             info->set_strategy(strategy);
             info->set_detached(detached);
             for (size_t i = 0; i < bundles.size(); i++) {
               auto* b = info->add_bundles();
               b->set_index(static_cast<int>(i));
               for (auto& [k, v] : bundles[i]) (*b->mutable_resources())[k] = v;
             }
             auto r = GcsCall(c, req, -1);
             const std::string& error = r.create_placement_group_reply().error();
             if (!error.empty()) {
               PyErr_SetString(PyExc_ValueError, error.c_str());
               throw nb::python_error();
             }
           })
      .def("remove_placement_group",
           [](PyCore& c, const nb::bytes& pg_id) {
             fleet::rpc::Envelope req;
             req.mutable_remove_placement_group()->set_pg_id(Str(pg_id));
             return GcsCall(c, req, -1).remove_placement_group_reply().found();
           })
      .def("wait_placement_group",
           [](PyCore& c, const nb::bytes& pg_id, int64_t timeout_ms) {
             fleet::rpc::Envelope req;
             req.mutable_wait_placement_group()->set_pg_id(Str(pg_id));
             req.mutable_wait_placement_group()->set_timeout_ms(timeout_ms);
             auto r = GcsCall(c, req, timeout_ms < 0 ? -1 : timeout_ms + 60000);
             const auto& w = r.wait_placement_group_reply();
             return nb::make_tuple(w.ready(), w.error());
           })
      .def("placement_groups",
           [](PyCore& c, const nb::bytes& pg_id, const std::string& name, const std::string& ns) {
             fleet::rpc::Envelope req;
             auto* g = req.mutable_get_placement_groups();
             g->set_pg_id(Str(pg_id));
             g->set_name(name);
             g->set_namespace_(ns);
             auto r = GcsCall(c, req, -1);
             static const char* kStates[] = {"PENDING", "CREATED", "REMOVED", "RESCHEDULING"};
             nb::list out;
             for (const auto& pg : r.get_placement_groups_reply().groups()) {
               nb::dict d;
               d["placement_group_id"] = fleet::ToHex(pg.pg_id());
               d["name"] = pg.name();
               d["namespace"] = pg.namespace_();
               d["strategy"] = pg.strategy();
               d["state"] = kStates[pg.state()];
               d["job_id"] = pg.job_id();
               d["detached"] = pg.detached();
               d["pending_reason"] = pg.pending_reason();
               nb::dict bundles, nodes;
               for (const auto& b : pg.bundles()) {
                 bundles[nb::int_(b.index())] =
                     std::map<std::string, double>(b.resources().begin(), b.resources().end());
                 nodes[nb::int_(b.index())] = fleet::ToHex(b.node_id());
               }
               d["bundles"] = bundles;
               d["bundles_to_node_id"] = nodes;
               out.append(d);
             }
             return out;
           })
      .def("node_stats", [](PyCore& c) {
        fleet::Result<fleet::rpc::GetNodeStatsReply> r = [&] {
          nb::gil_scoped_release release;
          return c.core().GetNodeStats();
        }();
        if (!r.ok()) throw std::runtime_error(r.status().message());
        const auto& s = r.value();
        nb::dict d;
        d["total"] = std::map<std::string, double>(s.total().begin(), s.total().end());
        d["available"] = std::map<std::string, double>(s.available().begin(), s.available().end());
        d["num_workers"] = s.num_workers();
        d["num_idle_workers"] = s.num_idle_workers();
        d["worker_pids"] = std::vector<int>(s.worker_pids().begin(), s.worker_pids().end());
        d["pending_leases"] = s.pending_leases();
        d["node_id"] = fleet::ToHex(s.node_id());
        d["zygote_pid"] = s.zygote_pid();
        return d;
      });
}
