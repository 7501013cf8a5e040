// Binary ids: NodeID, WorkerID (16 random bytes), TaskID (16 bytes), ObjectID
// (TaskID + 4-byte index: returns count from 1, puts use a fresh TaskID-shaped
// id with index 0). Ids are plain std::string of fixed size so they hash and
// travel in protobuf `bytes` without conversion. Thread-safe (no shared state
// except the atomic counter in IdGenerator).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace fleet {

constexpr size_t kUniqueIdSize = 16;
constexpr size_t kObjectIdSize = 20;

// 16 bytes from the kernel's random source.
std::string RandomId();
std::string ToHex(const std::string& bin);
std::string FromHex(const std::string& hex);  // empty on bad input

// Object id of the index-th return (1-based) of a task.
std::string ReturnObjectId(const std::string& task_id, uint32_t index);
// Item `index` (from 0) of a streaming generator task: return index + 2
// (index 1 is the task's own return, completed when the stream ends).
inline std::string GeneratorItemId(const std::string& task_id, uint32_t index) {
  return ReturnObjectId(task_id, index + 2);
}

// Makes task ids unique within a process: [job:4][process prefix:6][counter:6].
class IdGenerator {
 public:
  IdGenerator();
  std::string NextTaskId(uint32_t job_id);
  // A put's object id: a fresh task-shaped id with index 0.
  std::string NextPutId(uint32_t job_id) { return NextTaskId(job_id) + std::string(4, '\0'); }

 private:
  std::string prefix_;
  std::atomic<uint64_t> counter_{0};
};

}  // namespace fleet
