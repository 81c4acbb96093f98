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

absl::Status AvailabilityProcess::StartWithExtraFlags(
    const std::map<std::string, std::string>& extra) {
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
  // A fresh channel per incarnation: calls never ride a connection to the
  // process that was stopped.
  auto channel = MakeChannel(address_);
  api_ = v1::Availability::NewStub(channel);
  peer_api_ = v1::Peer::NewStub(channel);
  return process_.Start(std::move(argv), flags, log_, port_file_,
                        options_.name);
}

}  // namespace sidecar::testing
