// fleet-node: the node daemon. Flags: --gcs-address host:port, --session-dir,
// --socket (Unix socket path), --node-ip, --resources "CPU=2,GPU=1,foo=3",
// --python (worker interpreter), --parent-pid, --object-store-memory BYTES
// (default 30% of RAM), --spill-dir (default <session-dir>/spill/<node>),
// --object-store-full-timeout-ms, --port (TCP, for other nodes), --head,
// --transfer-chunk-bytes, --transfer-chunks-in-flight, --labels "k=v,k2=v2",
// --spread-threshold (hybrid policy, default 0.5). Token: FLEET_CLUSTER_TOKEN.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdlib>
#include <sstream>

#include "apps/daemon_util.h"
#include "rpc/connection.h"
#include "common/logging.h"
#include "node/node_server.h"

int main(int argc, char** argv) {
  using namespace fleet;
  auto flags = apps::ParseFlags(argc, argv);
  SetLogComponent("fleet-node");
  // "fleet X, Python Y" of the installation that started us (see rpc/connection.h).
  rpc::SetLocalVersion(apps::Flag(flags, "version-tag", ""));
  apps::WatchParent(std::atoi(apps::Flag(flags, "parent-pid", "0").c_str()));
  signal(SIGPIPE, SIG_IGN);
  const char* token = std::getenv("FLEET_CLUSTER_TOKEN");
  if (!token || !*token) {
    FLEET_LOG(ERROR) << "FLEET_CLUSTER_TOKEN is not set; refusing to start without a token";
    return 2;
  }
  node::NodeOptions opts;
  opts.gcs_address = apps::Flag(flags, "gcs-address");
  opts.token = token;
  opts.session_dir = apps::Flag(flags, "session-dir", "/tmp/fleet");
  opts.unix_socket = apps::Flag(flags, "socket", opts.session_dir + "/sockets/node.sock");
  opts.node_ip = apps::Flag(flags, "node-ip", "127.0.0.1");
  // Peers on this IP (same machine) are reached over their Unix sockets.
  rpc::SetLocalHost(opts.node_ip);
  opts.port = std::atoi(apps::Flag(flags, "port", "0").c_str());
  opts.is_head = flags.count("head") > 0;
  opts.python = apps::Flag(flags, "python", "/usr/bin/python3");
  opts.num_prestart = std::atoi(apps::Flag(flags, "prestart", "-1").c_str());
  // FLEET_NO_ZYGOTE=1: start every worker with fork + exec (debugging, comparisons).
  opts.use_zygote = std::getenv("FLEET_NO_ZYGOTE") == nullptr;
  opts.idle_worker_timeout_ms = std::atoi(apps::Flag(flags, "idle-worker-timeout-ms", "1000").c_str());
  opts.infeasible_warning_ms = std::atoi(apps::Flag(flags, "infeasible-warning-ms", "3000").c_str());
  uint64_t mem = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  opts.store.capacity = std::strtoull(
      apps::Flag(flags, "object-store-memory", std::to_string(mem / 10 * 3)).c_str(), nullptr, 10);
  opts.store.spill_dir = apps::Flag(flags, "spill-dir", "");
  opts.transfer_chunk_bytes = std::strtoull(
      apps::Flag(flags, "transfer-chunk-bytes", std::to_string(opts.transfer_chunk_bytes)).c_str(),
      nullptr, 10);
  opts.transfer_chunks_in_flight = std::atoi(
      apps::Flag(flags, "transfer-chunks-in-flight", std::to_string(opts.transfer_chunks_in_flight))
          .c_str());
  // Transfer chunks are multi-MiB strings: keep them on the heap (reused,
  // already faulted in) instead of fresh mmap'd pages for every chunk.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  opts.store.full_timeout_ms =
      std::atoi(apps::Flag(flags, "object-store-full-timeout-ms", "10000").c_str());
  std::stringstream rs(apps::Flag(flags, "resources", ""));
  std::string item;
  while (std::getline(rs, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) continue;
    opts.resources[item.substr(0, eq)] = std::atof(item.substr(eq + 1).c_str());
  }
  // --labels "k=v,k2=v2" (validated by the Python that starts us, as Ray's syntax).
  std::stringstream ls(apps::Flag(flags, "labels", ""));
  while (std::getline(ls, item, ',')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) continue;
    opts.labels[item.substr(0, eq)] = item.substr(eq + 1);
  }
  opts.spread_threshold = std::atof(apps::Flag(flags, "spread-threshold", "0.5").c_str());
  if (opts.gcs_address.empty()) {
    FLEET_LOG(ERROR) << "--gcs-address is required";
    return 2;
  }
  asio::io_context io;
  node::NodeServer server(io, opts);
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](const asio::error_code&, int sig) {
    FLEET_LOG(INFO) << "signal " << sig << ": stopping, killing workers";
    server.Stop();
  });
  if (flags.count("watch-stdin")) {
    apps::WatchStdin(io, [&] {
      FLEET_LOG(INFO) << "the launching driver exited: stopping";
      server.Stop();
    });
  }
  Status s = server.Start();
  if (!s.ok()) {
    FLEET_LOG(ERROR) << "fleet-node failed to start: " << s.message();
    std::fprintf(stdout, "ERROR %s\n", s.message().c_str());
    return 1;
  }
  apps::AnnounceReady(opts.unix_socket);
  io.run();
  server.Stop();
  return 0;
}
