// Connection implementation; see connection.h for the threading contract.
#include "rpc/connection.h"

#include <poll.h>
#include <sys/uio.h>

#include <sys/socket.h>
#include <unistd.h>

#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <future>

#include "common/logging.h"

namespace fleet::rpc {

namespace {
// How long a TCP connect may take before it fails (see Connect).
constexpr int kConnectTimeoutMs = 3000;
}  // namespace

namespace {
// Connections with corked output on this (io) thread, or null outside a read.
thread_local std::vector<std::shared_ptr<Connection>>* t_corked = nullptr;
}  // namespace

Connection::Connection(asio::io_context& io, Socket socket, std::string peer)
    : io_(io), socket_(std::move(socket)), fd_(socket_.native_handle()), peer_(std::move(peer)) {
  asio::error_code ec;
  socket_.native_non_blocking(true, ec);
}

Connection::~Connection() {
  asio::error_code ec;
  socket_.close(ec);
}

void Connection::Start(MessageHandler on_message, CloseHandler on_close, std::string expected_token) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  expected_token_ = std::move(expected_token);
  authenticated_ = expected_token_.empty();
  asio::post(io_, [self = shared_from_this()] { self->ReadMore(); });
}

namespace {
thread_local std::string_view t_payload;
}  // namespace

std::string_view CurrentPayload() { return t_payload; }

void Connection::ReadMore() {
  if (closed_) return;
  char* p = decoder_.WritePtr();
  socket_.async_read_some(asio::buffer(p, decoder_.WritableBytes()),
                          [self = shared_from_this()](const asio::error_code& ec, size_t n) {
                            self->OnRead(ec, n);
                          });
}

void Connection::OnRead(const asio::error_code& ec, size_t n) {
  if (ec) {
    std::string why = ec == asio::error::eof ? "peer closed the connection" : ec.message();
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!write_error_.empty()) why = write_error_ + " (" + why + ")";
    }
    DoClose(Status::Disconnected(why));
    return;
  }
  decoder_.Commit(n);
  Envelope msg;
  std::vector<std::shared_ptr<Connection>> corked;
  bool outermost = t_corked == nullptr;
  if (outermost) t_corked = &corked;
  while (!closed_) {
    // Until the peer proves the token, accept only a small Hello: a stray
    // client (say, HTTP on the TCP port) must not make us allocate a huge frame.
    decoder_.set_max_frame(authenticated_ ? kMaxFrameBytes : kMaxUnauthenticatedFrameBytes);
    std::string_view payload;
    auto r = decoder_.Next(&msg, &payload);
    if (!r.ok()) {
      if (outermost) {
        t_corked = nullptr;
        for (auto& c : corked) c->Uncork();
      }
      FLEET_LOG(ERROR) << "closing connection to " << peer_ << ": " << r.status().message();
      DoClose(r.status());
      return;
    }
    if (!r.value()) break;
    t_payload = payload;
    Dispatch(msg);
    t_payload = {};
  }
  if (outermost) {
    t_corked = nullptr;
    for (auto& c : corked) c->Uncork();
  }
  ReadMore();
}

namespace {
std::string& LocalVersionStorage() {
  static std::string v;
  return v;
}
}  // namespace

void SetLocalVersion(const std::string& version) { LocalVersionStorage() = version; }

namespace {
std::string& LocalHostStorage() {
  static std::string host;
  return host;
}
}  // namespace

void SetLocalHost(const std::string& ip) { LocalHostStorage() = ip; }
const std::string& LocalHost() { return LocalHostStorage(); }

std::string JoinAddress(const std::string& tcp, const std::string& unix_address) {
  if (tcp.empty()) return unix_address;
  if (unix_address.empty()) return tcp;
  return tcp + "," + unix_address;
}

std::string AddressHost(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return "";
  std::string tcp = address.substr(0, address.find(','));
  auto colon = tcp.rfind(':');
  return colon == std::string::npos ? tcp : tcp.substr(0, colon);
}
const std::string& LocalVersion() { return LocalVersionStorage(); }

void Connection::Dispatch(Envelope& msg) {
  if (!authenticated_ && msg.body_case() == Envelope::kHello &&
      msg.hello().token() == expected_token_ && !msg.hello().version().empty() &&
      !LocalVersion().empty() && msg.hello().version() != LocalVersion()) {
    std::string why = "version mismatch: this cluster runs " + LocalVersion() +
                      ", and the " + (msg.hello().role().empty() ? "peer" : msg.hello().role()) +
                      " connecting runs " + msg.hello().version() +
                      ". Install the same fleet and Python versions on every node and driver.";
    FLEET_LOG(WARNING) << "refused connection from " << peer_ << " (pid " << msg.hello().pid()
                       << "): " << why;
    Envelope reply;
    reply.mutable_hello_reply()->set_ok(false);
    reply.mutable_hello_reply()->set_error(why);
    Reply(msg.request_id(), reply);
    Uncork();
    ::shutdown(fd_, SHUT_RD);
    DoClose(Status::Unauthenticated(why));
    return;
  }
  if (!authenticated_) {
    if (msg.body_case() != Envelope::kHello || msg.hello().token() != expected_token_) {
      FLEET_LOG(WARNING) << "refused connection from " << peer_
                         << ": the first message did not carry this cluster's token"
                         << " (wrong or missing cluster token)";
      Envelope reply;
      reply.mutable_hello_reply()->set_ok(false);
      reply.mutable_hello_reply()->set_error(
          "refused by the server: wrong cluster token (set FLEET_CLUSTER_TOKEN or pass the "
          "token printed by `fleet start --head`)");
      Reply(msg.request_id(), reply);
      Uncork();  // the refusal must reach the peer before we close
      ::shutdown(fd_, SHUT_RD);
      DoClose(Status::Unauthenticated("wrong cluster token"));
      return;
    }
    authenticated_ = true;
    hello_ = msg.hello();
    hello_.clear_token();
    Envelope reply;
    reply.mutable_hello_reply()->set_ok(true);
    Reply(msg.request_id(), reply);
    if (on_message_) on_message_(shared_from_this(), msg);
    return;
  }
  if (msg.is_reply()) {
    ReplyCallback cb;
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = pending_.find(msg.request_id());
      if (it == pending_.end()) return;  // caller gave up (timeout)
      cb = std::move(it->second);
      pending_.erase(it);
    }
    if (msg.body_case() == Envelope::kError) {
      Envelope copy = msg;
      cb(Status(static_cast<StatusCode>(msg.error().code()), msg.error().message()), copy);
    } else {
      cb(Status::OK(), msg);
    }
    return;
  }
  if (on_message_) on_message_(shared_from_this(), msg);
}

void Connection::Send(const Envelope& msg, bool flush) {
  std::string frame;
  EncodeFrame(msg, &frame);
  SendFrame(std::move(frame), flush);
}

void Connection::ReplyWithPayload(uint64_t request_id, Envelope& msg, const char* payload,
                                  size_t len) {
  msg.set_request_id(request_id);
  msg.set_is_reply(true);
  std::string head;
  EncodeFrameWithPayload(msg, payload, len, &head, /*header_only=*/true);
  std::unique_lock<std::mutex> lk(mu_);
  if (closed_ || !write_error_.empty()) return;
  if (!out_.empty() || writing_) {
    // Behind other frames: queue a copy, in order.
    out_.append(head);
    out_.append(payload, len);
    if (writing_ || corked_) return;
    writing_ = true;
    FlushLocked(lk);
    return;
  }
  // Nothing queued: write header and payload straight from the caller's
  // memory (the payload is not copied unless the socket fills up).
  writing_ = true;
  lk.unlock();
  size_t total = head.size() + len, off = 0;
  int err = 0;
  while (off < total) {
    iovec iov[2];
    int n_iov = 0;
    if (off < head.size()) iov[n_iov++] = {head.data() + off, head.size() - off};
    size_t poff = off < head.size() ? 0 : off - head.size();
    iov[n_iov++] = {const_cast<char*>(payload) + poff, len - poff};
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n_iov);
    ssize_t n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      err = errno;
      break;
    }
  }
  lk.lock();
  if (err != 0) {
    ::shutdown(fd_, SHUT_WR);
    writing_ = false;
    out_.clear();
    if (write_error_.empty()) write_error_ = std::string("write failed: ") + std::strerror(err);
    return;
  }
  if (off < total) {
    // The socket is full: the rest (and what queued meanwhile) goes from the io thread.
    auto rest = std::make_shared<std::string>();
    rest->reserve(total - off + out_.size());
    if (off < head.size()) rest->append(head, off);
    size_t poff = off < head.size() ? 0 : off - head.size();
    rest->append(payload + poff, len - poff);
    rest->append(out_);
    out_.clear();
    asio::post(io_, [self = shared_from_this(), rest] { self->AsyncWrite(rest); });
    return;
  }
  if (out_.empty() || closed_) {
    writing_ = false;
    return;
  }
  FlushLocked(lk);
}

void Connection::SendFrame(std::string frame, bool flush) {
  std::unique_lock<std::mutex> lk(mu_);
  if (closed_ || !write_error_.empty()) return;
  if (out_.empty()) {
    out_.swap(frame);
  } else {
    out_.append(frame);
  }
  if (writing_ || corked_ || !flush) return;
  if (t_corked != nullptr) {
    corked_ = true;
    t_corked->push_back(shared_from_this());
    return;
  }
  writing_ = true;
  FlushLocked(lk);
}

void Connection::Flush() {
  std::unique_lock<std::mutex> lk(mu_);
  if (writing_ || corked_ || out_.empty() || closed_) return;
  writing_ = true;
  FlushLocked(lk);
}

void Connection::Uncork() {
  std::unique_lock<std::mutex> lk(mu_);
  corked_ = false;
  if (writing_ || out_.empty() || closed_) return;
  writing_ = true;
  FlushLocked(lk);
}

void Connection::FlushLocked(std::unique_lock<std::mutex>& lk) {
  while (true) {
    std::string buf;
    buf.swap(out_);
    lk.unlock();
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t n = ::send(fd_, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // The socket buffer is full: the io thread finishes this write and
        // whatever queues up meanwhile. writing_ stays true until then.
        auto rest = std::make_shared<std::string>(buf.substr(off));
        asio::post(io_, [self = shared_from_this(), rest] { self->AsyncWrite(rest); });
        lk.lock();
        return;
      } else {
        // The peer is gone (or refused us). Stop writing but keep reading:
        // whatever it sent before leaving (e.g. a token refusal) is still
        // delivered, and the read side then closes with this reason.
        int err = errno;
        ::shutdown(fd_, SHUT_WR);
        lk.lock();
        writing_ = false;
        out_.clear();
        if (write_error_.empty()) write_error_ = std::string("write failed: ") + std::strerror(err);
        return;
      }
    }
    lk.lock();
    if (out_.empty() || closed_) {
      writing_ = false;
      return;
    }
  }
}

void Connection::AsyncWrite(std::shared_ptr<std::string> buf) {
  if (closed_) return;
  asio::async_write(socket_, asio::buffer(*buf),
                    [self = shared_from_this(), buf](const asio::error_code& ec, size_t) {
                      if (ec) {
                        {
                          std::lock_guard<std::mutex> lk(self->mu_);
                          self->writing_ = false;
                        }
                        self->DoClose(Status::Disconnected("write failed: " + ec.message()));
                        return;
                      }
                      std::unique_lock<std::mutex> lk(self->mu_);
                      if (self->out_.empty() || self->closed_) {
                        self->writing_ = false;
                        return;
                      }
                      auto next = std::make_shared<std::string>();
                      next->swap(self->out_);
                      lk.unlock();
                      self->AsyncWrite(next);
                    });
}

void Connection::Call(Envelope& msg, ReplyCallback cb) {
  uint64_t id = next_request_id_.fetch_add(1);
  msg.set_request_id(id);
  bool was_closed;
  {
    // closed_ is set under mu_ by DoClose, which then fails everything in
    // pending_: an entry added while open is always answered.
    std::lock_guard<std::mutex> lk(mu_);
    was_closed = closed_ || !write_error_.empty();  // a failed write: no reply can come
    pending_.emplace(id, std::move(cb));
  }
  if (was_closed) {
    // Fail on the io thread so callbacks always run there.
    asio::post(io_, [self = shared_from_this(), id] {
      ReplyCallback cb;
      {
        std::lock_guard<std::mutex> lk(self->mu_);
        auto it = self->pending_.find(id);
        if (it == self->pending_.end()) return;
        cb = std::move(it->second);
        self->pending_.erase(it);
      }
      Envelope empty;
      cb(Status::Disconnected("connection to " + self->peer_ + " is closed"), empty);
    });
    return;
  }
  Send(msg);
}

Result<Envelope> Connection::CallSync(Envelope& msg, int timeout_ms) {
  auto promise = std::make_shared<std::promise<Result<Envelope>>>();
  auto future = promise->get_future();
  Call(msg, [promise](const Status& s, Envelope& reply) {
    if (s.ok()) {
      promise->set_value(std::move(reply));
    } else {
      promise->set_value(s);
    }
  });
  if (timeout_ms >= 0 &&
      future.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    std::lock_guard<std::mutex> lk(mu_);
    pending_.erase(msg.request_id());
    return Status::TimedOut("no reply from " + peer_ + " within " + std::to_string(timeout_ms) +
                            " ms");
  }
  return future.get();
}

int Connection::DupSocket() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_.load() || !socket_.is_open()) return -1;
  return ::dup(socket_.native_handle());
}

void Connection::Reply(uint64_t request_id, Envelope& msg, bool flush) {
  msg.set_request_id(request_id);
  msg.set_is_reply(true);
  Send(msg, flush);
}

void Connection::Close(const Status& why) {
  if (closed_) return;
  if (io_.get_executor().running_in_this_thread()) {
    DoClose(why);
    return;
  }
  asio::post(io_, [self = shared_from_this(), why] { self->DoClose(why); });
}

void Connection::DoClose(const Status& why) {
  std::unordered_map<uint64_t, ReplyCallback> pending;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    pending.swap(pending_);
  }
  // shutdown, not close: another thread may be inside send() on this fd.
  ::shutdown(fd_, SHUT_RDWR);
  asio::error_code ec;
  socket_.cancel(ec);
  for (auto& [id, cb] : pending) {
    Envelope empty;
    cb(why, empty);
  }
  auto self = shared_from_this();
  if (on_close_) on_close_(self, why);
  on_message_ = nullptr;
  on_close_ = nullptr;
}

Result<ConnectionPtr> Connect(asio::io_context& io, const std::string& full_address,
                              const Hello& hello) {
  Connection::Socket socket(io);
  asio::error_code ec;
  // A composite address: the Unix socket when the peer is on this host.
  std::string address = full_address;
  if (auto comma = full_address.find(','); comma != std::string::npos) {
    std::string tcp = full_address.substr(0, comma);
    std::string local = full_address.substr(comma + 1);
    bool same_host = !LocalHost().empty() && AddressHost(tcp) == LocalHost();
    address = same_host && local.rfind("unix:", 0) == 0 ? local : tcp;
  }
  if (address.rfind("unix:", 0) == 0) {
    asio::local::stream_protocol::endpoint ep(address.substr(5));
    socket.connect(ep, ec);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      return Status::Invalid("bad address '" + address + "': expected host:port or unix:/path");
    }
    std::string host = address.substr(0, colon);
    std::string port = address.substr(colon + 1);
    asio::ip::tcp::resolver resolver(io);
    asio::error_code parse_ec;
    asio::ip::make_address(host, parse_ec);
    auto endpoints = parse_ec ? resolver.resolve(host, port, ec)
                              : resolver.resolve(host, port, asio::ip::resolver_base::numeric_host |
                                                                 asio::ip::resolver_base::numeric_service,
                                                 ec);
    if (!ec) {
      for (const auto& e : endpoints) {
        // Non-blocking connect with a deadline: daemons connect from their
        // only thread, and a host that vanished must not stall them for the
        // kernel's minutes of SYN retries.
        auto ep = e.endpoint();
        int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
          ec = asio::error_code(errno, asio::system_category());
          continue;
        }
        int rc = ::connect(fd, ep.data(), static_cast<socklen_t>(ep.size()));
        if (rc < 0 && errno == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          int n;
          do {
            n = ::poll(&p, 1, kConnectTimeoutMs);
          } while (n < 0 && errno == EINTR);
          int err = 0;
          socklen_t len = sizeof(err);
          if (n == 0) {
            err = ETIMEDOUT;
          } else if (n < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
            err = errno;
          }
          rc = err == 0 ? 0 : -1;
          errno = err;
        }
        if (rc < 0) {
          ec = asio::error_code(errno, asio::system_category());
          ::close(fd);
          continue;
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, 1 /*TCP_NODELAY*/, &one, sizeof(one));
        socket = Connection::Socket(io);
        socket.assign(asio::generic::stream_protocol(ep.protocol().family(), IPPROTO_TCP), fd, ec);
        if (ec) {
          ::close(fd);
          continue;
        }
        break;
      }
    }
  }
  if (ec) return Status::IoError("cannot connect to " + address + ": " + ec.message());
  auto conn = std::make_shared<Connection>(io, std::move(socket), address);
  Envelope msg;
  *msg.mutable_hello() = hello;
  if (msg.hello().version().empty()) msg.mutable_hello()->set_version(LocalVersion());
  std::weak_ptr<Connection> weak = conn;
  std::string addr = address;
  conn->Call(msg, [weak, addr](const Status& s, Envelope& reply) {
    if (!s.ok()) return;
    if (!reply.hello_reply().ok()) {
      FLEET_LOG(ERROR) << "connection to " << addr << " refused: " << reply.hello_reply().error();
      if (auto c = weak.lock()) c->Close(Status::Unauthenticated(reply.hello_reply().error()));
    }
  });
  return conn;
}

Result<ConnectionPtr> ConnectAndStart(asio::io_context& io, const std::string& address,
                                      const Hello& hello, Connection::MessageHandler on_message,
                                      Connection::CloseHandler on_close, int timeout_ms) {
  auto r = Connect(io, address, hello);
  if (!r.ok()) return r.status();
  ConnectionPtr conn = r.value();
  auto done = std::make_shared<std::promise<Status>>();
  auto fut = done->get_future();
  auto once = std::make_shared<std::atomic<bool>>(false);
  // A second Hello-less probe is not possible, so watch the close instead: a
  // refused Hello closes with Unauthenticated before anything else arrives.
  conn->Start(std::move(on_message),
              [on_close, done, once](const ConnectionPtr& c, const Status& s) {
                if (!once->exchange(true)) done->set_value(s);
                if (on_close) on_close(c, s);
              });
  // Round trip: a cheap request proves the Hello was accepted (replies are
  // processed in order, so the HelloReply has been seen by then).
  Envelope ping;
  ping.mutable_get_node_stats();
  conn->Call(ping, [done, once](const Status& s, Envelope&) {
    bool failed = s.code() == StatusCode::kDisconnected || s.code() == StatusCode::kUnauthenticated;
    if (!once->exchange(true)) done->set_value(failed ? s : Status::OK());
  });
  if (fut.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    conn->Close();
    return Status::TimedOut("no answer from " + address + " within " + std::to_string(timeout_ms) +
                            " ms");
  }
  Status s = fut.get();
  if (!s.ok()) {
    return Status(s.code(), "cannot connect to " + address + ": " + s.message());
  }
  return conn;
}

}  // namespace fleet::rpc
