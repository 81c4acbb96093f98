// The one place where gRPC servers and channels are made. Transport security
// (mutual TLS between paired devices) will change only this file's .cc.
#ifndef SIDECAR_COMMON_TRANSPORT_H_
#define SIDECAR_COMMON_TRANSPORT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace sidecar {

// Largest message either side accepts. Gossip batches are bounded well below.
inline constexpr int kMaxMessageBytes = 16 << 20;

// Status conversions between Abseil and gRPC (the codes are the same).
grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);

// A channel to a peer or local service. Channels are cheap to keep and
// reconnect by themselves; callers still set a deadline on every call.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

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
class ServerHost {
 public:
  explicit ServerHost(std::string listen_address);
  ~ServerHost();

  // Services (sync, callback or mixed) must outlive the host. Call before
  // Start().
  void AddService(grpc::Service* service);

  // Binds and starts serving. With port 0 in the address, port() tells the
  // port the kernel chose.
  absl::Status Start();
  int port() const { return port_; }

  // Overall health (the "" service) as reported by grpc.health.v1.
  void SetServing(bool serving);

  // Waits for SIGTERM or SIGINT and returns the signal. The caller then
  // ends its long-lived streams and calls Shutdown.
  int WaitForShutdownSignal();
  // NOT_SERVING, then drain up to `drain`, then cancel what is left.
  void Shutdown(absl::Duration drain);

 private:
  std::string listen_address_;
  std::vector<grpc::Service*> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Writes "port\n" to `path` atomically, so tests and scripts that start a
// process on port 0 can learn where it listens.
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_TRANSPORT_H_
