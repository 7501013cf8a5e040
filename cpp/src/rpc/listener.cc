// Listener implementation; see listener.h.
#include "rpc/listener.h"

#include <netinet/tcp.h>
#include <unistd.h>

#include "common/logging.h"

namespace fleet::rpc {

Listener::Listener(asio::io_context& io, std::string token, Connection::MessageHandler on_message,
                   Connection::CloseHandler on_close)
    : io_(io), token_(std::move(token)), on_message_(std::move(on_message)),
      on_close_(std::move(on_close)) {}

Listener::~Listener() { Close(); }

void Listener::Close() {
  asio::error_code ec;
  if (unix_) unix_->close(ec);
  if (tcp_) tcp_->close(ec);
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  unix_path_.clear();
}

Result<std::string> Listener::ListenUnix(const std::string& path) {
  ::unlink(path.c_str());
  asio::error_code ec;
  auto acc = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
  asio::local::stream_protocol::endpoint ep(path);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(1024, ec);
  if (ec) return Status::IoError("cannot listen on unix:" + path + ": " + ec.message());
  unix_ = std::move(acc);
  unix_path_ = path;
  AcceptUnix();
  return "unix:" + path;
}

Result<int> Listener::ListenTcp(const std::string& host, int port) {
  asio::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::Invalid("bad listen address '" + host + "': " + ec.message());
  asio::ip::tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  auto acc = std::make_unique<asio::ip::tcp::acceptor>(io_);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(1024, ec);
  if (ec) {
    return Status::IoError("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                           ec.message() + " (is another fleet cluster using this port?)");
  }
  int bound = acc->local_endpoint().port();
  tcp_ = std::move(acc);
  AcceptTcp();
  return bound;
}

void Listener::AcceptUnix() {
  unix_->async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket s) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        FLEET_LOG(WARNING) << "accept: " << ec.message();
      }
      if (ec == asio::error::operation_aborted || !unix_ || !unix_->is_open()) return;
    } else {
      Connection::Socket gs(io_);
      asio::error_code e2;
      gs.assign(asio::generic::stream_protocol(AF_UNIX, 0), s.release(), e2);
      if (!e2) Started(std::move(gs), "unix-peer");
    }
    AcceptUnix();
  });
}

void Listener::AcceptTcp() {
  tcp_->async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket s) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        FLEET_LOG(WARNING) << "accept: " << ec.message();
      }
      if (ec == asio::error::operation_aborted || !tcp_ || !tcp_->is_open()) return;
    } else {
      asio::error_code e2;
      std::string peer = "tcp-peer";
      auto rep = s.remote_endpoint(e2);
      if (!e2) peer = rep.address().to_string() + ":" + std::to_string(rep.port());
      s.set_option(asio::ip::tcp::no_delay(true), e2);
      Connection::Socket gs(io_);
      int family = s.local_endpoint(e2).address().is_v6() ? AF_INET6 : AF_INET;
      gs.assign(asio::generic::stream_protocol(family, IPPROTO_TCP), s.release(), e2);
      if (!e2) Started(std::move(gs), peer);
    }
    AcceptTcp();
  });
}

void Listener::Started(Connection::Socket socket, std::string peer) {
  auto conn = std::make_shared<Connection>(io_, std::move(socket), std::move(peer));
  conn->Start(on_message_, on_close_, token_);
}

}  // namespace fleet::rpc
