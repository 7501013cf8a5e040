// PlacementGroupManager implementation; see placement_group_manager.h.
#include "gcs/placement_group_manager.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/ids.h"
#include "common/logging.h"

namespace fleet::gcs {

namespace {

using Amounts = std::map<std::string, int64_t>;  // 1/10000 units, as fleet-node

Amounts ToAmounts(const google::protobuf::Map<std::string, double>& m) {
  Amounts a;
  for (auto& [k, v] : m) a[k] = static_cast<int64_t>(std::llround(v * 10000));
  return a;
}

bool Fits(const Amounts& free, const Amounts& want) {
  for (auto& [k, v] : want) {
    if (v <= 0) continue;
    auto it = free.find(k);
    if (it == free.end() || it->second < v) return false;
  }
  return true;
}

void Take(Amounts& free, const Amounts& want) {
  for (auto& [k, v] : want) free[k] -= v;
}

int64_t FreeCpu(const Amounts& free) {
  auto it = free.find("CPU");
  return it == free.end() ? 0 : it->second;
}

std::string DescribeBundle(const rpc::Bundle& b) {
  std::string s = "{";
  for (auto& [k, v] : b.resources()) {
    if (s.size() > 1) s += ", ";
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%s: %g", k.c_str(), v);
    s += buf;
  }
  return s + "}";
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

namespace {
constexpr const char* kStrategyNames[] = {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"};
}  // namespace

Result<BundleStrategy> ParseBundleStrategy(const std::string& name) {
  for (int i = 0; i < 4; i++) {
    if (name == kStrategyNames[i]) return static_cast<BundleStrategy>(i);
  }
  return Status::Invalid("unknown placement strategy '" + name +
                         "': use PACK, SPREAD, STRICT_PACK or STRICT_SPREAD");
}

const char* BundleStrategyName(BundleStrategy s) { return kStrategyNames[static_cast<int>(s)]; }

Result<std::vector<NodeId>> PlanBundles(const std::vector<rpc::Bundle>& bundles,
                                        BundleStrategy strategy,
                                        const std::vector<const rpc::NodeInfo*>& nodes,
                                        const std::vector<NodeId>& fixed) {
  std::set<std::string> keys = {"CPU"};  // CPU: to order nodes by how free they are
  for (auto& b : bundles) {
    for (auto& [k, v] : b.resources()) keys.insert(k);
  }
  auto pick = [&](const google::protobuf::Map<std::string, double>& m) {
    Amounts a;
    for (auto& k : keys) {
      auto it = m.find(k);
      if (it != m.end()) a[k] = static_cast<int64_t>(std::llround(it->second * 10000));
    }
    return a;
  };
  std::vector<NodeId> ids;
  std::map<NodeId, Amounts> free, total;
  for (const auto* n : nodes) {
    NodeId id = NodeId::FromBinary(n->node_id());
    ids.push_back(id);
    free[id] = pick(n->available());
    total[id] = pick(n->total());
  }
  std::vector<NodeId> plan(bundles.size());
  std::set<NodeId> used;
  for (size_t i = 0; i < bundles.size(); i++) {
    if (i < fixed.size() && !fixed[i].IsNil()) {
      plan[i] = fixed[i];
      used.insert(fixed[i]);
    }
  }
  // A bundle no node could ever hold makes the group infeasible.
  for (size_t i = 0; i < bundles.size(); i++) {
    Amounts want = ToAmounts(bundles[i].resources());
    bool any = std::any_of(ids.begin(), ids.end(), [&](auto& id) { return Fits(total[id], want); });
    if (!any) {
      return Status::Invalid("bundle " + std::to_string(i) + " " + DescribeBundle(bundles[i]) +
                             " fits no node in the cluster (infeasible)");
    }
  }
  // Most free CPUs first: ties broken by id, so plans are deterministic.
  auto by_free = [&](std::vector<NodeId> v) {
    std::sort(v.begin(), v.end(), [&](auto& a, auto& b) {
      int64_t fa = FreeCpu(free[a]), fb = FreeCpu(free[b]);
      return fa != fb ? fa > fb : a < b;
    });
    return v;
  };
  if (strategy == BundleStrategy::kStrictPack) {
    Amounts sum;
    for (size_t i = 0; i < bundles.size(); i++) {
      if (plan[i].IsNil()) Take(sum, ToAmounts(bundles[i].resources()));
    }
    for (auto& [k, v] : sum) v = -v;
    std::vector<NodeId> candidates = used.empty() ? by_free(ids)
                                                  : std::vector<NodeId>(used.begin(), used.end());
    for (auto& id : candidates) {
      if (!Fits(free[id], sum)) continue;
      for (auto& p : plan) {
        if (p.IsNil()) p = id;
      }
      return plan;
    }
    return Status::NotFound("no node has the free resources of all the bundles together (STRICT_PACK)");
  }
  // The scarcest demands first (as Ray orders them: GPUs, then CPUs, then
  // the rest), so a small bundle cannot take the only room a big one has.
  std::vector<size_t> order(bundles.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  auto amount = [&](size_t i, const char* key) {
    auto it = bundles[i].resources().find(key);
    return it == bundles[i].resources().end() ? 0.0 : it->second;
  };
  auto total_amount = [&](size_t i) {
    double sum = 0;
    for (auto& [k, v] : bundles[i].resources()) sum += v;
    return sum;
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    double ga = amount(a, "GPU"), gb = amount(b, "GPU");
    if (ga != gb) return ga > gb;
    double ca = amount(a, "CPU"), cb = amount(b, "CPU");
    if (ca != cb) return ca > cb;
    return total_amount(a) > total_amount(b);
  });
  for (size_t i : order) {
    if (!plan[i].IsNil()) continue;
    Amounts want = ToAmounts(bundles[i].resources());
    NodeId pick;
    if (strategy == BundleStrategy::kPack) {
      // Onto a node the group already uses if it fits, else the most free.
      for (auto& id : by_free(std::vector<NodeId>(used.begin(), used.end()))) {
        if (Fits(free[id], want)) {
          pick = id;
          break;
        }
      }
    }
    if (pick.IsNil()) {
      for (auto& id : by_free(ids)) {
        if (!Fits(free[id], want)) continue;
        bool fresh = !used.count(id);
        if (strategy == BundleStrategy::kStrictSpread && !fresh) continue;
        if (strategy == BundleStrategy::kSpread && !fresh) {
          if (pick.IsNil()) pick = id;  // a used node only if no fresh one fits
          continue;
        }
        pick = id;
        break;
      }
    }
    if (pick.IsNil()) {
      return Status::NotFound(strategy == BundleStrategy::kStrictSpread
                                     ? "not enough nodes with free resources for one bundle each (STRICT_SPREAD)"
                                     : "bundle " + std::to_string(i) + " " + DescribeBundle(bundles[i]) +
                                           " does not fit the free resources of any node now");
    }
    plan[i] = pick;
    used.insert(pick);
    Take(free[pick], want);
  }
  return plan;
}

PlacementGroupManager::PlacementGroupManager(asio::io_context& io, NodesFn nodes, NodeConnFn node_conn)
    : io_(io), nodes_(std::move(nodes)), node_conn_(std::move(node_conn)) {}

void PlacementGroupManager::Create(const rpc::CreatePlacementGroup& req, uint32_t job_id,
                                   rpc::Envelope& reply) {
  const auto& info = req.info();
  auto* r = reply.mutable_create_placement_group_reply();
  if (auto strategy = ParseBundleStrategy(info.strategy()); !strategy.ok()) {
    r->set_error(strategy.status().message());
    return;
  }
  if (info.bundles_size() == 0) {
    r->set_error("a placement group needs at least one bundle");
    return;
  }
  if (!info.name().empty()) {
    for (auto& [id, g] : groups_) {
      if (g.info.name() == info.name() && g.info.namespace_() == info.namespace_() &&
          g.info.state() != rpc::PlacementGroupInfo::REMOVED) {
        r->set_error("a placement group named '" + info.name() + "' already exists");
        return;
      }
    }
  }
  Group g;
  g.info = info;
  g.info.set_state(rpc::PlacementGroupInfo::PENDING);
  if (g.info.job_id() == 0) g.info.set_job_id(job_id);  // else: the job of the task that made it
  g.info.set_create_time_ms(NowMs());
  for (int i = 0; i < g.info.bundles_size(); i++) {
    g.info.mutable_bundles(i)->set_index(i);
    g.info.mutable_bundles(i)->clear_node_id();
  }
  auto [it, added] = groups_.emplace(PlacementGroupId::FromBinary(info.pg_id()), std::move(g));
  if (!added) {
    r->set_error("placement group " + ToHex(info.pg_id()) + " exists already");
    return;
  }
  TrySchedule(it->second);
}

void PlacementGroupManager::TrySchedule(Group& g) {
  auto state = g.info.state();
  if (g.in_flight || state == rpc::PlacementGroupInfo::CREATED ||
      state == rpc::PlacementGroupInfo::REMOVED) {
    return;
  }
  std::vector<rpc::Bundle> bundles(g.info.bundles().begin(), g.info.bundles().end());
  std::vector<NodeId> fixed;
  for (auto& b : bundles) fixed.push_back(NodeId::FromBinary(b.node_id()));
  auto nodes = nodes_();
  auto strategy = ParseBundleStrategy(g.info.strategy());  // checked at Create
  auto plan = strategy.ok() ? PlanBundles(bundles, strategy.value(), nodes, fixed)
                            : Result<std::vector<NodeId>>(strategy.status());
  if (!plan.ok()) {
    g.info.set_pending_reason(plan.status().message());
    return;
  }
  Round round;
  for (size_t i = 0; i < bundles.size(); i++) {
    if (fixed[i].IsNil()) round.by_node[plan.value()[i]].push_back(static_cast<int>(i));
  }
  if (round.by_node.empty()) {  // every bundle still has its node
    g.info.set_state(rpc::PlacementGroupInfo::CREATED);
    AnswerWaiters(g);
    return;
  }
  g.in_flight = true;
  uint64_t n = ++g.round;
  PlacementGroupId pg_id = PlacementGroupId::FromBinary(g.info.pg_id());
  round.outstanding = static_cast<int>(round.by_node.size());
  rounds_[pg_id] = round;
  for (auto& [node_id, indexes] : rounds_[pg_id].by_node) {
    const rpc::NodeInfo* node = FindNode(nodes, node_id);
    Result<rpc::ConnectionPtr> conn = node ? node_conn_(*node) : Status::NotFound("node is gone");
    if (!conn.ok()) {
      std::string why = conn.status().message();
      asio::post(io_, [this, pg_id, n, why] { OnPrepared(pg_id, n, false, why); });
      continue;
    }
    rpc::Envelope req;
    auto* p = req.mutable_prepare_bundles();
    p->set_pg_id(pg_id.Binary());
    for (int i : indexes) *p->add_bundles() = bundles[i];
    NodeId nid = node_id;
    conn.value()->Call(req, [this, pg_id, n, nid](const Status& s, rpc::Envelope& reply) {
      const auto& r = reply.prepare_bundles_reply();
      bool ok = s.ok() && r.ok();
      auto rit = rounds_.find(pg_id);
      if (ok && rit != rounds_.end()) rit->second.prepared.push_back(nid);
      OnPrepared(pg_id, n, ok, s.ok() ? r.error() : s.message());
    });
  }
}

void PlacementGroupManager::OnPrepared(const PlacementGroupId& pg_id, uint64_t round_no, bool ok,
                                       const std::string& error) {
  auto rit = rounds_.find(pg_id);
  auto git = groups_.find(pg_id);
  if (rit == rounds_.end()) return;
  Round& round = rit->second;
  if (!ok) {
    round.failed = true;
    if (round.error.empty()) round.error = error;
  }
  if (--round.outstanding > 0) return;
  Round done = std::move(round);
  rounds_.erase(rit);
  bool current = git != groups_.end() && git->second.round == round_no &&
                 git->second.info.state() != rpc::PlacementGroupInfo::REMOVED;
  // A node that said yes and died since cannot commit: the round fails.
  auto alive = nodes_();
  for (auto& node_id : done.prepared) {
    if (!FindNode(alive, node_id)) {
      done.failed = true;
      if (done.error.empty()) done.error = "node " + node_id.Hex() + " died";
    }
  }
  if (!current || done.failed) {
    // All or nothing: undo this round's bundles (only them: the group's
    // other bundles on those nodes stay).
    std::map<NodeId, std::vector<int>> undo;
    for (auto& node_id : done.prepared) undo[node_id] = done.by_node[node_id];
    ReleaseOn(pg_id, undo);
    if (!current) {
      if (git != groups_.end()) git->second.in_flight = false;
      return;
    }
    Group& g = git->second;
    g.in_flight = false;
    g.info.set_pending_reason("a node refused its bundles: " + done.error + "; retrying");
    // Retry soon: the view that made the plan was stale.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
    timer->async_wait([this, timer, pg_id](const asio::error_code& ec) {
      if (ec) return;
      if (auto it = groups_.find(pg_id); it != groups_.end()) TrySchedule(it->second);
    });
    return;
  }
  Group& g = git->second;
  for (auto& [node_id, indexes] : done.by_node) {
    for (int i : indexes) g.info.mutable_bundles(i)->set_node_id(node_id.Binary());
  }
  // Commit everywhere; the group is CREATED once every node has made the
  // bundles' resources usable (so work sent right after wait() finds them).
  auto nodes = nodes_();
  auto remaining = std::make_shared<int>(0);
  auto failed_nodes = std::make_shared<std::set<NodeId>>();
  auto finish = [this, pg_id, round_no, failed_nodes] {
    auto it = groups_.find(pg_id);
    if (it == groups_.end()) return;
    Group& grp = it->second;
    grp.in_flight = false;
    if (grp.round != round_no || grp.info.state() == rpc::PlacementGroupInfo::REMOVED) return;
    // Every bundle must sit on a live node that committed it; those that do
    // not are placed again (the group waits as RESCHEDULING meanwhile).
    auto live = nodes_();
    bool complete = true;
    for (auto& b : *grp.info.mutable_bundles()) {
      NodeId on = NodeId::FromBinary(b.node_id());
      if (on.IsNil() || failed_nodes->count(on) || !FindNode(live, on)) {
        b.clear_node_id();
        complete = false;
      }
    }
    if (!complete) {
      grp.info.set_state(rpc::PlacementGroupInfo::RESCHEDULING);
      TrySchedule(grp);
      return;
    }
    grp.info.set_state(rpc::PlacementGroupInfo::CREATED);
    grp.info.clear_pending_reason();
    AnswerWaiters(grp);
  };
  for (auto& node_id : done.prepared) {
    const rpc::NodeInfo* node = FindNode(nodes, node_id);
    if (!node) {
      failed_nodes->insert(node_id);
      continue;
    }
    auto conn = node_conn_(*node);
    if (!conn.ok()) {
      failed_nodes->insert(node_id);
      continue;
    }
    rpc::Envelope req;
    req.mutable_commit_bundles()->set_pg_id(pg_id.Binary());
    ++*remaining;
    NodeId nid = node_id;
    conn.value()->Call(req, [remaining, finish, failed_nodes, nid](const Status& s, rpc::Envelope&) {
      if (!s.ok()) failed_nodes->insert(nid);
      if (--*remaining == 0) finish();
    });
  }
  if (*remaining == 0) finish();
}

void PlacementGroupManager::ReleaseOn(const PlacementGroupId& pg_id,
                                      const std::map<NodeId, std::vector<int>>& bundles) {
  auto nodes = nodes_();
  for (auto& [id, indexes] : bundles) {
    const rpc::NodeInfo* node = FindNode(nodes, id);
    if (!node) continue;
    if (auto conn = node_conn_(*node); conn.ok()) {
      rpc::Envelope req;
      req.mutable_release_bundles()->set_pg_id(pg_id.Binary());
      for (int i : indexes) req.mutable_release_bundles()->add_indexes(i);
      conn.value()->Send(req);
    }
  }
}

const rpc::NodeInfo* PlacementGroupManager::FindNode(const std::vector<const rpc::NodeInfo*>& nodes,
                                                     const NodeId& id) {
  for (const auto* n : nodes) {
    if (n->node_id() == id.Binary()) return n;
  }
  return nullptr;
}

void PlacementGroupManager::Remove(const PlacementGroupId& pg_id, rpc::Envelope& reply) {
  auto it = groups_.find(pg_id);
  auto* r = reply.mutable_remove_placement_group_reply();
  if (it == groups_.end() || it->second.info.state() == rpc::PlacementGroupInfo::REMOVED) return;
  r->set_found(true);
  Group& g = it->second;
  std::set<NodeId> on;
  for (auto& b : g.info.bundles()) {
    if (!b.node_id().empty()) on.insert(NodeId::FromBinary(b.node_id()));
  }
  std::map<NodeId, std::vector<int>> all;
  for (auto& node : on) all[node];  // no indexes: every bundle of the group there
  ReleaseOn(pg_id, all);
  g.round++;  // a round in flight releases what it prepared when it ends
  g.info.set_state(rpc::PlacementGroupInfo::REMOVED);
  AnswerWaiters(g);
  // Keep a bounded history of removed groups for placement_group_table().
  size_t removed = 0;
  for (auto& [id, grp] : groups_) removed += grp.info.state() == rpc::PlacementGroupInfo::REMOVED;
  if (removed > 1000) {
    for (auto i = groups_.begin(); i != groups_.end() && removed > 1000;) {
      if (i->second.info.state() == rpc::PlacementGroupInfo::REMOVED && !i->second.in_flight) {
        i = groups_.erase(i);
        removed--;
      } else {
        ++i;
      }
    }
  }
}

void PlacementGroupManager::Wait(const rpc::ConnectionPtr& conn, uint64_t request_id,
                                 const rpc::WaitPlacementGroup& req) {
  PlacementGroupId pg_id = PlacementGroupId::FromBinary(req.pg_id());
  auto it = groups_.find(pg_id);
  rpc::Envelope reply;
  auto* r = reply.mutable_wait_placement_group_reply();
  if (it == groups_.end()) {
    r->set_error("placement group " + ToHex(req.pg_id()) + " does not exist");
    conn->Reply(request_id, reply);
    return;
  }
  Group& g = it->second;
  if (g.info.state() != rpc::PlacementGroupInfo::PENDING &&
      g.info.state() != rpc::PlacementGroupInfo::RESCHEDULING) {
    r->set_ready(g.info.state() == rpc::PlacementGroupInfo::CREATED);
    if (g.info.state() == rpc::PlacementGroupInfo::REMOVED) r->set_error("it was removed");
    conn->Reply(request_id, reply);
    return;
  }
  if (req.timeout_ms() == 0) {
    conn->Reply(request_id, reply);
    return;
  }
  Waiter w{conn, request_id, nullptr, conn.get()};
  if (req.timeout_ms() > 0) {
    w.timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(req.timeout_ms()));
    const rpc::Connection* who = conn.get();
    w.timer->async_wait([this, pg_id, request_id, who](const asio::error_code& ec) {
      if (ec) return;
      auto git = groups_.find(pg_id);
      if (git == groups_.end()) return;
      auto& ws = git->second.waiters;
      for (auto wit = ws.begin(); wit != ws.end(); ++wit) {
        if (wit->request_id != request_id || wit->who != who) continue;
        if (auto c = wit->conn.lock()) {
          rpc::Envelope timeout;
          timeout.mutable_wait_placement_group_reply()->set_ready(false);
          c->Reply(request_id, timeout);
        }
        ws.erase(wit);
        break;
      }
    });
  }
  g.waiters.push_back(std::move(w));
}

void PlacementGroupManager::AnswerWaiters(Group& g) {
  auto waiters = std::move(g.waiters);
  g.waiters.clear();
  for (auto& w : waiters) {
    if (w.timer) w.timer->cancel();
    auto c = w.conn.lock();
    if (!c) continue;
    rpc::Envelope reply;
    auto* r = reply.mutable_wait_placement_group_reply();
    r->set_ready(g.info.state() == rpc::PlacementGroupInfo::CREATED);
    if (g.info.state() == rpc::PlacementGroupInfo::REMOVED) r->set_error("it was removed");
    c->Reply(w.request_id, reply);
  }
}

void PlacementGroupManager::Get(const rpc::GetPlacementGroups& req, rpc::Envelope& reply) const {
  auto* r = reply.mutable_get_placement_groups_reply();
  for (auto& [id, g] : groups_) {
    if (!req.pg_id().empty() && id.Binary() != req.pg_id()) continue;
    if (!req.name().empty() &&
        (g.info.name() != req.name() || g.info.namespace_() != req.namespace_() ||
         g.info.state() == rpc::PlacementGroupInfo::REMOVED)) {
      continue;
    }
    *r->add_groups() = g.info;
  }
}

void PlacementGroupManager::OnNodesChanged() {
  for (auto& [id, g] : groups_) TrySchedule(g);
}

void PlacementGroupManager::OnNodeDead(const NodeId& node_id) {
  for (auto& [id, g] : groups_) {
    if (g.info.state() == rpc::PlacementGroupInfo::REMOVED) continue;
    bool hit = false;
    for (auto& b : *g.info.mutable_bundles()) {
      if (b.node_id() == node_id.Binary()) {
        b.clear_node_id();
        hit = true;
      }
    }
    if (hit && g.info.state() == rpc::PlacementGroupInfo::CREATED) {
      g.info.set_state(rpc::PlacementGroupInfo::RESCHEDULING);
    }
  }
  OnNodesChanged();
}

void PlacementGroupManager::OnJobFinished(uint32_t job_id) {
  std::vector<PlacementGroupId> ids;
  for (auto& [id, g] : groups_) {
    if (g.info.job_id() == job_id && !g.info.detached() &&
        g.info.state() != rpc::PlacementGroupInfo::REMOVED) {
      ids.push_back(id);
    }
  }
  for (auto& id : ids) {
    rpc::Envelope ignored;
    Remove(id, ignored);
  }
}

}  // namespace fleet::gcs
