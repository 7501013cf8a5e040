// StoreService: the object store requests of this node's drivers and
// workers (StoreInfo ... StoreList), answered from the node's ObjectStore.
// Each connection is one store client (its pins go when it closes); an
// object whose primary copy is on another node is pulled first
// (ObjectTransfer), and a free reaches the copies on other nodes.
// Single-threaded: io thread only.
#pragma once

#include "fleet.pb.h"
#include "node/client_session.h"
#include "node/object_transfer.h"
#include "store/object_store.h"

namespace fleet::node {

class StoreService {
 public:
  StoreService(store::ObjectStore& store, ObjectTransfer& transfer, SessionTable& sessions)
      : store_(store), transfer_(transfer), sessions_(sessions) {}

  void HandleStoreInfo(ClientSession& s, uint64_t request_id, const rpc::StoreInfo& m);
  void HandleStoreCreate(ClientSession& s, uint64_t request_id, const rpc::StoreCreate& m);
  void HandleStoreSeal(ClientSession& s, uint64_t request_id, const rpc::StoreSeal& m);
  void HandleStoreGet(ClientSession& s, uint64_t request_id, const rpc::StoreGet& m);
  void HandleStoreRelease(ClientSession& s, uint64_t request_id, const rpc::StoreRelease& m);
  void HandleStoreFree(ClientSession& s, uint64_t request_id, const rpc::StoreFree& m);
  void HandleStoreList(ClientSession& s, uint64_t request_id, const rpc::StoreList& m);

 private:
  store::ObjectStore& store_;
  ObjectTransfer& transfer_;
  SessionTable& sessions_;
};

}  // namespace fleet::node
