// Shared bits of fleet-gcs's and fleet-node's main(): flag parsing, the
// parent-death watch and the readiness line the launcher waits for.
#pragma once

#include <asio/io_context.hpp>
#include <functional>
#include <map>
#include <string>

namespace fleet::apps {

// Parses --key=value and --key value into a map; bare --flag maps to "1".
std::map<std::string, std::string> ParseFlags(int argc, char** argv);
std::string Flag(const std::map<std::string, std::string>& f, const std::string& key,
                 const std::string& def = "");
// If parent_pid > 0, exit when that process dies (SIGTERM via PDEATHSIG).
void WatchParent(int parent_pid);
// Calls on_eof when stdin reaches EOF: with --watch-stdin, stdin is a pipe
// from the launching driver, so this fires when the driver exits (even by
// SIGKILL), and in whichever thread of it started us.
void WatchStdin(asio::io_context& io, std::function<void()> on_eof);
// Prints "READY <detail>" on stdout for the launcher, then points stdout at stderr.
void AnnounceReady(const std::string& detail);

}  // namespace fleet::apps
