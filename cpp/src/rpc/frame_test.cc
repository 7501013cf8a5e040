// Tests of the wire framing: EncodeFrame / FrameDecoder.
#include "rpc/frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace fleet::rpc {
namespace {

Envelope MakeKvPut(uint64_t request_id, const std::string& key, const std::string& value) {
  Envelope e;
  e.set_request_id(request_id);
  e.mutable_kv_put()->set_key(key);
  e.mutable_kv_put()->set_value(value);
  e.mutable_kv_put()->set_overwrite(true);
  return e;
}

std::vector<Envelope> SampleMessages() {
  std::vector<Envelope> msgs;
  msgs.push_back(MakeKvPut(1, "alpha", "one"));
  Envelope hello;
  hello.set_request_id(2);
  hello.mutable_hello()->set_token("secret");
  hello.mutable_hello()->set_role("driver");
  hello.mutable_hello()->set_pid(1234);
  msgs.push_back(hello);
  Envelope reply;
  reply.set_request_id(2);
  reply.set_is_reply(true);
  reply.mutable_hello_reply()->set_ok(true);
  msgs.push_back(reply);
  msgs.push_back(Envelope());  // empty envelope: a zero-length frame
  msgs.push_back(MakeKvPut(3, "beta", std::string(1000, 'x')));
  Envelope err;
  err.set_request_id(4);
  err.set_is_reply(true);
  err.mutable_error()->set_code(3);
  err.mutable_error()->set_message("boom");
  msgs.push_back(err);
  return msgs;
}

// Copies `bytes` into the decoder.
void Feed(FrameDecoder* d, const char* bytes, size_t n) {
  char* p = d->WritePtr(n);
  ASSERT_GE(d->WritableBytes(), n);
  std::memcpy(p, bytes, n);
  d->Commit(n);
}

// Drains every whole frame currently decodable.
void Drain(FrameDecoder* d, std::vector<Envelope>* out) {
  while (true) {
    Envelope m;
    auto r = d->Next(&m);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (!r.value()) return;
    out->push_back(std::move(m));
  }
}

void ExpectSame(const std::vector<Envelope>& got, const std::vector<Envelope>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].SerializeAsString(), want[i].SerializeAsString()) << "message " << i;
    EXPECT_EQ(got[i].body_case(), want[i].body_case()) << "message " << i;
  }
}

TEST(FrameTest, EncodeWritesLittleEndianLengthPrefix) {
  Envelope e = MakeKvPut(7, "k", "v");
  std::string out = "prefix";
  EncodeFrame(e, &out);
  ASSERT_EQ(out.size(), 6 + 4 + e.ByteSizeLong());
  EXPECT_EQ(out.substr(0, 6), "prefix");  // appends, does not overwrite
  const auto* p = reinterpret_cast<const unsigned char*>(out.data() + 6);
  uint32_t len = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
  EXPECT_EQ(len, e.ByteSizeLong());
  EXPECT_EQ(out.substr(10), e.SerializeAsString());
}

TEST(FrameTest, RoundTripSeveralMessagesInOneChunk) {
  auto msgs = SampleMessages();
  std::string wire;
  for (const auto& m : msgs) EncodeFrame(m, &wire);

  FrameDecoder d;
  Feed(&d, wire.data(), wire.size());
  std::vector<Envelope> got;
  Drain(&d, &got);
  ExpectSame(got, msgs);

  // Nothing left: Next asks for more bytes.
  Envelope m;
  auto r = d.Next(&m);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
}

TEST(FrameTest, EmptyDecoderNeedsMoreBytes) {
  FrameDecoder d;
  Envelope m;
  auto r = d.Next(&m);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
  // A partial length prefix is not enough either.
  const char two[2] = {5, 0};
  Feed(&d, two, 2);
  r = d.Next(&m);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value());
}

TEST(FrameTest, OneByteAtATime) {
  auto msgs = SampleMessages();
  std::string wire;
  for (const auto& m : msgs) EncodeFrame(m, &wire);

  FrameDecoder d;
  std::vector<Envelope> got;
  for (size_t i = 0; i < wire.size(); ++i) {
    Feed(&d, wire.data() + i, 1);
    Drain(&d, &got);
  }
  ExpectSame(got, msgs);
}

TEST(FrameTest, ArbitraryChunkBoundaries) {
  auto msgs = SampleMessages();
  std::string wire;
  for (int rep = 0; rep < 5; ++rep) {
    for (const auto& m : msgs) EncodeFrame(m, &wire);
  }
  std::vector<Envelope> want;
  for (int rep = 0; rep < 5; ++rep) want.insert(want.end(), msgs.begin(), msgs.end());

  for (size_t chunk : {2u, 3u, 5u, 7u, 13u, 64u, 999u, 4096u}) {
    FrameDecoder d;
    std::vector<Envelope> got;
    for (size_t off = 0; off < wire.size(); off += chunk) {
      size_t n = std::min(chunk, wire.size() - off);
      Feed(&d, wire.data() + off, n);
      Drain(&d, &got);
    }
    SCOPED_TRACE("chunk=" + std::to_string(chunk));
    ExpectSame(got, want);
  }
}

// Reads the way Connection does: WritePtr() with its default size, then a
// read of up to WritableBytes() bytes.
TEST(FrameTest, SocketStyleReadsWithDefaultWritePtr) {
  auto msgs = SampleMessages();
  std::string wire;
  for (const auto& m : msgs) EncodeFrame(m, &wire);
  Envelope big = MakeKvPut(9, "big", std::string(200 * 1024, 'q'));
  EncodeFrame(big, &wire);
  msgs.push_back(big);

  FrameDecoder d;
  std::vector<Envelope> got;
  size_t off = 0;
  size_t step = 1;
  while (off < wire.size()) {
    char* p = d.WritePtr();
    size_t n = std::min({d.WritableBytes(), wire.size() - off, step});
    ASSERT_GT(n, 0u);
    std::memcpy(p, wire.data() + off, n);
    d.Commit(n);
    off += n;
    step = step * 3 + 1;  // 1, 4, 13, 40, ... varying boundaries
    Drain(&d, &got);
  }
  ExpectSame(got, msgs);
}

TEST(FrameTest, FrameLargerThanInitialBuffer) {
  Envelope small = MakeKvPut(1, "s", "tiny");
  Envelope big = MakeKvPut(2, "big", std::string(1 << 20, '\0'));
  std::string& payload = *big.mutable_kv_put()->mutable_value();
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31 + 7);
  std::string wire;
  EncodeFrame(small, &wire);
  EncodeFrame(big, &wire);
  EncodeFrame(small, &wire);

  // In one go.
  {
    FrameDecoder d;
    Feed(&d, wire.data(), wire.size());
    std::vector<Envelope> got;
    Drain(&d, &got);
    ExpectSame(got, {small, big, small});
  }
  // In 64 KiB reads (smaller than the frame), as a socket would deliver it.
  {
    FrameDecoder d;
    std::vector<Envelope> got;
    size_t off = 0;
    while (off < wire.size()) {
      char* p = d.WritePtr();
      size_t n = std::min<size_t>({d.WritableBytes(), wire.size() - off, 64 * 1024});
      std::memcpy(p, wire.data() + off, n);
      d.Commit(n);
      off += n;
      Drain(&d, &got);
    }
    ExpectSame(got, {small, big, small});
    EXPECT_EQ(got[1].kv_put().value(), payload);
  }
}

TEST(FrameTest, CorruptLengthIsAnError) {
  FrameDecoder d;
  const unsigned char hdr[4] = {0xff, 0xff, 0xff, 0xff};  // 4 GiB - 1 > kMaxFrameBytes
  Feed(&d, reinterpret_cast<const char*>(hdr), 4);
  Envelope m;
  auto r = d.Next(&m);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);

  FrameDecoder d2;
  uint32_t len = kMaxFrameBytes + 1;
  char le[4];
  std::memcpy(le, &len, 4);
  Feed(&d2, le, 4);
  auto r2 = d2.Next(&m);
  EXPECT_FALSE(r2.ok());
}

TEST(FrameTest, CorruptLengthAfterGoodFrame) {
  std::string wire;
  EncodeFrame(MakeKvPut(1, "a", "b"), &wire);
  wire.append("\xff\xff\xff\xff", 4);
  FrameDecoder d;
  Feed(&d, wire.data(), wire.size());
  Envelope m;
  auto r = d.Next(&m);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value());
  EXPECT_EQ(m.kv_put().key(), "a");
  r = d.Next(&m);
  EXPECT_FALSE(r.ok());
}

TEST(FrameTest, GarbagePayloadIsAnError) {
  // A truncated varint: every byte has its continuation bit set.
  {
    FrameDecoder d;
    std::string wire;
    uint32_t len = 8;
    wire.append(reinterpret_cast<const char*>(&len), 4);
    wire.append(8, '\xff');
    Feed(&d, wire.data(), wire.size());
    Envelope m;
    auto r = d.Next(&m);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kIoError);
  }
  // Invalid wire type 7 in the tag.
  {
    FrameDecoder d;
    std::string wire;
    uint32_t len = 4;
    wire.append(reinterpret_cast<const char*>(&len), 4);
    wire.append("\x0f\x0f\x0f\x0f", 4);
    Feed(&d, wire.data(), wire.size());
    Envelope m;
    auto r = d.Next(&m);
    EXPECT_FALSE(r.ok());
  }
  // A length-delimited field (hello, field 4) claiming more bytes than the frame holds.
  {
    FrameDecoder d;
    std::string wire;
    uint32_t len = 3;
    wire.append(reinterpret_cast<const char*>(&len), 4);
    wire.append("\x22\x7f\x00", 3);
    Feed(&d, wire.data(), wire.size());
    Envelope m;
    auto r = d.Next(&m);
    EXPECT_FALSE(r.ok());
  }
}

}  // namespace
// A frame with a raw payload: the Envelope parses as usual and the payload
// comes back byte for byte, also when it arrives in pieces and between
// ordinary frames; a header-only encoding is the same bytes minus the payload.
TEST(FrameTest, PayloadFramesRoundTrip) {
  std::string payload(300000, '\0');
  for (size_t i = 0; i < payload.size(); i++) payload[i] = static_cast<char>(i % 251);
  Envelope reply;
  reply.set_request_id(9);
  reply.set_is_reply(true);
  reply.mutable_pull_object_reply()->set_total_size(123456789);
  std::string wire;
  EncodeFrame(MakeKvPut(1, "a", "b"), &wire);
  EncodeFrameWithPayload(reply, payload.data(), payload.size(), &wire);
  EncodeFrame(MakeKvPut(2, "c", "d"), &wire);
  std::string header_only;
  EncodeFrameWithPayload(reply, payload.data(), payload.size(), &header_only, true);
  std::string full;
  EncodeFrameWithPayload(reply, payload.data(), payload.size(), &full);
  EXPECT_EQ(header_only + payload, full);

  FrameDecoder dec;
  std::vector<std::pair<Envelope, std::string>> got;
  for (size_t off = 0; off < wire.size(); off += 7777) {
    size_t n = std::min<size_t>(7777, wire.size() - off);
    std::memcpy(dec.WritePtr(n), wire.data() + off, n);
    dec.Commit(n);
    Envelope m;
    std::string_view p;
    while (true) {
      auto r = dec.Next(&m, &p);
      ASSERT_TRUE(r.ok()) << r.status().message();
      if (!r.value()) break;
      got.emplace_back(m, std::string(p));
    }
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].first.kv_put().key(), "a");
  EXPECT_TRUE(got[0].second.empty());
  EXPECT_EQ(got[1].first.request_id(), 9u);
  EXPECT_EQ(got[1].first.pull_object_reply().total_size(), 123456789u);
  EXPECT_EQ(got[1].second, payload);
  EXPECT_EQ(got[2].first.kv_put().key(), "c");
  EXPECT_TRUE(got[2].second.empty());
}

// A payload frame whose envelope length overruns the frame is corrupt.
TEST(FrameTest, PayloadFrameWithBadEnvelopeLengthIsRejected) {
  uint32_t words[2] = {8 | kPayloadFlag, 100};  // frame of 8 bytes, envelope "100"
  std::string wire(reinterpret_cast<const char*>(words), 8);
  wire += "xxxx";
  FrameDecoder dec;
  std::memcpy(dec.WritePtr(wire.size()), wire.data(), wire.size());
  dec.Commit(wire.size());
  Envelope m;
  auto r = dec.Next(&m);
  EXPECT_FALSE(r.ok());
}

}  // namespace fleet::rpc
