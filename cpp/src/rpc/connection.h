// Connection: one framed, authenticated stream (Unix socket or TCP) on an Asio
// io_context.
//
// Reading and dispatch run on the io_context's thread. Send/Call may be called
// from any thread: a send writes straight to the socket from the calling thread
// when no write is in progress (no thread hop on the hot path) and otherwise
// queues; everything queued while a write is in flight goes out in one write.
// Replies (is_reply) complete the callback registered by Call, on the io thread.
// Sends made by handlers while the io thread dispatches one read's messages
// are corked and flushed once the whole read is handled: N replies read
// together cause N follow-up messages in one write per peer.
// The first message of a client is Hello with the cluster token; a server-side
// connection refuses anything else, logs the refusal and closes.
// Lifetime: shared_ptr; the fd is closed only in the destructor, so a direct
// write from another thread can never hit a reused fd.
#pragma once

#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "fleet.pb.h"
#include "rpc/frame.h"

namespace fleet::rpc {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Socket = asio::generic::stream_protocol::socket;
  using MessageHandler = std::function<void(const std::shared_ptr<Connection>&, Envelope&)>;
  using CloseHandler = std::function<void(const std::shared_ptr<Connection>&, const Status&)>;
  using ReplyCallback = std::function<void(const Status&, Envelope&)>;

  Connection(asio::io_context& io, Socket socket, std::string peer);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Begins reading. If `expected_token` is non-empty this is a server side
  // connection: the first message must be a Hello carrying that token.
  // Handlers run on the io thread. Call once.
  void Start(MessageHandler on_message, CloseHandler on_close, std::string expected_token = "");

  // Thread-safe; drops the message if the connection is closed. With
  // flush=false the frame only queues (unless a write is in progress, which
  // takes it along); the caller must Flush() later.
  void Send(const Envelope& msg, bool flush = true);
  void Flush();
  // Thread-safe. `cb` runs on the io thread with the reply, or with a
  // Disconnected status if the connection closes first.
  void Call(Envelope& msg, ReplyCallback cb);
  // Blocks the calling thread (never the io thread) until the reply arrives.
  Result<Envelope> CallSync(Envelope& msg, int timeout_ms);
  void Reply(uint64_t request_id, Envelope& msg, bool flush = true);
  // A reply followed by `len` raw bytes (see frame.h); the receiver's reply
  // callback reads them with CurrentPayload(). One copy into the output buffer.
  void ReplyWithPayload(uint64_t request_id, Envelope& msg, const char* payload, size_t len);

  // Thread-safe, idempotent. Pending calls fail with `why`.
  void Close(const Status& why = Status::Disconnected("connection closed"));
  // Writes what was corked during a read's dispatch (io thread only).
  void Uncork();
  bool closed() const { return closed_.load(); }
  // A duplicate of the socket's descriptor (-1 if closed): the peer sees the
  // connection end only once the duplicate is closed too.
  int DupSocket();
  const std::string& peer() const { return peer_; }
  // The Hello a server-side connection received (role, worker id, pid...).
  const Hello& hello() const { return hello_; }

 private:
  // Queues an encoded frame and writes it (see Send).
  void SendFrame(std::string frame, bool flush);
  void ReadMore();
  void OnRead(const asio::error_code& ec, size_t n);
  void Dispatch(Envelope& msg);
  void FlushLocked(std::unique_lock<std::mutex>& lk);
  void AsyncWrite(std::shared_ptr<std::string> buf);
  void DoClose(const Status& why);

  // Constant after construction.
  asio::io_context& io_;
  Socket socket_;
  int fd_;
  std::string peer_;

  // Touched only on the io thread.
  FrameDecoder decoder_;
  MessageHandler on_message_;
  CloseHandler on_close_;
  std::string expected_token_;
  bool authenticated_ = true;
  Hello hello_;

  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> next_request_id_{1};

  std::mutex mu_;
  bool corked_ = false;   // guarded by mu_: in the io thread's end-of-read flush list
  std::string out_;     // guarded by mu_: frames not yet written
  bool writing_ = false;  // guarded by mu_: a write is in progress somewhere
  std::string write_error_;  // guarded by mu_: why writing stopped, if it did
  std::unordered_map<uint64_t, ReplyCallback> pending_;  // guarded by mu_
};

using ConnectionPtr = std::shared_ptr<Connection>;

// The raw payload of the frame being dispatched on this thread (empty if
// none); valid only inside the message handler or reply callback.
std::string_view CurrentPayload();

// This process's "fleet X, Python Y", sent in every Hello it makes and
// compared with every Hello it accepts: a connection between different
// versions is refused with both in the message (pickles and messages are
// not portable across them). Empty (the default, and C++ unit tests): no
// check. Set once at startup, before connecting.
void SetLocalVersion(const std::string& version);
const std::string& LocalVersion();

// This process's IP address (its node's). A composite address
// "ip:port,unix:/path" (a process that listens on both) is reached over the
// Unix socket when its ip is this one, else over TCP. Empty: always TCP.
// Set once at startup, before connecting.
void SetLocalHost(const std::string& ip);
const std::string& LocalHost();
// "ip:port,unix:/path" from the parts (either may be empty).
std::string JoinAddress(const std::string& tcp, const std::string& unix_address);
// The ip of an address ("" for a Unix-only one).
std::string AddressHost(const std::string& address);

// Parses "unix:/path", "host:port" or "host:port,unix:/path". Connects synchronously from the calling
// thread and sends Hello (not waiting for the answer). The connection is not
// started: call Start() with handlers. A refused Hello logs and closes.
Result<ConnectionPtr> Connect(asio::io_context& io, const std::string& address, const Hello& hello);

// Like Connect + Start, then waits for the HelloReply: a wrong token or a dead
// peer comes back as a Status. Must not run on the io thread.
Result<ConnectionPtr> ConnectAndStart(asio::io_context& io, const std::string& address,
                                      const Hello& hello, Connection::MessageHandler on_message,
                                      Connection::CloseHandler on_close, int timeout_ms);

}  // namespace fleet::rpc
