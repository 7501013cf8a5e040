// Listener: accepts connections on a Unix socket path and/or a TCP port and
// starts each as an authenticated server-side Connection.
//
// All callbacks run on the io thread. Not thread-safe: create and call Listen*
// before (or on) the io thread. Port 0 binds a free port.
#pragma once

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <memory>
#include <string>

#include "rpc/connection.h"

namespace fleet::rpc {

class Listener {
 public:
  Listener(asio::io_context& io, std::string token, Connection::MessageHandler on_message,
           Connection::CloseHandler on_close);
  ~Listener();

  // Binds `path` (removing a stale socket file). Returns "unix:<path>".
  Result<std::string> ListenUnix(const std::string& path);
  // Binds host:port; returns the bound port.
  Result<int> ListenTcp(const std::string& host, int port);
  void Close();

 private:
  void AcceptUnix();
  void AcceptTcp();
  void Started(Connection::Socket socket, std::string peer);

  asio::io_context& io_;
  std::string token_;
  Connection::MessageHandler on_message_;
  Connection::CloseHandler on_close_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_;
  std::unique_ptr<asio::ip::tcp::acceptor> tcp_;
  std::string unix_path_;
};

}  // namespace fleet::rpc
