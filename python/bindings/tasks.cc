// fleet._core, tasks: task templates and submission, cancel, and the worker's
// side (the Task struct sequence, next_task, finish_task, generator items).
#include "binding_util.h"

namespace fleet_py {

namespace {

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
    {"dynamic_returns", "num_returns=\"dynamic\": return 0 is a DynamicObjectRefGenerator."},
    {"generator_backpressure", "Items a generator may have not yet taken by its reader (0: any)."},
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

nb::object TaskToPy(CoreWorker& core, const fleet::ExecutableTask& t) {
  const auto& s = t.spec;
  if (t.handle == 0) {
    nb::object none = nb::bytes("", 0), empty = nb::str("", 0), zero = nb::int_(0);
    return MakeTask({zero, Bytes(s.task_id()), zero, empty, empty, none, nb::list(), zero, none,
                     nb::dict(), nb::list(), zero, empty, zero, none, empty,
                     nb::int_(static_cast<int>(s.kind())), none, empty, nb::bool_(false),
                     nb::bool_(false), zero});
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
                   PyStr(s.concurrency_group()), nb::bool_(s.streaming()),
                   nb::bool_(s.dynamic_returns()),
                   nb::int_(s.generator_backpressure_num_objects())});
}

}  // namespace

void BindTasks(nb::module_& m, nb::class_<PyCore>& core) {
  g_task_type = PyStructSequence_NewType(&kTaskDesc);
  if (g_task_type == nullptr) throw nb::python_error();
  m.attr("Task") = nb::handle(reinterpret_cast<PyObject*>(g_task_type));

  m.def("generator_item_id", [](const nb::bytes& task_id, uint32_t index) {
    return Bytes(fleet::GeneratorItemId(Str(task_id), index));
  });

  // What stays the same across calls of one remote function with one set of
  // options, converted once: the per-call work is then args + deps only.
  nb::class_<TaskTemplate>(m, "TaskTemplate")
      .def("__init__", [](TaskTemplate* tt, const std::string& function_key,
                          const std::string& function_name, int num_returns,
                          const std::map<std::string, double>& resources,
                          const nb::bytes& retry_exceptions,
                          const std::map<std::string, std::string>& env_vars, int max_calls,
                          bool streaming, bool dynamic_returns, int64_t backpressure) {
        new (tt) TaskTemplate();
        fleet::rpc::TaskSpec* t = &tt->spec;
        t->set_function_key(function_key);
        t->set_function_name(function_name);
        t->set_num_returns(num_returns);
        t->set_retry_exceptions(retry_exceptions.c_str(), retry_exceptions.size());
        t->set_resources(fleet::TaskSubmitter::EncodeResources(resources));
        t->set_max_calls(max_calls);
        t->set_streaming(streaming || dynamic_returns);
        t->set_dynamic_returns(dynamic_returns);
        t->set_generator_backpressure_num_objects(backpressure);
        for (auto& [k, v] : env_vars) (*t->mutable_env_vars())[k] = v;
        tt->key = fleet::TaskSubmitter::SchedulingKey(*t);
      },
      nb::arg("function_key"), nb::arg("function_name"), nb::arg("num_returns"),
      nb::arg("resources"), nb::arg("retry_exceptions"), nb::arg("env_vars"),
      nb::arg("max_calls"), nb::arg("streaming") = false, nb::arg("dynamic_returns") = false,
      nb::arg("generator_backpressure_num_objects") = 0)
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
           })
      // Ray's label_selector: only nodes whose labels match run its tasks.
      .def("set_label_selector",
           [](TaskTemplate& tt, const std::map<std::string, std::string>& selector) {
             auto* m = tt.spec.mutable_label_selector();
             m->clear();
             for (auto& [k, v] : selector) (*m)[k] = v;
             tt.key = fleet::TaskSubmitter::SchedulingKey(tt.spec);
           });

  core
      .def("submit",
           [](PyCore& c, const TaskTemplate& tmpl, int max_retries, const nb::bytes& args,
              const std::vector<nb::bytes>& deps, const std::vector<nb::bytes>& nested,
              const nb::bytes& parent) -> nb::object {
             fleet::TaskSubmission t = MakeSubmission(c, tmpl.spec, args, deps, nested, parent);
             t.scheduling_key = tmpl.key;
             t.max_retries = max_retries;
             return IdsToPy(c.core().SubmitTask(std::move(t)));
           },
           nb::arg("template"), nb::arg("max_retries"), nb::arg("args"), nb::arg("deps"),
           nb::arg("nested") = std::vector<nb::bytes>{}, nb::arg("parent") = nb::bytes("", 0))
      .def(
          "cancel",
          [](PyCore& c, const nb::bytes& task_id, bool force, bool recursive,
             const nb::bytes& object_id) {
            return c.core().CancelTask(Str(task_id), force, recursive, Str(object_id));
          },
          nb::arg("task_id"), nb::arg("force"), nb::arg("recursive"),
          nb::arg("object_id") = nb::bytes("", 0))
      .def(
          "take_cancel_request",
          [](PyCore& c, const nb::bytes& task_id, bool keep) {
            return c.core().TakeCancelRequest(Str(task_id), keep);
          },
          nb::arg("task_id"), nb::arg("keep") = false)
      .def("set_concurrent", [](PyCore& c, bool v) { c.core().SetConcurrent(v); })
      .def("send_generator_item",
           [](PyCore& c, uint64_t handle, int index, const nb::bytes& data, uint32_t flags) {
             std::string d = Str(data);
             nb::gil_scoped_release release;  // it may wait for the reader (backpressure)
             c.core().SendGeneratorItem(handle, index, std::move(d), flags);
           })
      // Dynamic generator: return 0 of `handle` holds items 0..count-1 (see
      // CoreWorker::HoldGeneratorItems); returns the caller's address.
      .def("hold_generator_items",
           [](PyCore& c, uint64_t handle, uint32_t count) {
             return c.core().HoldGeneratorItems(handle, count);
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
                                  auto taken = [&] {  // the reader has index + 1 items
                                    c.core().generator_backpressure().OnConsumed(tid, index + 1);
                                    return nb::object(Bytes(item));
                                  };
                                  if (r.value()[0]) return taken();
                                  if (r.value()[1] || last) {
                                    // Atomically: the item may have come just now.
                                    if (!store.DropPendingRef(item)) return taken();
                                    if (r.value()[1]) {
                                      c.core().generator_backpressure().Forget(tid);
                                      return nb::none();
                                    }
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
           nb::arg("worker_exiting") = false);
}

}  // namespace fleet_py
