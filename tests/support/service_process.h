// ServiceProcess: the lifecycle shared by the test wrappers of our service
// binaries (AvailabilityProcess, TransferProcess): start with flags, wait
// until the process writes its port file, stop gracefully or kill.
#ifndef SIDECAR_TESTS_SUPPORT_SERVICE_PROCESS_H_
#define SIDECAR_TESTS_SUPPORT_SERVICE_PROCESS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tests/support/process.h"

namespace sidecar::testing {

class ServiceProcess {
 public:
  ~ServiceProcess() { Kill(); }

  // Spawns `argv` plus one --name=value per entry of `flags`, output to
  // `log`, then waits up to 30 s for `port_file` (removed first).
  // UNAVAILABLE naming `what` with the log's tail if it never appears.
  absl::Status Start(std::vector<std::string> argv,
                     const std::map<std::string, std::string>& flags,
                     const std::string& log, const std::string& port_file,
                     const std::string& what);
  // SIGTERM, then SIGKILL after 20 s; the exit status (-1 if not running).
  int Stop();
  // SIGKILL.
  void Kill();
  bool running() { return child_ && child_->IsRunning(); }
  int pid() const { return child_ ? child_->pid() : -1; }

 private:
  std::optional<ChildProcess> child_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_SERVICE_PROCESS_H_
