#include "tests/support/service_process.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace sidecar::testing {

absl::Status ServiceProcess::Start(
    std::vector<std::string> argv,
    const std::map<std::string, std::string>& flags, const std::string& log,
    const std::string& port_file, const std::string& what) {
  ::unlink(port_file.c_str());
  for (const auto& [k, v] : flags)
    argv.push_back(absl::StrCat("--", k, "=", v));
  absl::StatusOr<ChildProcess> c = ChildProcess::Spawn(argv, {}, log);
  if (!c.ok()) return c.status();
  child_ = std::move(*c);
  absl::StatusOr<int> port = WaitForPortFile(port_file, absl::Seconds(30));
  if (!port.ok()) {
    return absl::UnavailableError(
        absl::StrCat(what, " did not start: ", port.status().message(), "\n",
                     ReadTail(log)));
  }
  return absl::OkStatus();
}

int ServiceProcess::Stop() {
  if (!child_) return -1;
  int status = child_->Terminate(absl::Seconds(20));
  child_.reset();
  return status;
}

void ServiceProcess::Kill() {
  if (!child_) return;
  child_->Kill();
  child_.reset();
}

}  // namespace sidecar::testing
