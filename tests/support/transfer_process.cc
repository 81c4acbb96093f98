#include "tests/support/transfer_process.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/transport.h"

namespace sidecar::testing {

absl::StatusOr<std::unique_ptr<TransferProcess>> TransferProcess::Create(
    const std::string& binary, PgServer* pg, const std::string& dir,
    const std::string& name, const std::string& state_dir,
    const std::string& sidecar_root, std::map<std::string, std::string> flags) {
  std::unique_ptr<TransferProcess> p(new TransferProcess());
  p->binary_ = binary;
  p->name_ = name;
  p->dir_ = absl::StrCat(dir, "/", name);
  p->log_ = p->dir_ + "/transfer.log";
  p->port_file_ = p->dir_ + "/transfer.port";
  p->state_dir_ = state_dir;
  p->root_ = sidecar_root;
  p->flags_ = std::move(flags);
  std::error_code ec;
  std::filesystem::create_directories(p->dir_, ec);
  absl::StatusOr<std::string> conninfo =
      pg->CreateDatabase(absl::StrCat("xfer_", name));
  if (!conninfo.ok()) return conninfo.status();
  p->conninfo_ = *conninfo;
  return p;
}

absl::Status TransferProcess::Start(
    const std::map<std::string, std::string>& extra) {
  std::vector<std::string> argv = {
      binary_,
      "--listen=127.0.0.1:0",
      absl::StrCat("--db=", conninfo_),
      absl::StrCat("--sidecar_root=", root_),
      absl::StrCat("--state_dir=", state_dir_),
      absl::StrCat("--port_file=", port_file_),
  };
  std::map<std::string, std::string> flags = flags_;
  for (const auto& [k, v] : extra) flags[k] = v;
  absl::Status s = process_.Start(std::move(argv), flags, log_, port_file_,
                                  absl::StrCat("transfer service ", name_));
  if (!s.ok()) return s;
  absl::StatusOr<int> port = ReadPortFile(port_file_);
  if (!port.ok()) return port.status();
  port_ = *port;
  address_ = absl::StrCat("127.0.0.1:", port_);
  // A fresh channel per incarnation: calls never ride a connection to the
  // process that was stopped.
  api_ = v1::Transfer::NewStub(MakeLocalChannel(local_address()));
  return absl::OkStatus();
}

}  // namespace sidecar::testing
