// Typed ids: NodeId, WorkerId, TaskId, ObjectId, ActorId, PlacementGroupId
// (binary, as on the wire) and JobId (a number).
//
// Each kind is its own type, so a NodeId cannot be passed where an ActorId
// is expected, while the bytes stay the ones protobuf `bytes` fields carry
// (Binary() out, FromBinary() in: no conversion, no validation; a default
// id is nil and empty). Ordered and hashed as bytes, so they key std::map
// and std::unordered_map. Immutable values; thread-compatible.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "common/ids.h"

namespace fleet {

template <class Tag>
class TypedId {
 public:
  TypedId() = default;
  static TypedId FromBinary(std::string binary) { return TypedId(std::move(binary)); }
  static TypedId Nil() { return TypedId(); }

  const std::string& Binary() const { return binary_; }
  std::string Hex() const { return ToHex(binary_); }
  bool IsNil() const { return binary_.empty(); }

  friend bool operator==(const TypedId&, const TypedId&) = default;
  friend std::strong_ordering operator<=>(const TypedId& a, const TypedId& b) {
    return a.binary_ <=> b.binary_;
  }

 private:
  explicit TypedId(std::string binary) : binary_(std::move(binary)) {}
  std::string binary_;
};

using NodeId = TypedId<struct NodeIdTag>;
using WorkerId = TypedId<struct WorkerIdTag>;
using TaskId = TypedId<struct TaskIdTag>;
using ObjectId = TypedId<struct ObjectIdTag>;
using ActorId = TypedId<struct ActorIdTag>;
using PlacementGroupId = TypedId<struct PlacementGroupIdTag>;

// A job's number, from fleet-gcs (0: none, e.g. the CLI).
enum class JobId : uint32_t {};
inline uint32_t JobNumber(JobId id) { return static_cast<uint32_t>(id); }

}  // namespace fleet

template <class Tag>
struct std::hash<fleet::TypedId<Tag>> {
  size_t operator()(const fleet::TypedId<Tag>& id) const noexcept {
    return std::hash<std::string>()(id.Binary());
  }
};
