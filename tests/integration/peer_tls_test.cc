// The transport in common/: the peer listener's mutual TLS with pinned
// device certificates and per-call membership checks, and the local
// listener's refusal of network addresses. Real gRPC servers and channels
// on loopback; keys made by DeviceKey in a temporary state directory.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/device_key.h"
#include "common/peer_trust.h"
#include "common/transport.h"
#include "sidecar/v1/peer.grpc.pb.h"
#include "tests/support/process.h"

namespace sidecar {
namespace {

// Answers Ping with the caller's authenticated device id (empty for a
// non-member), so tests can see what the handler sees.
class EchoPeer final : public v1::Peer::Service {
 public:
  explicit EchoPeer(const PeerTrust* trust) : trust_(trust) {}
  grpc::Status Ping(grpc::ServerContext* ctx, const v1::PingRequest*,
                    v1::PingResponse* resp) override {
    std::optional<Uuid> who = AuthenticatedDevice(*ctx, *trust_);
    if (who) resp->mutable_self()->set_device_id(std::string(who->AsBytes()));
    return grpc::Status::OK;
  }
  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest*,
                    v1::JoinResponse* resp) override {
    std::optional<Sha256Digest> key = AuthenticatedKey(*ctx);
    if (key) resp->set_proof(std::string(DigestBytes(*key)));
    // One (empty) record when the handler sees a member, none otherwise.
    if (AuthenticatedDevice(*ctx, *trust_)) resp->add_records();
    return grpc::Status::OK;
  }

 private:
  const PeerTrust* const trust_;
};

class PeerTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t =
        (std::filesystem::temp_directory_path() / "peer-tls-XXXXXX").string();
    ASSERT_NE(::mkdtemp(t.data()), nullptr);
    dir_ = new std::string(t);
    for (const char* n : {"a", "b", "c"}) {
      auto k = DeviceKey::Create(absl::StrCat(t, "/", n), n);
      ASSERT_TRUE(k.ok()) << k.status();
      keys_[n[0] - 'a'] = new DeviceKey(std::move(*k));
    }
  }
  static void TearDownTestSuite() {
    for (DeviceKey*& k : keys_) {
      delete k;
      k = nullptr;
    }
    std::error_code ec;
    std::filesystem::remove_all(*dir_, ec);
    delete dir_;
  }

  void SetUp() override {
    // A is serving; A and B are members, C is not.
    trust_.Set({a().certificate(), b().certificate()});
    host_ = std::make_unique<ServerHost>(
        PeerListener{"127.0.0.1:0", &a(), &trust_, {"/sidecar.v1.Peer/Join"}});
    host_->AddService(&service_);
    ASSERT_TRUE(host_->Start().ok());
    address_ = absl::StrCat("127.0.0.1:", host_->port());
  }
  void TearDown() override { host_->Shutdown(absl::ZeroDuration()); }

  static const DeviceKey& a() { return *keys_[0]; }
  static const DeviceKey& b() { return *keys_[1]; }
  static const DeviceKey& c() { return *keys_[2]; }

  // Pings A as `from`, pinning `pinned` as the callee.
  grpc::Status Ping(const DeviceKey& from, const DeviceCertificate& pinned,
                    v1::PingResponse* resp = nullptr) {
    auto stub = v1::Peer::NewStub(MakePeerChannel(address_, from, pinned));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::PingResponse r;
    grpc::Status s = stub->Ping(&ctx, {}, resp ? resp : &r);
    return s;
  }

  static inline std::string* dir_ = nullptr;
  static inline DeviceKey* keys_[3] = {nullptr, nullptr, nullptr};
  PeerTrust trust_;
  EchoPeer service_{&trust_};
  std::unique_ptr<ServerHost> host_;
  std::string address_;
};

TEST_F(PeerTlsTest, MemberIsAdmittedAndAuthenticatedByItsKey) {
  v1::PingResponse resp;
  grpc::Status s = Ping(b(), a().certificate(), &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_EQ(resp.self().device_id(), std::string(b().device_id().AsBytes()));
}

TEST_F(PeerTlsTest, NonMemberIsRefusedUnauthenticated) {
  grpc::Status s = Ping(c(), a().certificate());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << s.error_message();
}

TEST_F(PeerTlsTest, NonMemberMayCallOnlyTheOpenMethod) {
  auto stub =
      v1::Peer::NewStub(MakePeerChannel(address_, c(), a().certificate()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::JoinResponse resp;
  grpc::Status s = stub->Join(&ctx, {}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The handler sees the caller's key, authenticated by TLS.
  EXPECT_EQ(resp.proof(),
            std::string(DigestBytes(c().certificate().key_sha256)));
}

TEST_F(PeerTlsTest, ChannelPinnedToAnotherDeviceFailsTheHandshake) {
  // B means to reach C, but A answers at that address: no call is made.
  grpc::Status s = Ping(b(), c().certificate());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

TEST_F(PeerTlsTest, RemovedMemberIsRefusedOnItsOpenConnection) {
  auto stub =
      v1::Peer::NewStub(MakePeerChannel(address_, b(), a().certificate()));
  auto ping = [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::PingResponse r;
    return stub->Ping(&ctx, {}, &r);
  };
  ASSERT_TRUE(ping().ok());
  uint64_t v = trust_.version();
  trust_.Set({a().certificate()});
  EXPECT_GT(trust_.version(), v);
  EXPECT_EQ(ping().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  trust_.Set({a().certificate(), b().certificate()});
  EXPECT_TRUE(ping().ok());
}

// Calls of one connection share its auth context and are authorized
// concurrently: each must still be let in and named, and nothing may be
// written to the shared context (ThreadSanitizer found the per-call
// properties racing, which crashed the transfer service in an iterator).
TEST_F(PeerTlsTest, ConcurrentCallsOnOneConnectionAreEachNamed) {
  auto stub =
      v1::Peer::NewStub(MakePeerChannel(address_, b(), a().certificate()));
  constexpr int kThreads = 8;
  constexpr int kCalls = 50;
  std::atomic<int> named{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, absl::Seconds(20));
        v1::PingResponse r;
        if (stub->Ping(&ctx, {}, &r).ok() &&
            r.self().device_id() == b().device_id().AsBytes()) {
          ++named;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(named.load(), kThreads * kCalls);
}

// The device is looked up on every call, not remembered per connection: a
// member removed while connected is no longer named on an open method.
TEST_F(PeerTlsTest, RemovedMemberIsNotNamedOnAnOpenMethod) {
  auto stub =
      v1::Peer::NewStub(MakePeerChannel(address_, b(), a().certificate()));
  auto who = [&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::JoinResponse r;
    grpc::Status s = stub->Join(&ctx, {}, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r.records_size() == 1;
  };
  EXPECT_TRUE(who());
  trust_.Set({a().certificate()});
  EXPECT_FALSE(who());
  trust_.Set({a().certificate(), b().certificate()});
  EXPECT_TRUE(who());
}

TEST_F(PeerTlsTest, PlaintextClientIsRefused) {
  auto stub = v1::Peer::NewStub(MakeLocalChannel(address_));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::PingResponse r;
  EXPECT_EQ(stub->Ping(&ctx, {}, &r).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(PeerTlsTest, FetchPeerCertificateReturnsTheServersCertificateOverTls13) {
  // The fetch insists on TLS 1.3, so success also shows the listener
  // negotiates it.
  auto cert = FetchPeerCertificate(address_, c(), absl::Seconds(5));
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ(cert->device_id, a().device_id());
  EXPECT_EQ(cert->der, a().certificate().der);
}

TEST_F(PeerTlsTest, FetchPeerCertificateFailsClearlyWithNothingListening) {
  ServerHost other(LocalListener{"127.0.0.1:0"});
  ASSERT_TRUE(other.Start().ok());
  int port = other.port();
  other.Shutdown(absl::ZeroDuration());
  auto cert = FetchPeerCertificate(absl::StrCat("127.0.0.1:", port), c(),
                                   absl::Seconds(2));
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kUnavailable)
      << cert.status();
}

TEST(LocalListenerTest, NetworkAddressesAreRefused) {
  for (const char* addr : {"0.0.0.0:0", "[::]:0", "192.168.1.10:0"}) {
    ServerHost host(LocalListener{addr});
    absl::Status s = host.Start();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << addr;
    EXPECT_NE(s.message().find("unix socket"), absl::string_view::npos);
  }
  ServerHost allowed(LocalListener{"0.0.0.0:0", /*allow_network=*/true});
  EXPECT_TRUE(allowed.Start().ok());
}

TEST(LocalListenerTest, LoopbackAndUnixSocketsServe) {
  EXPECT_TRUE(IsLocalOnlyAddress("127.0.0.1:7101"));
  EXPECT_TRUE(IsLocalOnlyAddress("[::1]:7101"));
  EXPECT_TRUE(IsLocalOnlyAddress("localhost:7101"));
  EXPECT_TRUE(IsLocalOnlyAddress("unix:/run/x.sock"));
  EXPECT_FALSE(IsLocalOnlyAddress("10.0.0.1:7101"));
  EXPECT_FALSE(IsLocalOnlyAddress("desktop:7101"));
  ServerHost tcp(LocalListener{"127.0.0.1:0"});
  ASSERT_TRUE(tcp.Start().ok());
  std::string sock =
      (std::filesystem::temp_directory_path() / "local-listener-test.sock")
          .string();
  ServerHost unix_host(LocalListener{"unix:" + sock});
  ASSERT_TRUE(unix_host.Start().ok());
  auto ch = MakeLocalChannel("unix:" + sock);
  EXPECT_TRUE(ch->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::seconds(5)));
  // A second service on the same socket is refused, not silently served.
  ServerHost twice(LocalListener{"unix:" + sock});
  EXPECT_EQ(twice.Start().code(), absl::StatusCode::kUnavailable);
  unix_host.Shutdown(absl::ZeroDuration());
  std::filesystem::remove(sock);
}

// Answers Ping after `delay`, as a call still in flight at shutdown.
class SlowPeer final : public v1::Peer::Service {
 public:
  explicit SlowPeer(absl::Duration delay) : delay_(delay) {}
  grpc::Status Ping(grpc::ServerContext*, const v1::PingRequest*,
                    v1::PingResponse*) override {
    absl::SleepFor(delay_);
    return grpc::Status::OK;
  }

 private:
  const absl::Duration delay_;
};

// A graceful stop waits for the calls in flight, up to the drain, but not
// for idle connections: a client holding one without reading it (an idle
// channel nobody polls) kept every stop of the services open for the whole
// drain (10 s).
TEST(ServerHostShutdownTest, WaitsForCallsInFlightNotForIdleConnections) {
  SlowPeer service(absl::Milliseconds(700));
  auto start = [&](ServerHost* host) {
    host->AddService(&service);
    ASSERT_TRUE(host->Start().ok());
  };
  auto connect = [](const ServerHost& host) {
    auto ch = MakeLocalChannel(absl::StrCat("127.0.0.1:", host.port()));
    EXPECT_TRUE(ch->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::seconds(5)));
    return ch;
  };

  // Only an idle connection, held by another process that does not read it:
  // the stop does not wait for it.
  {
    ServerHost host(LocalListener{"127.0.0.1:0"});
    ASSERT_NO_FATAL_FAILURE(start(&host));
    std::string log = (std::filesystem::temp_directory_path() /
                       absl::StrCat("idle-client-", ::getpid(), ".log"))
                          .string();
    std::filesystem::remove(log);
    absl::StatusOr<testing::ChildProcess> client = testing::ChildProcess::Spawn(
        {IDLE_CLIENT_BIN, absl::StrCat("127.0.0.1:", host.port()), "30"},
        {{"GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "0"}}, log);
    ASSERT_TRUE(client.ok()) << client.status();
    absl::Time t0 = absl::Now();
    while (testing::ReadTail(log).find("connected") == std::string::npos &&
           absl::Now() - t0 < absl::Seconds(10)) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_NE(testing::ReadTail(log).find("connected"), std::string::npos)
        << testing::ReadTail(log);
    t0 = absl::Now();
    host.Shutdown(absl::Seconds(10));
    absl::Duration took = absl::Now() - t0;
    std::cerr << "stop beside another process's idle connection took " << took
              << "\n";
    EXPECT_LT(took, absl::Seconds(2));
    client->Kill();
    std::filesystem::remove(log);
  }

  // A call in flight: it finishes (not cancelled) before the stop returns.
  ServerHost host(LocalListener{"127.0.0.1:0"});
  ASSERT_NO_FATAL_FAILURE(start(&host));
  auto idle = connect(host);
  auto stub = v1::Peer::NewStub(connect(host));
  grpc::Status call_status;
  std::thread call([&] {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::PingResponse resp;
    call_status = stub->Ping(&ctx, {}, &resp);
  });
  absl::Time t0 = absl::Now();
  while (host.calls_in_flight() == 0 && absl::Now() - t0 < absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(host.calls_in_flight(), 1);
  host.Shutdown(absl::Seconds(10));
  absl::Duration took = absl::Now() - t0;
  call.join();
  std::cerr << "stop with a 700 ms call in flight took " << took << "\n";
  EXPECT_TRUE(call_status.ok()) << call_status.error_message();
  EXPECT_GE(took, absl::Milliseconds(500));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_EQ(host.calls_in_flight(), 0);
}

}  // namespace
}  // namespace sidecar
