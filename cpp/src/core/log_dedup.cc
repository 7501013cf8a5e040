// LogDeduplicator: see log_dedup.h. Every operation is O(1) amortized plus
// O(k) for the k windows it ends.
#include "core/log_dedup.h"

#include <functional>
#include <iterator>
#include <utility>

namespace fleet {

namespace {

void AppendLine(LogOutput& out, bool is_stderr, std::string_view prefix, std::string_view line,
                std::string_view suffix = {}) {
  std::string& s = is_stderr ? out.err : out.out;
  s.append(prefix).append(line).append(suffix).push_back('\n');
}

}  // namespace

size_t LogDeduplicator::KeyHash::operator()(const Key& k) const noexcept {
  return std::hash<std::string_view>{}(k.line) ^ static_cast<size_t>(k.is_stderr);
}

LogDeduplicator::LogDeduplicator(LogDedupOptions options) : options_(std::move(options)) {}

LogOutput LogDeduplicator::Add(const std::string& prefix, const std::string& line,
                               bool is_stderr, Clock::time_point now) {
  if (!options_.enabled) {
    LogOutput out;
    AppendLine(out, is_stderr, prefix, line);
    return out;
  }
  LogOutput out = Flush(now);
  if (line.size() <= options_.max_line_bytes) {
    auto it = index_.find(Key{line, is_stderr});
    if (it != index_.end()) {  // open window: Flush ended the expired ones
      ++it->second->repeats;
      it->second->last_prefix = prefix;
      return out;
    }
    windows_.push_back(Window{line, is_stderr, last_now_, 0, {}});
    auto w = std::prev(windows_.end());
    index_.emplace(Key{w->line, is_stderr}, w);
    while (windows_.size() > options_.max_keys) EndOldest(out);
  }
  AppendLine(out, is_stderr, prefix, line);
  return out;
}

LogOutput LogDeduplicator::Flush(Clock::time_point now) {
  if (now > last_now_) last_now_ = now;
  LogOutput out;
  while (!windows_.empty() && windows_.front().started + options_.window <= last_now_) {
    EndOldest(out);
  }
  return out;
}

LogOutput LogDeduplicator::FlushAll() {
  LogOutput out;
  while (!windows_.empty()) EndOldest(out);
  return out;
}

std::optional<LogDeduplicator::Clock::time_point> LogDeduplicator::NextDeadline() const {
  if (windows_.empty()) return std::nullopt;
  return windows_.front().started + options_.window;
}

void LogDeduplicator::EndOldest(LogOutput& out) {
  Window& w = windows_.front();
  if (w.repeats > 0) {
    AppendLine(out, w.is_stderr, w.last_prefix, w.line,
               " [repeated " + std::to_string(w.repeats) + "x across cluster]");
  }
  index_.erase(Key{w.line, w.is_stderr});
  windows_.pop_front();
}

}  // namespace fleet
