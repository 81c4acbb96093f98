// TransferProcess: one device's transfer service as a real child process on
// loopback, with its own job database on a shared PgServer, sharing the
// device's state directory (its key; the availability service's local
// socket) and sidecar root.
#ifndef SIDECAR_TESTS_SUPPORT_TRANSFER_PROCESS_H_
#define SIDECAR_TESTS_SUPPORT_TRANSFER_PROCESS_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "sidecar/v1/transfer.grpc.pb.h"
#include "tests/support/pg_server.h"
#include "tests/support/service_process.h"

namespace sidecar::testing {

class TransferProcess {
 public:
  // Every Start binds port 0 and reads the port the kernel chose, so the
  // address changes across restarts: peers that must keep one address go
  // through a TcpProxy (Retarget it after each Start).
  static absl::StatusOr<std::unique_ptr<TransferProcess>> Create(
      const std::string& binary, PgServer* pg, const std::string& dir,
      const std::string& name, const std::string& state_dir,
      const std::string& sidecar_root,
      std::map<std::string, std::string> flags = {});
  ~TransferProcess() = default;  // kills a running process

  absl::Status Start(const std::map<std::string, std::string>& extra = {});
  int Stop() { return process_.Stop(); }
  void Kill() { process_.Kill(); }
  bool running() { return process_.running(); }
  // The process id while running, else -1.
  int pid() const { return process_.pid(); }

  // The peer listener (mutual TLS, members only).
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  const std::string& log_path() const { return log_; }
  const std::string& conninfo() const { return conninfo_; }
  // The local API (its unix socket in the state directory).
  v1::Transfer::Stub* api() { return api_.get(); }
  std::string local_address() const {
    return absl::StrCat("unix:", state_dir_, "/transfer.sock");
  }

 private:
  TransferProcess() = default;
  std::string binary_, conninfo_, dir_, log_, port_file_, address_;
  std::string state_dir_, root_, name_;
  int port_ = 0;
  std::map<std::string, std::string> flags_;
  ServiceProcess process_;
  std::unique_ptr<v1::Transfer::Stub> api_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_TRANSFER_PROCESS_H_
