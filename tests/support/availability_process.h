// AvailabilityProcess: one device's availability service as a real child
// process on loopback, with its own database on a shared PgServer, for
// integration tests and benchmarks.
#ifndef SIDECAR_TESTS_SUPPORT_AVAILABILITY_PROCESS_H_
#define SIDECAR_TESTS_SUPPORT_AVAILABILITY_PROCESS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sidecar/v1/availability.grpc.pb.h"
#include "sidecar/v1/peer.grpc.pb.h"
#include "tests/support/pg_server.h"
#include "tests/support/service_process.h"

namespace sidecar::testing {

struct DeviceOptions {
  std::string name;
  std::vector<std::string> peers;  // addresses "127.0.0.1:port"
  // Extra flags, e.g. {"contact_learned_peers", "false"}.
  std::map<std::string, std::string> flags;
};

class AvailabilityProcess {
 public:
  // `binary`: path of sidecar-availability. `work_dir`: parent of the
  // device's sidecar root and log. The port is fixed at construction so
  // peers can be configured before the process starts and it keeps its
  // address across restarts.
  static absl::StatusOr<std::unique_ptr<AvailabilityProcess>> Create(
      const std::string& binary, PgServer* pg, const std::string& work_dir,
      DeviceOptions options);

  ~AvailabilityProcess() = default;  // kills a running process

  // Starts the process and waits until it serves (port file written).
  absl::Status Start() { return StartWithExtraFlags({}); }
  // As Start, adding `flags` for this run only.
  absl::Status StartWithExtraFlags(
      const std::map<std::string, std::string>& flags);
  // SIGTERM and wait (graceful); returns the exit status.
  int Stop() { return process_.Stop(); }
  // SIGKILL.
  void Kill() { process_.Kill(); }
  bool running() { return process_.running(); }

  const std::string& address() const { return address_; }
  int port() const { return port_; }
  const std::string& sidecar_root() const { return root_; }
  const std::string& log_path() const { return log_; }
  const std::string& conninfo() const { return conninfo_; }
  // The process id while running, else -1.
  int pid() const { return process_.pid(); }
  const std::string& name() const { return options_.name; }
  void set_peers(std::vector<std::string> peers) {
    options_.peers = std::move(peers);
  }

  v1::Availability::Stub* api() { return api_.get(); }
  v1::Peer::Stub* peer_api() { return peer_api_.get(); }

 private:
  AvailabilityProcess() = default;
  std::string binary_;
  PgServer* pg_ = nullptr;
  std::string conninfo_;
  std::string dir_;
  std::string root_;
  std::string log_;
  std::string port_file_;
  std::string address_;
  int port_ = 0;
  DeviceOptions options_;
  ServiceProcess process_;
  std::unique_ptr<v1::Availability::Stub> api_;
  std::unique_ptr<v1::Peer::Stub> peer_api_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_AVAILABILITY_PROCESS_H_
