// fleet._core, objects: put/get/wait, the node's store (StoreBuffer views of
// pinned objects), reference counts and borrows, object locations.
#include "binding_util.h"

namespace fleet_py {

namespace {

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

}  // namespace

// Replaces each (descriptor, kFlagInStore) value by (StoreBuffer, flags), or
// by an ObjectLost error value, with one round trip to the node. An object
// that cannot be restored for lack of room raises ObjectStoreFullError, or
// with `errors_as_values` becomes a pickled ObjectStoreFullError value (a
// task's argument: the task fails with it, the worker carries on).
void ResolveStoreValues(CoreWorker& core, const std::vector<std::string>& ids,
                        std::vector<std::pair<nb::object, uint32_t>>* values,
                        bool errors_as_values) {
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

void BindObjects(nb::module_& m, nb::class_<PyCore>& core) {
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

  core
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
            EndBlockedOnError guard(c.core());
            return WaitInSlices(timeout_ms, interruptible,
                                [&](int64_t slice, bool last) -> std::optional<nb::list> {
                                  fleet::Result<std::vector<fleet::StoredObject>> r = [&] {
                                    nb::gil_scoped_release release;
                                    return c.core().Get(v, slice, !last);
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
            EndBlockedOnError guard(c.core());
            return WaitInSlices(
                timeout_ms, interruptible,
                [&](int64_t slice, bool last) -> std::optional<std::vector<bool>> {
                  fleet::Result<std::vector<bool>> r = [&] {
                    nb::gil_scoped_release release;
                    return c.core().Wait(v, num_returns, slice, fetch_local, !last);
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
           });
}

}  // namespace fleet_py
