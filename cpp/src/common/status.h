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

inline std::string Status::ToString() const {
  static const char* kNames[] = {"OK",         "InvalidArgument", "NotFound",
                                 "TimedOut",   "IoError",         "Unauthenticated",
                                 "Disconnected", "AlreadyExists", "Internal",
                                 "Infeasible"};
  int c = static_cast<int>(code_);
  std::string name = (c >= 0 && c < 10) ? kNames[c] : "Unknown";
  return ok() ? name : name + ": " + message_;
}

}  // namespace fleet
