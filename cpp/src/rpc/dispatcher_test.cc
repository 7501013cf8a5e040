// Tests of Dispatcher (no sockets: handlers and refusals are plain calls)
// and of Status's names and helper macros.
#include "rpc/dispatcher.h"

#include <gtest/gtest.h>

namespace fleet::rpc {
namespace {

struct FakeSession {
  std::vector<std::string> seen;
};

class Receiver {
 public:
  Receiver() {
    FLEET_RPC_HANDLE(d_, KvGet, kv_get, HandleKvGet);
    FLEET_RPC_HANDLE(d_, RegisterNode, register_node, HandleRegisterNode, RoleBit(PeerRole::kNode));
  }
  Dispatcher<FakeSession>& d() { return d_; }

 private:
  void HandleKvGet(FakeSession& s, uint64_t rid, KvGet& m) {
    s.seen.push_back("kv_get " + m.key() + " #" + std::to_string(rid));
  }
  void HandleRegisterNode(FakeSession& s, uint64_t, RegisterNode& m) {
    s.seen.push_back("register " + m.node().node_ip());
  }
  Dispatcher<FakeSession> d_{"test-receiver"};
};

TEST(DispatcherTest, RunsTheHandlerOfTheBodyWithTheTypedMessage) {
  Receiver r;
  FakeSession s;
  Envelope m;
  m.set_request_id(7);
  m.mutable_kv_get()->set_key("fn:1");
  ASSERT_TRUE(r.d().Dispatch(s, PeerRole::kDriver, m).ok());
  Envelope n;
  n.mutable_register_node()->mutable_node()->set_node_ip("10.0.0.2");
  ASSERT_TRUE(r.d().Dispatch(s, PeerRole::kNode, n).ok());
  EXPECT_EQ(s.seen, (std::vector<std::string>{"kv_get fn:1 #7", "register 10.0.0.2"}));
  EXPECT_EQ(r.d().refused(), 0u);
}

TEST(DispatcherTest, RefusesABodyOutsideTheTableAndCountsIt) {
  Receiver r;
  FakeSession s;
  Envelope m;
  m.mutable_push_task();
  Status st = r.d().Dispatch(s, PeerRole::kWorker, m);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("test-receiver refused a PushTask message from a worker"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("does not handle"), std::string::npos);
  Envelope empty;
  EXPECT_FALSE(r.d().Dispatch(s, PeerRole::kDriver, empty).ok());
  EXPECT_EQ(r.d().refused(), 2u);
  EXPECT_TRUE(s.seen.empty());
}

TEST(DispatcherTest, RefusesABodyFromARoleTheEntryDoesNotAccept) {
  Receiver r;
  FakeSession s;
  Envelope m;
  m.mutable_register_node();
  Status st = r.d().Dispatch(s, PeerRole::kDriver, m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("RegisterNode message from a driver"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("only from other roles"), std::string::npos);
  EXPECT_EQ(r.d().refused(), 1u);
  EXPECT_TRUE(s.seen.empty());
  EXPECT_TRUE(r.d().Handles(Envelope::kRegisterNode));
  EXPECT_FALSE(r.d().Handles(Envelope::kPushTask));
}

TEST(DispatcherTest, RoleNamesRoundTrip) {
  for (int i = 1; i < static_cast<int>(PeerRole::kCount); ++i) {
    auto r = static_cast<PeerRole>(i);
    EXPECT_EQ(ParseRole(RoleName(r)), r);
  }
  EXPECT_EQ(ParseRole("intruder"), PeerRole::kUnknown);
  EXPECT_EQ(BodyName(Envelope::kPushTaskReply), "PushTaskReply");
}

TEST(StatusTest, EveryCodeHasAName) {
  EXPECT_EQ(Status::ObjectStoreFull("x").ToString(), "ObjectStoreFull: x");
  EXPECT_EQ(Status::ObjectLost("y").ToString(), "ObjectLost: y");
  EXPECT_EQ(Status::Infeasible("z").ToString(), "Infeasible: z");
  EXPECT_EQ(Status::OK().ToString(), "OK");
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "Unknown(99)");
}

Status Step(bool fail) { return fail ? Status::IoError("disk") : Status::OK(); }
Result<int> Value(bool fail) {
  if (fail) return Status::NotFound("no value");
  return 41;
}
Status Chain(bool fail_step, bool fail_value, int* out) {
  FLEET_RETURN_IF_ERROR(Step(fail_step));
  FLEET_ASSIGN_OR_RETURN(int v, Value(fail_value));
  *out = v + 1;
  return Status::OK();
}

TEST(StatusTest, ReturnIfErrorAndAssignOrReturn) {
  int out = 0;
  EXPECT_EQ(Chain(true, false, &out).code(), StatusCode::kIoError);
  EXPECT_EQ(Chain(false, true, &out).code(), StatusCode::kNotFound);
  EXPECT_EQ(out, 0);
  EXPECT_TRUE(Chain(false, false, &out).ok());
  EXPECT_EQ(out, 42);
}

}  // namespace
}  // namespace fleet::rpc
