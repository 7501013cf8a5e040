// fleet-gcs: the control store daemon. Flags: --host, --port (0 = any free),
// --parent-pid (exit with that process), --spread-threshold (actor placement,
// Ray's scheduler_spread_threshold, default 0.5). The cluster token comes from the
// FLEET_CLUSTER_TOKEN environment variable (never argv: ps shows argv).
#include <signal.h>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdlib>

#include "apps/daemon_util.h"
#include "rpc/connection.h"
#include "common/logging.h"
#include "gcs/gcs_server.h"

int main(int argc, char** argv) {
  using namespace fleet;
  auto flags = apps::ParseFlags(argc, argv);
  SetLogComponent("fleet-gcs");
  // "fleet X, Python Y" of the installation that started us (see rpc/connection.h).
  rpc::SetLocalVersion(apps::Flag(flags, "version-tag", ""));
  apps::WatchParent(std::atoi(apps::Flag(flags, "parent-pid", "0").c_str()));
  signal(SIGPIPE, SIG_IGN);
  const char* token = std::getenv("FLEET_CLUSTER_TOKEN");
  if (!token || !*token) {
    FLEET_LOG(ERROR) << "FLEET_CLUSTER_TOKEN is not set; refusing to start without a token";
    return 2;
  }
  asio::io_context io;
  gcs::GcsOptions opts;
  opts.host = apps::Flag(flags, "host", "127.0.0.1");
  opts.port = std::atoi(apps::Flag(flags, "port", "0").c_str());
  // Nodes on this host are reached over their Unix sockets.
  if (opts.host != "0.0.0.0" && opts.host != "::") rpc::SetLocalHost(opts.host);
  opts.token = token;
  opts.health_timeout_ms = std::atoi(apps::Flag(flags, "health-timeout-ms", "10000").c_str());
  opts.spread_threshold = std::atof(apps::Flag(flags, "spread-threshold", "0.5").c_str());
  gcs::GcsServer server(io, opts);
  auto port = server.Start();
  if (!port.ok()) {
    FLEET_LOG(ERROR) << port.status().message();
    std::fprintf(stdout, "ERROR %s\n", port.status().message().c_str());
    return 1;
  }
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](const asio::error_code&, int sig) {
    FLEET_LOG(INFO) << "signal " << sig << ": stopping";
    server.Stop();
    io.stop();
  });
  if (flags.count("watch-stdin")) {
    apps::WatchStdin(io, [&] {
      FLEET_LOG(INFO) << "the launching driver exited: stopping";
      server.Stop();
        io.stop();
    });
  }
  FLEET_LOG(INFO) << "fleet-gcs listening on " << opts.host << ":" << port.value();
  apps::AnnounceReady(std::to_string(port.value()));
  io.run();
  return 0;
}
