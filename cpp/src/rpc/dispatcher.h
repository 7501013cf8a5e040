// Dispatcher: a receiving role's table of message handlers.
//
// Each receiver (fleet-gcs, fleet-node, a driver or worker, a store client)
// builds one table at start: one handler per Envelope body it accepts, and
// the sender roles it accepts it from. Dispatch() runs the handler for a
// message; a body outside the table, or from a role the entry does not
// accept, is refused: counted, logged once per (body, role), and returned as
// an InvalidArgument Status naming the message, the receiver and the sender,
// which the caller sends back to a request (see Refuse()).
// Adding an RPC is one schema entry plus one handler registered here
// (FLEET_RPC_HANDLE), not a case in a switch.
// Threading: build the table before serving; Dispatch() runs on the io
// thread only. refused() may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "fleet.pb.h"
#include "rpc/connection.h"

namespace fleet::rpc {

// Who is on the other end of a connection. Servers learn it from the peer's
// Hello (role string on the wire, parsed once); clients know whom they
// connected to.
enum class PeerRole : uint8_t {
  kUnknown = 0,
  kDriver,
  kWorker,
  kNode,       // another fleet-node
  kGcs,        // fleet-gcs
  kCli,        // the `fleet` command line
  kSubmitter,  // a core worker's task-push connection to an actor or leased worker
  kPeer,       // a core worker fetching objects or registering borrows
  kCount,
};

PeerRole ParseRole(std::string_view role);
std::string_view RoleName(PeerRole role);

using RoleMask = uint32_t;
constexpr RoleMask RoleBit(PeerRole r) { return RoleMask{1} << static_cast<int>(r); }
constexpr RoleMask kAnyRole = ~RoleMask{0};
// The core library's processes, as seen from a daemon.
constexpr RoleMask kClientRoles = RoleBit(PeerRole::kDriver) | RoleBit(PeerRole::kWorker) |
                                  RoleBit(PeerRole::kCli);

// The message type of a body case ("PushTask"), for errors.
std::string BodyName(Envelope::BodyCase body);

template <class Session>
class Dispatcher {
 public:
  using Handler = std::function<void(Session&, Envelope&)>;

  // `receiver` names this side in refusals ("fleet-gcs").
  explicit Dispatcher(std::string receiver) : receiver_(std::move(receiver)) {}

  // Registers the handler of `body`, accepted from the roles in `from`.
  // Each body once (a second registration replaces the first: a bug, so it
  // aborts in debug builds).
  void Add(Envelope::BodyCase body, Handler handler, RoleMask from = kAnyRole) {
    size_t i = static_cast<size_t>(body);
    if (i >= table_.size()) table_.resize(i + 1);
    FLEET_CHECK(!table_[i].handler) << receiver_ << ": two handlers for " << BodyName(body);
    table_[i] = Entry{std::move(handler), from};
  }

  bool Handles(Envelope::BodyCase body) const {
    size_t i = static_cast<size_t>(body);
    return i < table_.size() && table_[i].handler;
  }

  // Runs the handler of `msg`'s body; OK if one ran. Otherwise the message
  // is refused (see the file comment) and nothing else happens.
  Status Dispatch(Session& session, PeerRole from, Envelope& msg) {
    size_t i = static_cast<size_t>(msg.body_case());
    if (i < table_.size()) {
      const Entry& e = table_[i];
      if (e.handler && (e.from & RoleBit(from))) {
        e.handler(session, msg);
        return Status::OK();
      }
    }
    return Refusal(from, msg.body_case(), i < table_.size() && table_[i].handler);
  }

  // Messages refused so far.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    Handler handler;
    RoleMask from = 0;
  };

  Status Refusal(PeerRole from, Envelope::BodyCase body, bool wrong_role) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    std::string why = receiver_ + " refused a " + BodyName(body) + " message from a " +
                      std::string(RoleName(from)) +
                      (wrong_role ? ": it accepts that message only from other roles"
                                  : ": it does not handle that message");
    if (logged_.emplace(static_cast<int>(body), from).second) {
      FLEET_LOG(WARNING) << why;
    }
    return Status::Invalid(std::move(why));
  }

  const std::string receiver_;
  std::vector<Entry> table_;  // by body case
  std::atomic<uint64_t> refused_{0};
  std::set<std::pair<int, PeerRole>> logged_;
};

// Answers a refused request with an Error carrying `why` (nothing for a push).
void Refuse(Connection& conn, const Envelope& msg, const Status& why);

}  // namespace fleet::rpc

// Registers `handler` (a member of the enclosing class, called as
// handler(session, request_id, body&)) for messages whose body is `Type`
// (field `field` of Envelope), from the roles in the optional mask:
//   FLEET_RPC_HANDLE(dispatcher_, PushTask, push_task, HandlePushTask);
#define FLEET_RPC_HANDLE(dispatcher, Type, field, handler, ...)                        \
  (dispatcher).Add(                                                                     \
      ::fleet::rpc::Envelope::k##Type,                                                  \
      [this](auto& session, ::fleet::rpc::Envelope& m) {                                \
        this->handler(session, m.request_id(), *m.mutable_##field());                   \
      } __VA_OPT__(, ) __VA_ARGS__)
