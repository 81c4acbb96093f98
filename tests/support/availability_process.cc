#include "tests/support/availability_process.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
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
  p->state_dir_ = p->dir_ + "/state";
  std::error_code ec;
  std::filesystem::create_directories(p->root_, ec);
  if (ec) return absl::InternalError(ec.message());
  absl::StatusOr<std::string> conninfo =
      pg->CreateDatabase(absl::StrCat("dev_", p->options_.name));
  if (!conninfo.ok()) return conninfo.status();
  p->conninfo_ = *conninfo;
  return p;
}

absl::StatusOr<DeviceCertificate> AvailabilityProcess::certificate() const {
  std::ifstream in(state_dir_ + "/" + kDeviceCertFile);
  std::string pem((std::istreambuf_iterator<char>(in)), {});
  if (pem.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options_.name, " has no certificate yet (never started)"));
  }
  return DeviceCertificate::Parse(pem);
}

absl::Status AvailabilityProcess::StartWithExtraFlags(
    const std::map<std::string, std::string>& extra) {
  std::vector<std::string> argv = {
      binary_,
      "--listen=127.0.0.1:0",
      absl::StrCat("--db=", conninfo_),
      absl::StrCat("--name=", options_.name),
      absl::StrCat("--sidecar_root=", root_),
      absl::StrCat("--state_dir=", state_dir_),
      absl::StrCat("--port_file=", port_file_),
      absl::StrCat("--peers=", absl::StrJoin(options_.peers, ",")),
  };
  std::map<std::string, std::string> flags = options_.flags;
  for (const auto& [k, v] : extra) flags[k] = v;
  absl::Status s =
      process_.Start(std::move(argv), flags, log_, port_file_, options_.name);
  if (!s.ok()) return s;
  absl::StatusOr<int> port = ReadPortFile(port_file_);
  if (!port.ok()) return port.status();
  port_ = *port;
  address_ = absl::StrCat("127.0.0.1:", port_);
  // A fresh channel per incarnation: calls never ride a connection to the
  // process that was stopped.
  api_ = v1::Availability::NewStub(MakeLocalChannel(local_address()));
  return absl::OkStatus();
}

absl::Status PublishSidecar(AvailabilityProcess* device,
                            const v1::SidecarKey& key, const std::string& bytes,
                            const std::string& generator_version) {
  absl::StatusOr<SidecarKey> k = KeyFromProto(key);
  if (!k.ok()) return k.status();
  std::filesystem::path path =
      std::filesystem::path(device->sidecar_root()) / RelativePath(*k);
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
  v1::RegisterRequest req;
  v1::LocalSidecar* l = req.add_sidecars();
  *l->mutable_key() = key;
  l->set_size(bytes.size());
  l->set_sha256(std::string(DigestBytes(Sha256Of(bytes))));
  l->set_status(v1::SIDECAR_STATUS_READY);
  l->set_generator_version(generator_version);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::RegisterResponse resp;
  return FromGrpcStatus(device->api()->Register(&ctx, req, &resp));
}

namespace {

absl::Status PairOnce(AvailabilityProcess* inviter, AvailabilityProcess* joiner,
                      const std::string& via) {
  v1::CreateInviteResponse invite;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::Status s = inviter->api()->CreateInvite(&ctx, {}, &invite);
    if (!s.ok()) return FromGrpcStatus(s);
  }
  v1::JoinLibraryRequest req;
  req.set_code(invite.code());
  req.set_address(via.empty() ? inviter->address() : via);
  v1::JoinLibraryResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(20));
  grpc::Status s = joiner->api()->JoinLibrary(&ctx, req, &resp);
  if (!s.ok()) {
    return absl::Status(FromGrpcStatus(s).code(),
                        absl::StrCat(joiner->name(), " joining ",
                                     inviter->name(), ": ", s.error_message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Pair(AvailabilityProcess* inviter, AvailabilityProcess* joiner,
                  const std::string& via) {
  // A join whose connection to the inviter did not open within the
  // joiner's timeout (two TLS handshakes on a loaded 2-core machine) sent
  // nothing, so its code is unused: a person would try again with a new
  // one, and so does this, twice at most.
  absl::Status s;
  for (int attempt = 0; attempt < 3; ++attempt) {
    s = PairOnce(inviter, joiner, via);
    if (s.code() != absl::StatusCode::kUnavailable ||
        !absl::StrContains(s.message(), "failed to connect")) {
      return s;
    }
  }
  return s;
}

}  // namespace sidecar::testing
