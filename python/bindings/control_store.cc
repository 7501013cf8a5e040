// fleet._core, the control store: key-value store, nodes, placement groups,
// node stats, and probing a cluster before joining it.
#include "binding_util.h"

namespace fleet_py {

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
    d["labels"] = std::map<std::string, std::string>(n.labels().begin(), n.labels().end());
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

void BindControlStore(nb::module_& m, nb::class_<PyCore>& core) {
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

  core
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

}  // namespace fleet_py
