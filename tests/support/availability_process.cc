#include "tests/support/availability_process.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/transport.h"

namespace sidecar::testing {

absl::StatusOr<std::unique_ptr<AvailabilityProcess>>
AvailabilityProcess::Create(const std::string& binary, PgServer* pg,
                            const std::string& work_dir,
                            DeviceOptions options) {
  std::unique_ptr<AvailabilityProcess> p(new AvailabilityProcess());
  p->binary_ = binary;
  p->pg_ = pg;
  p->options_ = std::move(options);
  p->dir_ = absl::StrCat(work_dir, "/", p->options_.name);
  p->root_ = p->dir_ + "/sidecars";
  p->log_ = p->dir_ + "/availability.log";
  p->port_file_ = p->dir_ + "/port";
  std::error_code ec;
  std::filesystem::create_directories(p->root_, ec);
  if (ec) return absl::InternalError(ec.message());
  absl::StatusOr<std::string> conninfo =
      pg->CreateDatabase(absl::StrCat("dev_", p->options_.name));
  if (!conninfo.ok()) return conninfo.status();
  p->conninfo_ = *conninfo;
  absl::StatusOr<int> port = PickUnusedPort();
  if (!port.ok()) return port.status();
  p->port_ = *port;
  p->address_ = absl::StrCat("127.0.0.1:", p->port_);
  return p;
}

AvailabilityProcess::~AvailabilityProcess() {
  if (child_) child_->Kill();
}

absl::Status AvailabilityProcess::StartWithExtraFlags(
    const std::map<std::string, std::string>& extra) {
  ::unlink(port_file_.c_str());
  std::vector<std::string> argv = {
      binary_,
      absl::StrCat("--listen=", address_),
      absl::StrCat("--db=", conninfo_),
      absl::StrCat("--name=", options_.name),
      absl::StrCat("--sidecar_root=", root_),
      absl::StrCat("--port_file=", port_file_),
      absl::StrCat("--peers=", absl::StrJoin(options_.peers, ",")),
      absl::StrCat("--transfer_address=127.0.0.1:", port_ + 1),
  };
  std::map<std::string, std::string> flags = options_.flags;
  for (const auto& [k, v] : extra) flags[k] = v;
  for (const auto& [k, v] : flags)
    argv.push_back(absl::StrCat("--", k, "=", v));
  absl::StatusOr<ChildProcess> c = ChildProcess::Spawn(argv, {}, log_);
  if (!c.ok()) return c.status();
  child_ = std::move(*c);
  // A fresh channel per incarnation: calls never ride a connection to the
  // process that was stopped.
  auto channel = MakeChannel(address_);
  api_ = v1::Availability::NewStub(channel);
  peer_api_ = v1::Peer::NewStub(channel);
  absl::StatusOr<int> port = WaitForPortFile(port_file_, absl::Seconds(30));
  if (!port.ok()) {
    return absl::UnavailableError(
        absl::StrCat(options_.name, " did not start: ", port.status().message(),
                     "\n", ReadTail(log_)));
  }
  return absl::OkStatus();
}

int AvailabilityProcess::Stop() {
  if (!child_) return -1;
  int status = child_->Terminate(absl::Seconds(20));
  child_.reset();
  return status;
}

void AvailabilityProcess::Kill() {
  if (!child_) return;
  child_->Kill();
  child_.reset();
}

bool AvailabilityProcess::running() { return child_ && child_->IsRunning(); }

}  // namespace sidecar::testing
