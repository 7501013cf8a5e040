// ResolveDependencies implementation; see dependency_resolver.h.
#include "core/dependency_resolver.h"

#include <mutex>

#include "core/object_flags.h"

namespace fleet {

namespace {

struct Resolution {
  std::mutex mu;
  rpc::TaskSpec* spec;
  std::shared_ptr<void> keep_alive;
  DepsDone done;
  int unresolved = 0;
  bool failed = false;
  StoredObject failure;

  void OnReady(int index, const StoredObject& value) {
    bool finish;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (index >= 0) {
        rpc::TaskArg* arg = spec->mutable_deps(index);
        if ((value.flags & kErrorFlags) && !failed) {
          failed = true;
          failure = value;
        }
        arg->set_is_inline(true);
        arg->set_data(value.data);
        arg->set_flags(value.flags);
      }
      finish = --unresolved == 0;
    }
    if (finish) {
      DepsDone d = std::move(done);
      d(failed ? &failure : nullptr);
      keep_alive.reset();
    }
  }
};

}  // namespace

void ResolveDependencies(MemoryStore& store, rpc::TaskSpec* spec,
                         const std::vector<std::string>& dep_ids,
                         std::shared_ptr<void> keep_alive, DepsDone done) {
  spec->mutable_deps()->Reserve(static_cast<int>(dep_ids.size()));
  for (const auto& id : dep_ids) spec->add_deps()->set_object_id(id);
  if (dep_ids.empty()) {
    done(nullptr);
    return;
  }
  auto r = std::make_shared<Resolution>();
  r->spec = spec;
  r->keep_alive = std::move(keep_alive);
  r->done = std::move(done);
  r->unresolved = static_cast<int>(dep_ids.size()) + 1;  // +1 guards this loop
  for (size_t i = 0; i < dep_ids.size(); ++i) {
    int index = static_cast<int>(i);
    StoredObject value;
    auto ready = store.GetOrSubscribe(dep_ids[i], &value,
                                      [r, index](const StoredObject& v) { r->OnReady(index, v); });
    if (!ready.ok()) {
      StoredObject lost;
      lost.flags = kFlagObjectLost;
      lost.data = "Task " + spec->function_name() + " could not get its argument: " +
                  ready.status().message();
      r->OnReady(index, lost);
    } else if (ready.value()) {
      r->OnReady(index, value);
    }
  }
  r->OnReady(-1, StoredObject());  // drop the loop guard
}

}  // namespace fleet
