// fleet._core: the nanobind binding of the C++ core library (CoreWorker).
// Conversions only: every decision lives in cpp/src/core. This file makes the
// module (flags, schema enums, the Core object); each bound concept adds its
// part: objects.cc, tasks.cc, actors.cc, control_store.cc.
#include <google/protobuf/descriptor.h>

#include "binding_util.h"

namespace {

using namespace fleet_py;

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
  using namespace fleet_py;
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

  nb::class_<PyCore> core(m, "Core");
  core
      .def(nb::init<const std::map<std::string, std::string>&>())
      .def("shutdown", &PyCore::Shutdown)
      .def_prop_ro("address", [](PyCore& c) { return c.core().address(); })
      .def_prop_ro("worker_id", [](PyCore& c) { return Bytes(c.core().worker_id()); })
      .def_prop_ro("node_id", [](PyCore& c) { return Bytes(c.core().node_id()); })
      .def_prop_rw(
          "job_id", [](PyCore& c) { return c.core().job_id(); },
          [](PyCore& c, uint32_t j) { c.core().set_job_id(j); })
      .def("next_task_id", [](PyCore& c) { return Bytes(c.core().NextTaskId()); });
  BindObjects(m, core);
  BindTasks(m, core);
  BindActors(m, core);
  BindControlStore(m, core);
}
