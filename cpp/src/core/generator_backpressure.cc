// GeneratorBackpressure: see generator_backpressure.h.
#include "core/generator_backpressure.h"

#include "fleet.pb.h"

namespace fleet {

namespace {
// Streams remembered at most (the oldest ended long ago): bounds the memory
// of readers that were dropped while their generator still ran.
constexpr size_t kMaxStreams = 4096;
}  // namespace

void GeneratorBackpressure::Send(const rpc::ConnectionPtr& conn, const std::string& task_id,
                                 int64_t consumed) {
  rpc::Envelope m;
  m.mutable_generator_consumed()->set_task_id(task_id);
  m.mutable_generator_consumed()->set_consumed(consumed);
  conn->Send(m);
}

void GeneratorBackpressure::OnItem(const rpc::ConnectionPtr& conn, const std::string& task_id) {
  int64_t tell = 0;
  {
    MutexLock lk(&mu_);
    auto [it, added] = streams_.try_emplace(task_id);
    if (added) {
      order_.push_back(task_id);
      if (order_.size() > kMaxStreams) {
        streams_.erase(order_.front());
        order_.pop_front();
      }
    }
    if (it->second.conn.lock() == conn) return;
    // First item of this attempt: it must learn what the reader took already.
    it->second.conn = conn;
    tell = it->second.consumed;
  }
  if (tell > 0) Send(conn, task_id, tell);
}

void GeneratorBackpressure::OnConsumed(const std::string& task_id, int64_t consumed) {
  rpc::ConnectionPtr conn;
  {
    MutexLock lk(&mu_);
    if (streams_.empty()) return;
    auto it = streams_.find(task_id);
    if (it == streams_.end() || consumed <= it->second.consumed) return;
    it->second.consumed = consumed;
    conn = it->second.conn.lock();
  }
  if (conn) Send(conn, task_id, consumed);
}

void GeneratorBackpressure::Forget(const std::string& task_id) {
  // Kept (released) rather than erased: items still on their way must not
  // make the executor wait again (OnItem answers them with kReleased).
  OnConsumed(task_id, kReleased);
}

}  // namespace fleet
