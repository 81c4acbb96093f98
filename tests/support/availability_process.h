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
#include "absl/strings/str_cat.h"
#include "common/device_key.h"
#include "sidecar/v1/availability.grpc.pb.h"
#include "sidecar/v1/peer.grpc.pb.h"
#include "tests/support/pg_server.h"
#include "tests/support/service_process.h"

namespace sidecar::testing {

struct DeviceOptions {
  std::string name;
  // --peers: where JoinLibrary without an address looks (Pair() gives the
  // address, so tests rarely need it).
  std::vector<std::string> peers;
  // Extra flags, e.g. {"contact_learned_peers", "false"}.
  std::map<std::string, std::string> flags;
};

class AvailabilityProcess {
 public:
  // `binary`: path of sidecar-availability. `work_dir`: parent of the
  // device's sidecar root, state directory (its key, local socket) and log.
  // Every start binds the peer listener on port 0 and reads the port the
  // kernel chose: address() changes across restarts, and peers learn the
  // new one from the device's own pings. Devices talk once paired (Pair).
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

  // The peer listener (mutual TLS), once started.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // The local API's unix socket, and the state directory holding it and the
  // device key (shared with the device's transfer service).
  std::string local_address() const {
    return absl::StrCat("unix:", state_dir_, "/availability.sock");
  }
  const std::string& state_dir() const { return state_dir_; }
  // The device certificate (made by the first start).
  absl::StatusOr<DeviceCertificate> certificate() const;
  const std::string& sidecar_root() const { return root_; }
  const std::string& log_path() const { return log_; }
  const std::string& conninfo() const { return conninfo_; }
  // The process id while running, else -1.
  int pid() const { return process_.pid(); }
  const std::string& name() const { return options_.name; }
  void set_peers(std::vector<std::string> peers) {
    options_.peers = std::move(peers);
  }

  // The local API.
  v1::Availability::Stub* api() { return api_.get(); }

 private:
  AvailabilityProcess() = default;
  std::string binary_;
  PgServer* pg_ = nullptr;
  std::string conninfo_;
  std::string dir_;
  std::string root_;
  std::string log_;
  std::string port_file_;
  std::string state_dir_;
  std::string address_;
  int port_ = 0;
  DeviceOptions options_;
  ServiceProcess process_;
  std::unique_ptr<v1::Availability::Stub> api_;
};

// Writes `bytes` at `key`'s path under `device`'s sidecar root and
// registers it READY (size and SHA-256 from the bytes), as an application
// that made the sidecar would.
absl::Status PublishSidecar(AvailabilityProcess* device,
                            const v1::SidecarKey& key, const std::string& bytes,
                            const std::string& generator_version = "");

// Pairs `joiner` with `inviter` as a person would with sidecarctl: a code
// from the inviter's CreateInvite, given to the joiner's JoinLibrary with
// the inviter's address. Both must be running.
// `via`: the address the joiner dials instead of the inviter's own (a
// TcpProxy in front of it, to count bytes). A join that could not connect
// (UNAVAILABLE, "failed to connect") is tried again with a new code, up to
// 3 attempts in all.
absl::Status Pair(AvailabilityProcess* inviter, AvailabilityProcess* joiner,
                  const std::string& via = "");

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_AVAILABILITY_PROCESS_H_
