#include "common/transport.h"

#include <arpa/inet.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/server_interceptor.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/internal/openssl.h"
#include "common/log.h"
#include "common/metrics.h"

namespace sidecar {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

namespace {

grpc::ChannelArguments ChannelArgs(int max_receive = kMaxMessageBytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_receive);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect promptly after a peer comes back; the default backoff grows to
  // two minutes, longer than a peer should stay marked offline.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  return args;
}

// Parses the PEM certificate gRPC reports for a TLS peer into its key
// hash. Keeps the last few, since every call of a connection reports the
// same certificate. Thread-safe.
class CertificateCache {
 public:
  std::optional<Sha256Digest> KeyOf(absl::string_view pem) {
    {
      absl::MutexLock lock(&mu_);
      auto it = cache_.find(pem);
      if (it != cache_.end()) return it->second;
    }
    absl::StatusOr<DeviceCertificate> cert = DeviceCertificate::Parse(pem);
    std::optional<Sha256Digest> key;
    if (cert.ok()) key = cert->key_sha256;
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= 256) cache_.clear();  // bounded; refills on use
    cache_.emplace(std::string(pem), key);
    return key;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::optional<Sha256Digest>> cache_
      ABSL_GUARDED_BY(mu_);
};

// The key hash of the certificate the TLS peer of `auth` presented.
std::optional<Sha256Digest> KeyOfCaller(const grpc::AuthContext& auth) {
  static CertificateCache* const certs = new CertificateCache();
  std::vector<grpc::string_ref> pem =
      auth.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return std::nullopt;
  return certs->KeyOf(absl::string_view(pem[0].data(), pem[0].size()));
}

// Runs before every call on a peer listener: lets members in, and callers
// who are not members only to the open methods (pairing). Does not block.
class PeerAuthorizer final : public grpc::AuthMetadataProcessor {
 public:
  PeerAuthorizer(const PeerTrust* trust, std::vector<std::string> open)
      : trust_(trust), open_(open.begin(), open.end()) {}

  // Blocking only if a lookup may refresh the set (PeerTrust::set_refresh);
  // else it runs inline.
  bool IsBlocking() const override { return trust_->can_refresh(); }

  // `ctx` is the connection's auth context, shared by its calls, which
  // gRPC may authorize concurrently: it is only read here, never written.
  // (Properties added to it would race with the other calls' reads and pile
  // up, two per call, for the connection's lifetime.) Handlers look the
  // caller up again themselves (AuthenticatedDevice).
  grpc::Status Process(const InputMetadata& md, grpc::AuthContext* ctx,
                       OutputMetadata*, OutputMetadata*) override {
    std::optional<Sha256Digest> key = KeyOfCaller(*ctx);
    if (!key) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "a device certificate (Ed25519) is required");
    }
    std::optional<Uuid> device = trust_->DeviceForKeyOrRefresh(*key);
    if (!device) {
      auto path = md.find(":path");
      std::string method = path == md.end() ? std::string()
                                            : std::string(path->second.data(),
                                                          path->second.size());
      if (!open_.contains(method)) {
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                            "this device is not paired with the library; "
                            "pair it first (sidecarctl pair join)");
      }
    }
    return grpc::Status::OK;
  }

 private:
  const PeerTrust* const trust_;
  const absl::flat_hash_set<std::string> open_;
};

std::optional<std::string> Property(const grpc::AuthContext& auth,
                                    const char* name) {
  std::vector<grpc::string_ref> v = auth.FindPropertyValues(name);
  if (v.empty()) return std::nullopt;
  return std::string(v[0].data(), v[0].size());
}

std::optional<std::string> Property(const grpc::ServerContextBase& ctx,
                                    const char* name) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth) return std::nullopt;
  return Property(*auth, name);
}

bool ValidRequestId(absl::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

// Sends the calling thread's request id (see RequestId) with each call.
// Runs on the thread that starts the call.
class RequestIdSender final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      std::string id = CurrentLogField("request_id");
      if (ValidRequestId(id)) {
        m->GetSendInitialMetadata()->emplace(kRequestIdHeader, std::move(id));
      }
    }
    m->Proceed();
  }
};

class RequestIdSenderFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new RequestIdSender();
  }
};

// A channel that sends request ids, and records grpc_client_* metrics
// when the process has them.
std::shared_ptr<grpc::Channel> CreateChannel(
    const std::string& address,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args) {
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<RequestIdSenderFactory>());
  if (ProcessMetricsSet* metrics = ProcessMetrics()) {
    interceptors.push_back(metrics->grpc_client.ClientInterceptorFactory());
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, creds, args, std::move(interceptors));
}

}  // namespace

std::shared_ptr<grpc::Channel> MakeLocalChannel(const std::string& address) {
  grpc::ChannelArguments args = ChannelArgs();
  // A new channel gets a connection of its own. In gRPC's global pool it
  // would share the subchannel of an older channel to the same address,
  // and after the service restarted, that one may still be waiting out its
  // reconnect backoff: the new channel's first call would then fail at once.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return CreateChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& address,
                                               const DeviceKey& self,
                                               const DeviceCertificate& callee,
                                               TrafficClass traffic) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = callee.pem;  // the one certificate this channel trusts
  tls.pem_private_key = self.private_key_pem();
  tls.pem_cert_chain = self.certificate().pem;
  grpc::ChannelArguments args =
      ChannelArgs(traffic == TrafficClass::kMetrics ? kMaxMetricsAnswerBytes
                                                    : kMaxMessageBytes);
  // The callee's certificate names it by device id, whatever host or
  // address it is reached at.
  args.SetSslTargetNameOverride(DeviceTlsName(callee.device_id));
  // Channels with different arguments never share a connection.
  args.SetInt("sidecar.traffic_class", static_cast<int>(traffic));
  if (traffic == TrafficClass::kBackground) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  }
  return CreateChannel(address, grpc::SslCredentials(tls), args);
}

std::optional<Uuid> AuthenticatedDevice(const grpc::ServerContextBase& ctx,
                                        const PeerTrust& trust) {
  std::optional<Sha256Digest> key = AuthenticatedKey(ctx);
  if (!key) return std::nullopt;
  return trust.DeviceForKey(*key);
}

std::optional<Sha256Digest> AuthenticatedKey(
    const grpc::ServerContextBase& ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth) return std::nullopt;
  return KeyOfCaller(*auth);
}

namespace {

using internal::BioPtr;
using internal::PkeyPtr;
using internal::SslCtxPtr;
using internal::SslPtr;
using internal::X509Ptr;

// Splits "host:port" and "[v6]:port".
bool SplitHostPort(const std::string& address, std::string* host,
                   std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

// Waits until `fd` is ready for `events` or `deadline` passes.
bool WaitFd(int fd, short events, absl::Time deadline) {
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{fd, events, 0};
    int r =
        ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// A TCP connection to the first address of `host:port` that answers.
absl::StatusOr<int> ConnectTcp(const std::string& address,
                               absl::Time deadline) {
  std::string host, port;
  if (!SplitHostPort(address, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", address, "\" is not host:port"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int e = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); e != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, ": ", gai_strerror(e)));
  }
  std::string last = "no address";
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    int s =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 a->ai_protocol);
    if (s < 0) continue;
    if (::connect(s, a->ai_addr, a->ai_addrlen) == 0 ||
        (errno == EINPROGRESS && WaitFd(s, POLLOUT, deadline))) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) {
        fd = s;
        break;
      }
      last = std::strerror(err);
    } else {
      last = errno == EINPROGRESS ? "timed out" : std::strerror(errno);
    }
    ::close(s);
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", address, ": ", last));
  }
  return fd;
}

std::string TlsErrors() { return internal::OpensslErrors("connection closed"); }

// TLS 1.3 client context presenting `self`, trusting nothing: the caller
// checks the server's certificate itself.
absl::StatusOr<SslCtxPtr> ClientContext(const DeviceKey& self) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return absl::InternalError("SSL_CTX_new: " + TlsErrors());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  const std::string& cert_pem = self.certificate().pem;
  const std::string& key_pem = self.private_key_pem();
  BioPtr cb(
      BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  BioPtr kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!cert || !key || SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1) {
    return absl::InternalError("cannot use the device key: " + TlsErrors());
  }
  return ctx;
}

}  // namespace

absl::StatusOr<DeviceCertificate> FetchPeerCertificate(
    const std::string& address, const DeviceKey& self, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<SslCtxPtr> ctx = ClientContext(self);
  if (!ctx.ok()) return ctx.status();
  absl::StatusOr<int> fd = ConnectTcp(address, deadline);
  if (!fd.ok()) return fd.status();
  SslPtr ssl(SSL_new(ctx->get()));
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof(kAlpn));
  SSL_set_fd(ssl.get(), *fd);
  absl::Status result = absl::OkStatus();
  while (true) {
    int r = SSL_connect(ssl.get());
    if (r == 1) break;
    int e = SSL_get_error(ssl.get(), r);
    short events = e == SSL_ERROR_WANT_READ    ? POLLIN
                   : e == SSL_ERROR_WANT_WRITE ? POLLOUT
                                               : 0;
    if (events == 0) {
      result = absl::UnavailableError(absl::StrCat(
          "TLS handshake with ", address, " failed: ", TlsErrors()));
      break;
    }
    if (!WaitFd(*fd, events, deadline)) {
      result = absl::DeadlineExceededError(
          absl::StrCat("TLS handshake with ", address, " timed out"));
      break;
    }
  }
  X509Ptr peer;
  if (result.ok()) peer.reset(SSL_get1_peer_certificate(ssl.get()));
  ssl.reset();
  ::close(*fd);
  if (!result.ok()) return result;
  if (!peer) {
    return absl::UnavailableError(
        absl::StrCat(address, " presented no certificate"));
  }
  unsigned char* der = nullptr;
  int len = i2d_X509(peer.get(), &der);
  if (len <= 0) return absl::InternalError("i2d_X509: " + TlsErrors());
  std::string bytes(reinterpret_cast<char*>(der), len);
  OPENSSL_free(der);
  absl::StatusOr<DeviceCertificate> cert = DeviceCertificate::Parse(bytes);
  if (!cert.ok()) {
    return absl::PermissionDeniedError(absl::StrCat(
        address, " is not a sidecar device: ", cert.status().message()));
  }
  return cert;
}

std::optional<DeviceCertificate> AuthenticatedCertificate(
    const grpc::ServerContextBase& ctx) {
  std::optional<std::string> pem =
      Property(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (!pem) return std::nullopt;
  absl::StatusOr<DeviceCertificate> cert = DeviceCertificate::Parse(*pem);
  if (!cert.ok()) return std::nullopt;
  return *cert;
}

std::string AdvertisedAddress(const std::string& listen_address, int port) {
  size_t colon = listen_address.rfind(':');
  std::string host = colon == std::string::npos
                         ? listen_address
                         : listen_address.substr(0, colon);
  if (host == "0.0.0.0" || host == "[::]" || host.empty()) {
    char name[256] = {0};
    gethostname(name, sizeof(name) - 1);
    host = name;
  }
  return absl::StrCat(host, ":", port);
}

bool IsLocalOnlyAddress(const std::string& address) {
  if (absl::StartsWith(address, "unix:")) return true;
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6);
  }
  return false;
}

std::string RequestId(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kRequestIdHeader);
  if (it == md.end()) return "";
  absl::string_view id(it->second.data(), it->second.size());
  return ValidRequestId(id) ? std::string(id) : "";
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMicroseconds(timeout));
}

namespace {

// SIGTERM and SIGINT: the signals that stop a service.
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

StartupSignalWatch::StartupSignalWatch() {
  thread_ = std::thread([this] {
    const sigset_t set = ShutdownSignals();
    const timespec poll = {0, 100 * 1000 * 1000};
    while (armed_.load()) {
      int sig = sigtimedwait(&set, nullptr, &poll);
      if (sig <= 0) continue;  // timeout or EINTR
      if (!armed_.load()) {
        // Serving already: leave it to WaitForShutdownSignal (the signal
        // is blocked everywhere, so it stays pending).
        ::kill(::getpid(), sig);
        return;
      }
      SC_LOG(INFO) << "signal " << sig << " during start-up: exiting";
      std::fflush(stderr);
      std::_Exit(0);
    }
  });
}

void StartupSignalWatch::Disarm() {
  armed_ = false;
  if (thread_.joinable()) thread_.join();
}

void InitServiceProcess(int argc, char** argv, const char* usage) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  BlockShutdownSignals();
  ParseConfig(argc, argv, usage);
}

namespace {

// Counts the calls in flight: one interceptor lives exactly as long as its
// call (gRPC creates it as the call starts and deletes it as it ends).
class CallCounter final : public grpc::experimental::Interceptor {
 public:
  explicit CallCounter(std::shared_ptr<std::atomic<int64_t>> n)
      : n_(std::move(n)) {
    n_->fetch_add(1, std::memory_order_relaxed);
  }
  ~CallCounter() override { n_->fetch_sub(1, std::memory_order_release); }
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    m->Proceed();
  }

 private:
  const std::shared_ptr<std::atomic<int64_t>> n_;
};

class CallCounterFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallCounterFactory(std::shared_ptr<std::atomic<int64_t>> n)
      : n_(std::move(n)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new CallCounter(n_);
  }

 private:
  const std::shared_ptr<std::atomic<int64_t>> n_;
};

}  // namespace

ServerHost::ServerHost(LocalListener listener)
    : listen_address_(listener.address), local_(std::move(listener)) {}

ServerHost::ServerHost(PeerListener listener)
    : listen_address_(listener.address), peer_(std::move(listener)) {}

std::shared_ptr<grpc::ServerCredentials> ServerHost::Credentials() {
  if (local_) return grpc::InsecureServerCredentials();
  // A client certificate is required but not verified against a CA (there
  // is none); PeerAuthorizer admits it by its key on every call. TLS still
  // proves the client holds the key.
  grpc::SslServerCredentialsOptions tls(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  tls.pem_key_cert_pairs.push_back(
      {peer_->key->private_key_pem(), peer_->key->certificate().pem});
  std::shared_ptr<grpc::ServerCredentials> creds =
      grpc::SslServerCredentials(tls);
  creds->SetAuthMetadataProcessor(
      std::make_shared<PeerAuthorizer>(peer_->trust, peer_->open_methods));
  return creds;
}

ServerHost::~ServerHost() {
  if (server_) Shutdown(absl::ZeroDuration());
}

void ServerHost::AddService(grpc::Service* service) {
  services_.push_back(service);
}

void ServerHost::AddService(grpc::Service* service,
                            const std::string& health_name) {
  services_.push_back(service);
  health_names_.push_back(health_name);
}

void ServerHost::AddHealthName(const std::string& health_name) {
  health_names_.push_back(health_name);
}

absl::Status ServerHost::Start() {
  if (local_ && !local_->allow_network &&
      !IsLocalOnlyAddress(listen_address_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the local API listens on ", listen_address_,
        ", which is on the network: use a unix socket (unix:/path) or a "
        "loopback address (127.0.0.1:port)"));
  }
  if (peer_ && (peer_->key == nullptr || peer_->trust == nullptr)) {
    return absl::InternalError("peer listener without a key or trust set");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address_, Credentials(), &port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  for (auto* s : services_) builder.RegisterService(s);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<CallCounterFactory>(calls_in_flight_));
  if (ProcessMetricsSet* metrics = ProcessMetrics()) {
    interceptors.push_back(metrics->grpc_server.ServerInterceptorFactory());
  }
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  const bool unix_socket = absl::StartsWith(listen_address_, "unix:");
  if (unix_socket) {
    // A socket file left by a process that died is in the way; one that a
    // live process serves on is not ours to take.
    std::string path = listen_address_.substr(5);
    std::shared_ptr<grpc::Channel> probe = MakeLocalChannel(listen_address_);
    if (probe->WaitForConnected(std::chrono::system_clock::now() +
                                std::chrono::milliseconds(200))) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", listen_address_,
          ": another process serves there (is this service running twice?)"));
    }
    ::unlink(path.c_str());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  {
    absl::MutexLock lock(&health_mu_);
    server_ = std::move(server);
  }
  if (!server_ || (!unix_socket && port_ == 0)) {
    absl::MutexLock lock(&health_mu_);
    server_.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen_address_,
        ": address in use or not valid (use host:port, port 0 for any, or "
        "unix:/path)"));
  }
  poller_ = std::make_unique<PollerThread>();
  SetServing(true);
  return absl::OkStatus();
}

void ServerHost::SetServing(bool serving) {
  absl::MutexLock lock(&health_mu_);
  serving_ = serving;
  ApplyHealth();
}

void ServerHost::SetServiceServing(bool ready) {
  absl::MutexLock lock(&health_mu_);
  ready_ = ready;
  ApplyHealth();
}

void ServerHost::ApplyHealth() {
  if (!server_ || server_->GetHealthCheckService() == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving_);
  for (const std::string& name : health_names_) {
    health->SetServingStatus(name, serving_ && ready_);
  }
}

int ServerHost::WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

void ServerHost::Shutdown(absl::Duration drain) {
  if (!server_) return;
  SetServing(false);
  const absl::Time deadline = absl::Now() + drain;
  while (calls_in_flight_->load(std::memory_order_acquire) > 0 &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  // No call left (or the drain is over): whatever started meanwhile is
  // cancelled, and connections close without waiting for their clients.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  {
    absl::MutexLock lock(&health_mu_);  // SetServiceServing may run now
    server_.reset();
  }
  poller_.reset();
}

void ServerHost::ShutdownAll(const std::vector<ServerHost*>& hosts,
                             absl::Duration drain) {
  for (ServerHost* h : hosts) h->SetServing(false);
  std::vector<std::thread> threads;
  for (ServerHost* h : hosts) {
    threads.emplace_back([h, drain] { h->Shutdown(drain); });
  }
  for (std::thread& t : threads) t.join();
}

absl::Status WritePortFile(const std::string& path, int port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename to ", path));
  }
  return absl::OkStatus();
}

}  // namespace sidecar
