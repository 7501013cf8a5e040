// fleet._core, actors: call templates, registration and creation, calls,
// kill, named actors, and the actor directory.
#include "binding_util.h"

namespace fleet_py {

namespace {

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

}  // namespace

void BindActors(nb::module_& m, nb::class_<PyCore>& core) {
  nb::class_<ActorCallTemplate>(m, "ActorCallTemplate")
      .def("__init__", [](ActorCallTemplate* t, const nb::bytes& actor_id, const std::string& method,
                          const std::string& function_name, int num_returns,
                          const std::string& concurrency_group, bool streaming,
                          int max_task_retries, bool dynamic_returns, int64_t backpressure) {
        new (t) ActorCallTemplate();
        t->spec.set_kind(fleet::rpc::ACTOR_TASK);
        t->spec.set_actor_id(Str(actor_id));
        t->spec.set_method_name(method);
        t->spec.set_function_name(function_name);
        t->spec.set_num_returns(num_returns);
        t->spec.set_concurrency_group(concurrency_group);
        t->spec.set_streaming(streaming || dynamic_returns);
        t->spec.set_dynamic_returns(dynamic_returns);
        t->spec.set_generator_backpressure_num_objects(backpressure);
        t->max_task_retries = max_task_retries;
      },
      nb::arg("actor_id"), nb::arg("method"), nb::arg("function_name"), nb::arg("num_returns"),
      nb::arg("concurrency_group"), nb::arg("streaming"), nb::arg("max_task_retries"),
      nb::arg("dynamic_returns") = false, nb::arg("generator_backpressure_num_objects") = 0);

  core
      .def("register_actor",
           [](PyCore& c, const nb::bytes& actor_id, const std::string& name, const std::string& ns,
              const std::string& class_name, int max_restarts, bool detached,
              const nb::bytes& handle_meta, const std::map<std::string, double>& resources,
              const std::map<std::string, double>& placement, bool get_if_exists,
              const std::string& strategy, const nb::bytes& affinity_node_id, bool affinity_soft,
              const std::map<std::string, std::string>& label_selector,
              const std::vector<std::map<std::string, std::string>>& fallback_strategy) {
             fleet::rpc::ActorInfo info;
             for (auto& [k, v] : label_selector) (*info.mutable_label_selector())[k] = v;
             for (auto& f : fallback_strategy) {
               auto* sel = info.add_fallback_strategy()->mutable_selector();
               for (auto& [k, v] : f) (*sel)[k] = v;
             }
             info.set_owner_node_id(c.core().node_id());
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
             if (!detached) info.set_owner_address(c.core().address());
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
           nb::arg("affinity_node_id") = nb::bytes("", 0), nb::arg("affinity_soft") = false,
           nb::arg("label_selector") = std::map<std::string, std::string>(),
           nb::arg("fallback_strategy") = std::vector<std::map<std::string, std::string>>())
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
             auto ids = c.core().SubmitActorTask(
                 MakeSubmission(c, tmpl.spec, args, deps, nested, parent), tmpl.max_task_retries);
             if (ids.empty()) return nb::none();
             return IdsToPy(ids);
           },
           nb::arg("template"), nb::arg("args"), nb::arg("deps"),
           nb::arg("nested") = std::vector<nb::bytes>{}, nb::arg("parent") = nb::bytes("", 0))
      .def("own_actor_handle",
           [](PyCore& c, const nb::bytes& actor_id) {
             return Bytes(c.core().OwnActorHandle(Str(actor_id)));
           })
      .def("hold_owned_actor_handle",
           [](PyCore& c, const nb::bytes& actor_id) -> nb::object {
             std::string id = c.core().HoldOwnedActorHandle(Str(actor_id));
             if (id.empty()) return nb::none();
             return Bytes(id);
           })
      .def("release_actor_handle",
           [](PyCore& c, const nb::bytes& actor_id, const nb::bytes& ref_id) {
             if (c.core_) c.core_->actors().ReleaseHandleRef(Str(actor_id), Str(ref_id));
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
      .def("actor_call_pending",
           [](PyCore& c, const nb::bytes& task_id) { return c.core().actors().IsPending(Str(task_id)); })
      .def("actor_pending_calls",
           [](PyCore& c, const nb::bytes& actor_id) {
             return c.core().actors().NumPendingCalls(Str(actor_id));
           });
}

}  // namespace fleet_py
