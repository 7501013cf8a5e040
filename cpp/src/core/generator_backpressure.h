// GeneratorBackpressure: the caller's side of streaming-generator
// backpressure (Ray's _generator_backpressure_num_objects). For each
// generator whose executor asked for it (GeneratorItem.wants_consumed) it
// remembers the connection the items arrive on and how many items the
// reader has taken, and tells the executor (GeneratorConsumed) as the reader
// takes items; a retried attempt (a new connection) is told the count at its
// first item. A reader that stops reading (end of stream, or the
// ObjectRefGenerator was dropped) releases the executor for good.
//
// Thread-safe: one mutex, never held while sending.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/thread_annotations.h"
#include "rpc/connection.h"

namespace fleet {

class GeneratorBackpressure {
 public:
  // An item of `task_id` that wants_consumed arrived on `conn` (io thread).
  void OnItem(const rpc::ConnectionPtr& conn, const std::string& task_id) EXCLUDES(mu_);
  // The reader has taken `consumed` items of `task_id` in all. No-op for a
  // generator without backpressure (O(1): one hash lookup).
  void OnConsumed(const std::string& task_id, int64_t consumed) EXCLUDES(mu_);
  // The reader is done with `task_id`: its executor never waits again.
  void Forget(const std::string& task_id) EXCLUDES(mu_);

  // Sent to an executor whose reader is gone: larger than any item count.
  static constexpr int64_t kReleased = INT64_MAX / 2;

 private:
  struct Stream {
    std::weak_ptr<rpc::Connection> conn;
    int64_t consumed = 0;
  };
  static void Send(const rpc::ConnectionPtr& conn, const std::string& task_id, int64_t consumed);

  Mutex mu_;
  std::unordered_map<std::string, Stream> streams_ GUARDED_BY(mu_);
  std::deque<std::string> order_ GUARDED_BY(mu_);  // oldest first: bounds streams_
};

}  // namespace fleet
