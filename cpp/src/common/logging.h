// Minimal leveled logging to stderr (which daemons redirect to their log file).
//
// FLEET_LOG(INFO) << "text"; builds the line in a local stream and writes it with
// one write(2), so lines from several threads never interleave. FLEET_CHECK
// crashes loudly with a message: for "can never happen" only, never for input.
// We keep this instead of spdlog to hold compile times down on 2 cores.
#pragma once

#include <sstream>
#include <string>

namespace fleet {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

// Set once at process start (before threads). Default kInfo.
void SetLogLevel(LogLevel level);
void SetLogComponent(const std::string& name);
bool LogEnabled(LogLevel level);

class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();  // writes the line; aborts for kFatal
  std::ostream& stream() { return os_; }

 private:
  LogLevel level_;
  std::ostringstream os_;
};

}  // namespace fleet

#define FLEET_LOG_DEBUG ::fleet::LogLevel::kDebug
#define FLEET_LOG_INFO ::fleet::LogLevel::kInfo
#define FLEET_LOG_WARNING ::fleet::LogLevel::kWarning
#define FLEET_LOG_ERROR ::fleet::LogLevel::kError
#define FLEET_LOG_FATAL ::fleet::LogLevel::kFatal

#define FLEET_LOG(level)                          \
  if (!::fleet::LogEnabled(FLEET_LOG_##level)) {  \
  } else                                          \
    ::fleet::LogLine(FLEET_LOG_##level, __FILE__, __LINE__).stream()

#define FLEET_CHECK(cond)                                                    \
  if (cond) {                                                                \
  } else                                                                     \
    ::fleet::LogLine(::fleet::LogLevel::kFatal, __FILE__, __LINE__).stream() \
        << "Check failed: " #cond " "
