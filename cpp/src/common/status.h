// Status and Result<T>: how errors cross component boundaries in fleet.
//
// A Status is OK or a code plus a message a user can act on. Result<T> holds a
// value or a non-OK Status. Both are cheap to move and must be checked
// ([[nodiscard]]). Not thread-safe per instance; immutable once built.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace fleet {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kTimedOut = 3,
  kIoError = 4,
  kUnauthenticated = 5,
  kDisconnected = 6,
  kAlreadyExists = 7,
  kInternal = 8,
  kInfeasible = 9,
  kObjectStoreFull = 10,  // no room even after spilling
  kObjectLost = 11,       // e.g. its spill file is gone
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return {}; }
  static Status Invalid(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status TimedOut(std::string m) { return {StatusCode::kTimedOut, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
  static Status Disconnected(std::string m) { return {StatusCode::kDisconnected, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Infeasible(std::string m) { return {StatusCode::kInfeasible, std::move(m)}; }
  static Status ObjectStoreFull(std::string m) { return {StatusCode::kObjectStoreFull, std::move(m)}; }
  static Status ObjectLost(std::string m) { return {StatusCode::kObjectLost, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}   // NOLINT: must be non-OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }

 private:
  std::variant<T, Status> v_;
};

// The code's name ("ObjectStoreFull"); "Unknown(N)" for a value outside the enum.
inline std::string StatusCodeName(StatusCode code) {
  static const char* kNames[] = {"OK",           "InvalidArgument", "NotFound",
                                 "TimedOut",     "IoError",         "Unauthenticated",
                                 "Disconnected", "AlreadyExists",   "Internal",
                                 "Infeasible",   "ObjectStoreFull", "ObjectLost"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(StatusCode::kObjectLost) + 1,
                "a name for every StatusCode");
  int c = static_cast<int>(code);
  constexpr int kCount = sizeof(kNames) / sizeof(kNames[0]);
  return (c >= 0 && c < kCount) ? kNames[c] : "Unknown(" + std::to_string(c) + ")";
}

inline std::string Status::ToString() const {
  std::string name = StatusCodeName(code_);
  return ok() ? name : name + ": " + message_;
}

}  // namespace fleet

// Returns the Status of `expr` from the enclosing function if it is not OK.
// `expr` is a Status or a Result<T> (whose value is then discarded).
#define FLEET_RETURN_IF_ERROR(expr)                               \
  do {                                                            \
    if (auto _fleet_st = ::fleet::internal::StatusOf(expr); !_fleet_st.ok()) return _fleet_st; \
  } while (0)

// Declares `lhs` from the value of Result<T> `expr`, or returns its Status.
//   FLEET_ASSIGN_OR_RETURN(auto conn, Connect(...));
#define FLEET_ASSIGN_OR_RETURN(lhs, expr) \
  FLEET_ASSIGN_OR_RETURN_IMPL(FLEET_STATUS_CONCAT(_fleet_r, __LINE__), lhs, expr)
#define FLEET_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
#define FLEET_STATUS_CONCAT_INNER(a, b) a##b
#define FLEET_STATUS_CONCAT(a, b) FLEET_STATUS_CONCAT_INNER(a, b)

namespace fleet::internal {
inline Status StatusOf(Status s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.status();
}

}  // namespace fleet::internal
