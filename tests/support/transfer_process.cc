#include "tests/support/transfer_process.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/transport.h"

namespace sidecar::testing {

absl::StatusOr<std::unique_ptr<TransferProcess>> TransferProcess::Create(
    const std::string& binary, PgServer* pg, const std::string& dir,
    const std::string& name, const std::string& availability_address,
    const std::string& sidecar_root, std::map<std::string, std::string> flags) {
  std::unique_ptr<TransferProcess> p(new TransferProcess());
  p->binary_ = binary;
  p->name_ = name;
  p->dir_ = absl::StrCat(dir, "/", name);
  p->log_ = p->dir_ + "/transfer.log";
  p->port_file_ = p->dir_ + "/transfer.port";
  p->availability_ = availability_address;
  p->root_ = sidecar_root;
  p->flags_ = std::move(flags);
  std::error_code ec;
  std::filesystem::create_directories(p->dir_, ec);
  absl::StatusOr<std::string> conninfo =
      pg->CreateDatabase(absl::StrCat("xfer_", name));
  if (!conninfo.ok()) return conninfo.status();
  p->conninfo_ = *conninfo;
  absl::StatusOr<int> port = PickUnusedPort();
  if (!port.ok()) return port.status();
  p->port_ = *port;
  p->address_ = absl::StrCat("127.0.0.1:", p->port_);
  return p;
}

TransferProcess::~TransferProcess() {
  if (child_) child_->Kill();
}

absl::Status TransferProcess::Start(
    const std::map<std::string, std::string>& extra) {
  ::unlink(port_file_.c_str());
  std::vector<std::string> argv = {
      binary_,
      absl::StrCat("--listen=", address_),
      absl::StrCat("--db=", conninfo_),
      absl::StrCat("--sidecar_root=", root_),
      absl::StrCat("--availability=", availability_),
      absl::StrCat("--port_file=", port_file_),
  };
  std::map<std::string, std::string> flags = flags_;
  for (const auto& [k, v] : extra) flags[k] = v;
  for (const auto& [k, v] : flags) {
    argv.push_back(absl::StrCat("--", k, "=", v));
  }
  absl::StatusOr<ChildProcess> c = ChildProcess::Spawn(argv, {}, log_);
  if (!c.ok()) return c.status();
  child_ = std::move(*c);
  auto channel = MakeChannel(address_);
  api_ = v1::Transfer::NewStub(channel);
  peer_api_ = v1::TransferPeer::NewStub(channel);
  absl::StatusOr<int> port = WaitForPortFile(port_file_, absl::Seconds(30));
  if (!port.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "transfer service ", name_, " did not start: ", port.status().message(),
        "\n", ReadTail(log_)));
  }
  return absl::OkStatus();
}

int TransferProcess::Stop() {
  if (!child_) return -1;
  int status = child_->Terminate(absl::Seconds(20));
  child_.reset();
  return status;
}

void TransferProcess::Kill() {
  if (!child_) return;
  child_->Kill();
  child_.reset();
}

bool TransferProcess::running() { return child_ && child_->IsRunning(); }

}  // namespace sidecar::testing
