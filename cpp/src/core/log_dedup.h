// LogDeduplicator: folds identical worker output lines seen by a driver, as
// Ray's log deduplication does. The first occurrence of a line (keyed by its
// text and stream, never its prefix) prints at once and opens a window; copies
// within the window are counted, and when it ends one summary line
// "<prefix of last copy><line> [repeated Nx across cluster]" is emitted.
// Invariants: at most max_keys windows are open, kept in start order (time is
// clamped to be non-decreasing); a window with no copies ends silently; lines
// over max_line_bytes are never tracked. Pure state, no I/O, no clock of its
// own. Not thread-safe: the caller holds a lock around every call.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace fleet {

// Text to print now, per stream; each line already prefixed and ending "\n".
struct LogOutput {
  std::string out;
  std::string err;

  bool empty() const { return out.empty() && err.empty(); }
};

struct LogDedupOptions {
  bool enabled = true;  // false: every line passes through unchanged
  std::chrono::steady_clock::duration window = std::chrono::seconds(5);
  size_t max_keys = 10000;          // over this, the oldest windows end early
  size_t max_line_bytes = 8 * 1024;  // longer lines are never folded
};

class LogDeduplicator {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LogDeduplicator(LogDedupOptions options = {});

  // Takes one line (no trailing newline) printed by the process described by
  // `prefix`, e.g. "(pid=123, node=10.0.0.2) ". Returns, in order per stream,
  // the summaries of windows that ended by `now`, then the line itself if it
  // is not a copy inside an open window. An earlier `now` than a previous
  // call's is treated as that call's time.
  LogOutput Add(const std::string& prefix, const std::string& line, bool is_stderr,
                Clock::time_point now);

  // Ends every window that ended by `now` (start + window <= now) and returns
  // their summaries. Call it on a timer; see NextDeadline().
  LogOutput Flush(Clock::time_point now);

  // Ends every open window and returns all pending summaries (for shutdown).
  LogOutput FlushAll();

  // When the oldest open window ends, or nullopt if none is open.
  std::optional<Clock::time_point> NextDeadline() const;

  // Number of open windows (lines being tracked). Never exceeds max_keys.
  size_t tracked_keys() const { return windows_.size(); }

 private:
  struct Window {
    std::string line;
    bool is_stderr = false;
    Clock::time_point started;
    size_t repeats = 0;
    std::string last_prefix;  // prefix of the latest copy
  };
  // Views into Window::line; list nodes never move, so the views stay valid.
  struct Key {
    std::string_view line;
    bool is_stderr = false;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const noexcept;
  };

  // Removes the oldest window, appending its summary (if any) to `out`.
  void EndOldest(LogOutput& out);

  const LogDedupOptions options_;
  std::list<Window> windows_;  // start order: oldest at the front
  std::unordered_map<Key, std::list<Window>::iterator, KeyHash> index_;
  Clock::time_point last_now_{};
};

}  // namespace fleet
