// The one place where gRPC servers and channels are made.
//
// Every service has two listeners, chosen on purpose:
//  - the *local* listener serves the local API (the application, sidecarctl,
//    the device's other service): a unix socket or loopback, plaintext,
//    never on the network unless explicitly allowed (a container's private
//    network);
//  - the *peer* listener serves other devices: mutual TLS (TLS 1.3 between
//    any two devices, both being OpenSSL 3), each side presenting its
//    self-signed Ed25519 device certificate. There is no CA: a client is let
//    in only if its key is a member's (PeerTrust), checked on every call,
//    so a member removed is refused at once even on an open connection.
//    Channels to a peer pin the one certificate of the member they mean to
//    reach, and check its name, so a callee with any other key fails the
//    handshake.
//
// Path chosen: gRPC's stable SslCredentials/SslServerCredentials with an
// AuthMetadataProcessor, not the experimental TlsCredentials verifier API
// of gRPC 1.51. Pinning needs no custom verifier (the pinned certificate is
// the only root), and membership changes take effect per call without
// rebuilding credentials.
#ifndef SIDECAR_COMMON_TRANSPORT_H_
#define SIDECAR_COMMON_TRANSPORT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/device_key.h"
#include "common/peer_trust.h"
#include "common/poller_thread.h"

namespace sidecar {

// Largest message either side accepts. Gossip batches are bounded well below.
inline constexpr int kMaxMessageBytes = 16 << 20;

// Status conversions between Abseil and gRPC (the codes are the same).
grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

// A plaintext channel to a local listener ("unix:/path" or a loopback
// host:port; in containers, the device's private network). Channels are
// cheap to keep and reconnect by themselves; callers still set a deadline
// on every call.
std::shared_ptr<grpc::Channel> MakeLocalChannel(const std::string& address);

// What a peer channel carries. Each class gets its own connection, so that
// bytes queued for one class never delay another's on the way:
//   kDefault:     everything but fetches of other priorities;
//   kInteractive: fetches a person waits for;
//   kBackground:  prefetch. Flow-control windows stay small (no BDP
//                 probing), so that when prefetch pauses for foreground
//                 work, little of it is still in flight to drain;
//   kMetrics:     member metrics (member_metrics.h), whose answers are
//                 capped at kMaxMetricsAnswerBytes.
enum class TrafficClass { kDefault, kInteractive, kBackground, kMetrics };
inline constexpr int kMaxMetricsAnswerBytes = 4 << 20;

// A mutual-TLS channel to the peer listener at `address` of the member
// whose certificate is `callee`: the handshake fails unless the server
// there holds that very key. `self` is this device's identity.
std::shared_ptr<grpc::Channel> MakePeerChannel(
    const std::string& address, const DeviceKey& self,
    const DeviceCertificate& callee,
    TrafficClass traffic = TrafficClass::kDefault);

// Connects to the peer listener at `address` with TLS, presenting `self`,
// and returns the certificate the server there presented, without trusting
// it: pairing checks it against the code before anything else is sent.
absl::StatusOr<DeviceCertificate> FetchPeerCertificate(
    const std::string& address, const DeviceKey& self, absl::Duration timeout);

// The member a call on the peer listener comes from: the device `trust`
// holds for the key of the caller's TLS certificate, looked up now, so a
// device removed since the connection opened is not one. nullopt for a
// non-member (let in only to an open method, pairing).
std::optional<Uuid> AuthenticatedDevice(const grpc::ServerContextBase& ctx,
                                        const PeerTrust& trust);
// The SHA-256 of the caller's public key (any caller on the peer listener).
std::optional<Sha256Digest> AuthenticatedKey(
    const grpc::ServerContextBase& ctx);
// The caller's certificate, as its TLS session presented it.
std::optional<DeviceCertificate> AuthenticatedCertificate(
    const grpc::ServerContextBase& ctx);

// Where others should reach a listener bound at `listen_address` on `port`:
// the same host (0.0.0.0, [::] or empty become this machine's host name)
// with the bound port.
std::string AdvertisedAddress(const std::string& listen_address, int port);

// Whether `address` is a unix socket or a loopback host:port.
bool IsLocalOnlyAddress(const std::string& address);

// Request ids: a call made on a thread whose log fields hold a
// "request_id" (ScopedLogFields) carries it as metadata x-request-id, on
// every channel made here; RequestId reads it back on the server, so the
// services' logs of one fetch share it. At most 64 characters of
// [A-Za-z0-9._-]; anything else is ignored ("").
inline constexpr char kRequestIdHeader[] = "x-request-id";
std::string RequestId(const grpc::ServerContextBase& ctx);

// Sets a deadline of `timeout` from now on `ctx`.
void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout);

// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts
// later. Call first in main(), before any thread exists, then use
// ServerHost::WaitForShutdownSignal.
void BlockShutdownSignals();

// Until Disarm(), SIGTERM or SIGINT ends the process at once with status 0:
// start-up (waiting for PostgreSQL up to --db_connect_timeout, migrations,
// loading state) has nothing to drain, and a container runtime must not
// wait out the timeout. Create after InitServiceProcess; Disarm() just
// before serving, after which a signal waits for
// ServerHost::WaitForShutdownSignal.
class StartupSignalWatch {
 public:
  StartupSignalWatch();
  ~StartupSignalWatch() { Disarm(); }
  StartupSignalWatch(const StartupSignalWatch&) = delete;
  StartupSignalWatch& operator=(const StartupSignalWatch&) = delete;
  void Disarm();

 private:
  std::atomic<bool> armed_{true};
  std::thread thread_;
};

// What a service's main() does first, before any thread exists: blocks the
// shutdown signals (above), turns off Abseil's lock-order checking (Debian's
// build checks every Mutex acquisition against a graph of all locks; the
// tests keep it on) and reads flags and configuration (ParseConfig).
void InitServiceProcess(int argc, char** argv, const char* usage);

// A gRPC server with health checking and reflection, and graceful shutdown:
// on SIGTERM it reports NOT_SERVING, then drains in-flight calls until a
// deadline and cancels the rest.
struct LocalListener {
  std::string address;  // "unix:/path" or a loopback host:port
  // Allows any other address; for a container's private network only.
  bool allow_network = false;
};

struct PeerListener {
  std::string address;               // host:port, usually on the network
  const DeviceKey* key = nullptr;    // must outlive the host
  const PeerTrust* trust = nullptr;  // must outlive the host
  // Full method names ("/sidecar.v1.Peer/Join") that a caller who is not a
  // member may call; it still needs a TLS client certificate.
  std::vector<std::string> open_methods;
};

class ServerHost {
 public:
  explicit ServerHost(LocalListener listener);
  explicit ServerHost(PeerListener listener);
  ~ServerHost();

  // Services (sync, callback or mixed) must outlive the host. Call before
  // Start().
  void AddService(grpc::Service* service);
  // As above, and grpc.health.v1 answers for `health_name` (the service's
  // full name, e.g. "sidecar.v1.Availability") too: SERVING while the
  // server serves and SetServiceServing has not said otherwise.
  void AddService(grpc::Service* service, const std::string& health_name);
  // Reports `health_name` as above for a service that another listener of
  // this process serves: the local listener answers an orchestrator for
  // the peer API too.
  void AddHealthName(const std::string& health_name);

  // Binds and starts serving. With port 0 in the address, port() tells the
  // port the kernel chose. A local listener on a network address (without
  // allow_network) is refused with INVALID_ARGUMENT.
  absl::Status Start();
  int port() const { return port_; }
  const std::string& address() const { return listen_address_; }

  // Overall health (the "" service) as reported by grpc.health.v1, and
  // that of every named service (false overrides their readiness).
  void SetServing(bool serving) ABSL_LOCKS_EXCLUDED(health_mu_);
  // Readiness of the named services (see readiness.h); kept across Start.
  void SetServiceServing(bool ready) ABSL_LOCKS_EXCLUDED(health_mu_);

  // Waits for SIGTERM or SIGINT and returns the signal. The caller then
  // ends its long-lived streams and calls Shutdown.
  int WaitForShutdownSignal();
  // NOT_SERVING, then waits up to `drain` for the calls in flight to end,
  // then cancels what is left and closes every connection. Idle
  // connections are not waited for: a client that holds one without reading
  // (an idle channel nobody polls) would otherwise keep the drain open to
  // its end.
  void Shutdown(absl::Duration drain);
  // Calls that have started and not yet ended.
  int64_t calls_in_flight() const { return calls_in_flight_->load(); }
  // Shutdown of several hosts at once: the drain is `drain` overall.
  static void ShutdownAll(const std::vector<ServerHost*>& hosts,
                          absl::Duration drain);

 private:
  std::shared_ptr<grpc::ServerCredentials> Credentials();
  // Sets the health service's statuses. REQUIRES: health_mu_ held.
  void ApplyHealth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(health_mu_);

  std::string listen_address_;
  std::optional<LocalListener> local_;
  std::optional<PeerListener> peer_;
  std::vector<grpc::Service*> services_;
  std::vector<std::string> health_names_;
  absl::Mutex health_mu_;
  bool serving_ ABSL_GUARDED_BY(health_mu_) = false;
  bool ready_ ABSL_GUARDED_BY(health_mu_) = true;
  std::unique_ptr<grpc::Server> server_;
  // Keeps gRPC polling while the server runs (poller_thread.h).
  std::unique_ptr<PollerThread> poller_;
  int port_ = 0;
  // Counted by a server interceptor; shared with it, as gRPC owns it.
  std::shared_ptr<std::atomic<int64_t>> calls_in_flight_ =
      std::make_shared<std::atomic<int64_t>>(0);
};

// Writes "port\n" to `path` atomically, so tests and scripts that start a
// process on port 0 can learn where it listens.
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_TRANSPORT_H_
