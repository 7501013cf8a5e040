// ObjectTransfer: moving objects between nodes, and the connections that
// takes (to other nodes, and to the owners of objects held here).
//
// A reader asks its own fleet-node for an object and names the node holding
// the primary copy. If the object is not here, this node pulls it (chunks
// planned by PullWindow, transfer_plan.h) into its own store; every reader
// that wants it meanwhile waits for the same pull, and the copy stays
// (evictable, never spilled), so a large argument moves once per node. A
// node serving a pull remembers who copied what (CopyTracker), so the
// owner's free reaches the copies. A copy's owner is told where it is.
// Invariant: at most one pull per object at a time; a pulled copy stays
// pinned (by the transfer client) once per waiting reader until Unhold.
// Single-threaded: io thread only.
#pragma once

#include <asio/io_context.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fleet.pb.h"
#include "node/client_session.h"
#include "node/scheduling/cluster_view.h"
#include "node/transfer_plan.h"
#include "rpc/connection.h"
#include "store/object_store.h"

namespace fleet::node {

struct TransferOptions {
  std::string node_id;  // binary, this node's
  std::string token;    // the cluster's
  uint64_t chunk_bytes = 1 << 20;
  int chunks_in_flight = 16;
};

class ObjectTransfer {
 public:
  // Errors per id ("" when local now) and the ids pulled for this caller.
  using EnsureDone = std::function<void(std::vector<std::string> errors, std::vector<std::string> held)>;
  // `cluster` (the other alive nodes) must outlive this object.
  ObjectTransfer(asio::io_context& io, TransferOptions options, store::ObjectStore& store,
                 store::ClientId transfer_client, const scheduling::ClusterView& cluster);
  ~ObjectTransfer();

  // Makes the objects local (pulling those whose primary copy is on another
  // node: `sources`, parallel, may be shorter), then calls `done`. The ids in
  // `held` stay pinned until the caller passes them to Unhold, once it has
  // pinned them itself.
  void EnsureLocal(const std::vector<std::string>& ids, const std::vector<std::string>& sources,
                   EnsureDone done);
  void Unhold(const std::vector<std::string>& held);
  // Frees the objects here, and forwards the free to the node holding each
  // primary copy and to the nodes that copied one from here.
  void Free(const rpc::StoreFree& f);
  // A connection to the process that owns objects here (cached); its close
  // frees them. Null (and the objects freed) if it refuses connections.
  rpc::ConnectionPtr OwnerConnection(const std::string& owner);
  // Another node pulls a chunk of an object from here.
  void HandlePullObject(ClientSession& s, uint64_t request_id, const rpc::PullObject& m);
  // The cluster view changed: connections to nodes that left close (pulls
  // from them fail).
  void OnClusterChanged();
  // Periodic: forgets copies of objects no longer here.
  void Tick();
  void Stop() { stopped_ = true; }

 private:
  struct Pull;
  Result<rpc::ConnectionPtr> PeerNode(const std::string& node_id);
  // What this node says when it connects to another node or to an owner.
  rpc::Hello NodeHello() const;
  void StartPull(const std::string& id, const std::string& source);
  void PullNextChunks(const std::shared_ptr<Pull>& pull);
  void FinishPull(const std::shared_ptr<Pull>& pull, const std::string& error);

  asio::io_context& io_;
  const TransferOptions options_;
  store::ObjectStore& store_;
  const store::ClientId transfer_client_;  // pins while serving and after pulls
  const scheduling::ClusterView& cluster_;
  bool stopped_ = false;
  std::map<std::string, rpc::ConnectionPtr> peer_nodes_;   // by node id
  std::map<std::string, std::shared_ptr<Pull>> pulls_;     // by object id
  CopyTracker copies_;
  std::map<std::string, rpc::ConnectionPtr> owner_conns_;  // remote owners of objects here
};

}  // namespace fleet::node
