// Role names and refusals for Dispatcher; see dispatcher.h.
#include "rpc/dispatcher.h"

#include <array>

namespace fleet::rpc {

namespace {
// Wire names (Hello.role), indexed by PeerRole.
constexpr std::array<std::string_view, static_cast<size_t>(PeerRole::kCount)> kRoleNames = {
    "unknown peer", "driver", "worker", "node", "gcs", "cli", "submitter", "peer"};
}  // namespace

PeerRole ParseRole(std::string_view role) {
  for (size_t i = 1; i < kRoleNames.size(); ++i) {
    if (kRoleNames[i] == role) return static_cast<PeerRole>(i);
  }
  return PeerRole::kUnknown;
}

std::string_view RoleName(PeerRole role) {
  size_t i = static_cast<size_t>(role);
  return i < kRoleNames.size() ? kRoleNames[i] : kRoleNames[0];
}

std::string BodyName(Envelope::BodyCase body) {
  if (body == Envelope::BODY_NOT_SET) return "empty";
  const auto* field = Envelope::descriptor()->FindFieldByNumber(static_cast<int>(body));
  return field ? field->message_type()->name() : "unknown (field " + std::to_string(body) + ")";
}

void Refuse(Connection& conn, const Envelope& msg, const Status& why) {
  if (msg.request_id() == 0 || msg.is_reply()) return;
  Envelope reply;
  reply.mutable_error()->set_code(static_cast<int>(why.code()));
  reply.mutable_error()->set_message(why.message());
  conn.Reply(msg.request_id(), reply);
}

}  // namespace fleet::rpc
