#include "tests/support/test_peer.h"

#include "absl/strings/str_cat.h"
#include "common/pairing_code.h"
#include "common/transport.h"

namespace sidecar::testing {

absl::StatusOr<std::unique_ptr<TestPeer>> TestPeer::Create(
    const std::string& dir, const std::string& name) {
  absl::StatusOr<DeviceKey> key =
      DeviceKey::Create(absl::StrCat(dir, "/", name), name);
  if (!key.ok()) return key.status();
  return std::unique_ptr<TestPeer>(new TestPeer(std::move(*key), name));
}

v1::Hello TestPeer::Hello() const {
  v1::Hello h;
  h.set_device_id(std::string(key_.device_id().AsBytes()));
  h.set_generation(1);
  h.set_name(name_);
  return h;
}

absl::Status TestPeer::JoinLibraryOf(AvailabilityProcess* device) {
  v1::CreateInviteResponse invite;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::Status s = device->api()->CreateInvite(&ctx, {}, &invite);
    if (!s.ok()) return FromGrpcStatus(s);
  }
  absl::StatusOr<PairingCode> code = PairingCode::Parse(invite.code());
  if (!code.ok()) return code.status();
  absl::StatusOr<DeviceCertificate> cert =
      FetchPeerCertificate(device->address(), key_, absl::Seconds(5));
  if (!cert.ok()) return cert.status();
  if (!code->MatchesInviter(cert->key_sha256)) {
    return absl::PermissionDeniedError("the code does not name that device");
  }
  auto stub = v1::Peer::NewStub(MakePeerChannel(device->address(), key_, *cert));
  v1::JoinRequest req;
  *req.mutable_from() = Hello();
  req.set_proof(code->JoinProof(key_.certificate().key_sha256,
                                cert->key_sha256));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::JoinResponse resp;
  return FromGrpcStatus(stub->Join(&ctx, req, &resp));
}

absl::StatusOr<std::unique_ptr<v1::Peer::Stub>> TestPeer::PeerStub(
    AvailabilityProcess* device) const {
  absl::StatusOr<DeviceCertificate> cert = device->certificate();
  if (!cert.ok()) return cert.status();
  return v1::Peer::NewStub(MakePeerChannel(device->address(), key_, *cert));
}

absl::StatusOr<std::unique_ptr<v1::TransferPeer::Stub>> TestPeer::TransferStub(
    AvailabilityProcess* device, const std::string& transfer_address) const {
  absl::StatusOr<DeviceCertificate> cert = device->certificate();
  if (!cert.ok()) return cert.status();
  return v1::TransferPeer::NewStub(
      MakePeerChannel(transfer_address, key_, *cert));
}

}  // namespace sidecar::testing
