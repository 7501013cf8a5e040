// Implementation of the minimal logger: one write(2) per line.
#include "common/logging.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>

namespace fleet {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::string& Component() {
  static std::string name = "fleet";
  return name;
}
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarning: return "W";
    case LogLevel::kError: return "E";
    case LogLevel::kFatal: return "F";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }
void SetLogComponent(const std::string& name) { Component() = name; }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  localtime_r(&tv.tv_sec, &t);
  char buf[64];
  strftime(buf, sizeof(buf), "%m-%d %H:%M:%S", &t);
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  char ms[8];
  snprintf(ms, sizeof(ms), ".%03d", static_cast<int>(tv.tv_usec / 1000));
  os_ << "[" << LevelName(level) << " " << buf << ms << " " << Component() << " " << getpid()
      << " " << base << ":" << line << "] ";
}

LogLine::~LogLine() {
  os_ << '\n';
  std::string s = os_.str();
  ssize_t ignored = ::write(2, s.data(), s.size());
  (void)ignored;
  if (level_ == LogLevel::kFatal) std::abort();
}

}  // namespace fleet
