// Helpers for the daemons' main(); see daemon_util.h.
#include "apps/daemon_util.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>
#include <array>
#include <cstdio>
#include <memory>
#include <cstdlib>

namespace fleet::apps {

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> out;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] != '-' || argv[i][1] != '-') continue;
    const std::string a(argv[i] + 2);
    auto eq = a.find('=');
    if (eq != std::string::npos) {
      out[a.substr(0, eq)] = a.substr(eq + 1);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      out[a] = argv[++i];
    } else {
      out[a] = "1";
    }
  }
  return out;
}

std::string Flag(const std::map<std::string, std::string>& f, const std::string& key,
                 const std::string& def) {
  auto it = f.find(key);
  return it == f.end() ? def : it->second;
}

void WatchParent(int parent_pid) {
  if (parent_pid <= 0) return;
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent_pid) _exit(0);  // the parent already died
}

void WatchStdin(asio::io_context& io, std::function<void()> on_eof) {
  auto sd = std::make_shared<asio::posix::stream_descriptor>(io, ::dup(0));
  auto buf = std::make_shared<std::array<char, 256>>();
  // The pending read owns the loop (the loop only refers to itself weakly),
  // so a daemon stopped by a signal, with the read still pending, frees it
  // when its io_context goes.
  auto loop = std::make_shared<std::function<void()>>();
  std::weak_ptr<std::function<void()>> weak = loop;
  *loop = [sd, buf, weak, on_eof] {
    auto self = weak.lock();
    if (!self) return;
    sd->async_read_some(asio::buffer(*buf), [sd, buf, self, on_eof](const asio::error_code& ec, size_t) {
      if (ec) {
        on_eof();
        return;
      }
      (*self)();
    });
  };
  (*loop)();
}

void AnnounceReady(const std::string& detail) {
  std::printf("READY %s\n", detail.c_str());
  std::fflush(stdout);
  dup2(2, 1);
}

}  // namespace fleet::apps
