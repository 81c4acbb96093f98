#include "services/availability/pairing.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/transport.h"
#include "sidecar/v1/peer.grpc.pb.h"

namespace sidecar::availability {
namespace {

// How long used and expired invites are remembered, so that a late try
// gets "used" or "expired" instead of "wrong".
constexpr absl::Duration kRemember = absl::Hours(1);

std::string Clock(absl::Time t) {
  return absl::FormatTime("%H:%M:%S UTC", t, absl::UTCTimeZone());
}

}  // namespace

Pairing::Pairing(const DeviceKey* key, Library* library,
                 std::function<v1::Hello()> self_hello, PairingOptions options)
    : key_(key),
      library_(library),
      self_hello_(std::move(self_hello)),
      options_(options) {}

void Pairing::PurgeLocked(absl::Time now) {
  std::erase_if(invites_, [&](const Pending& p) {
    return now > p.expires_at + kRemember;
  });
}

absl::StatusOr<Pairing::Invite> Pairing::CreateInvite(absl::Duration ttl) {
  if (ttl <= absl::ZeroDuration()) ttl = options_.default_ttl;
  if (ttl > options_.max_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pairing code is valid for at most ",
                     absl::FormatDuration(options_.max_ttl)));
  }
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  PurgeLocked(now);
  size_t live = 0;
  for (const Pending& p : invites_) live += !p.used && now <= p.expires_at;
  if (live >= options_.max_live_invites) {
    return absl::ResourceExhaustedError(absl::StrCat(
        live,
        " pairing codes are still valid; use one or wait until they "
        "expire"));
  }
  Pending p{PairingCode::Make(key_->certificate().key_sha256), now + ttl};
  invites_.push_back(p);
  SC_LOG(INFO) << "pairing code made, valid until " << Clock(p.expires_at);
  return Invite{p.code.ToString(), p.expires_at};
}

absl::StatusOr<v1::JoinResponse> Pairing::HandleJoin(
    const DeviceCertificate& caller, const v1::JoinRequest& request) {
  if (request.from().device_id() != caller.device_id.AsBytes()) {
    return absl::PermissionDeniedError(
        "Hello.device_id does not match the certificate of the connection");
  }
  const Sha256Digest& mine = key_->certificate().key_sha256;
  const absl::Time now = absl::Now();
  PairingCode matched;
  {
    absl::MutexLock lock(&mu_);
    if (now - window_start_ > options_.failure_window) {
      window_start_ = now;
      failures_ = 0;
    }
    if (failures_ >= options_.max_failures) {
      return absl::ResourceExhaustedError(
          "too many failed pairing attempts; try again in a minute");
    }
    PurgeLocked(now);
    Pending* hit = nullptr;
    for (Pending& p : invites_) {
      if (ProofsEqual(request.proof(),
                      p.code.JoinProof(caller.key_sha256, mine))) {
        hit = &p;
      }
    }
    if (hit == nullptr) {
      ++failures_;
      SC_LOG(WARNING) << "pairing refused: wrong code from "
                      << caller.device_id.ToString();
      return absl::PermissionDeniedError(
          "wrong pairing code: check it, or make a new one with `sidecarctl "
          "pair invite` on a device of the library");
    }
    if (hit->used) {
      return absl::FailedPreconditionError(
          "this pairing code was already used; make a new one with "
          "`sidecarctl pair invite`");
    }
    if (now > hit->expires_at) {
      return absl::FailedPreconditionError(
          absl::StrCat("this pairing code expired at ", Clock(hit->expires_at),
                       "; make a new one with `sidecarctl pair invite`"));
    }
    hit->used = true;  // one use, whatever happens next
    matched = hit->code;
  }
  const v1::Hello& h = request.from();
  absl::StatusOr<v1::MemberRecord> admitted =
      library_->Admit(caller, h.name(), h.peer_address(), h.transfer_address());
  if (!admitted.ok()) return admitted.status();
  SC_LOG(INFO) << "paired with " << h.name() << " ("
               << caller.device_id.ToString() << ")";
  v1::JoinResponse resp;
  resp.set_proof(matched.AcceptProof(mine, caller.key_sha256));
  for (v1::MemberRecord& r : library_->Records()) {
    *resp.add_records() = std::move(r);
  }
  return resp;
}

absl::StatusOr<Pairing::JoinResult> Pairing::Join(
    const std::string& code_text, const std::vector<std::string>& addresses,
    absl::Duration timeout) {
  absl::StatusOr<PairingCode> code = PairingCode::Parse(code_text);
  if (!code.ok()) return code.status();
  if (addresses.empty()) {
    return absl::InvalidArgumentError(
        "no address to join at: give the inviting device's address (as "
        "`sidecarctl pair invite` printed it)");
  }
  absl::Status last;
  for (const std::string& address : addresses) {
    absl::StatusOr<JoinResult> r = JoinAt(*code, address, timeout);
    if (r.ok()) return r;
    last = r.status();
    // A refusal by the right device is final; an unreachable one is not.
    if (last.code() != absl::StatusCode::kUnavailable &&
        last.code() != absl::StatusCode::kDeadlineExceeded) {
      return last;
    }
  }
  return last;
}

absl::StatusOr<Pairing::JoinResult> Pairing::JoinAt(const PairingCode& code,
                                                    const std::string& address,
                                                    absl::Duration timeout) {
  absl::StatusOr<DeviceCertificate> inviter =
      FetchPeerCertificate(address, *key_, timeout);
  if (!inviter.ok()) return inviter.status();
  if (inviter->device_id == key_->device_id()) {
    return absl::InvalidArgumentError(
        absl::StrCat(address,
                     " is this device; give the address of the "
                     "device that made the code"));
  }
  if (!code.MatchesInviter(inviter->key_sha256)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "wrong pairing code for the device at ", address,
        ": it is not the one that made this code. Check the code for a typo "
        "and the address (or something on the network is intercepting the "
        "connection); nothing was sent"));
  }
  auto stub = v1::Peer::NewStub(MakePeerChannel(address, *key_, *inviter));
  v1::JoinRequest req;
  *req.mutable_from() = self_hello_();
  const Sha256Digest& mine = key_->certificate().key_sha256;
  req.set_proof(code.JoinProof(mine, inviter->key_sha256));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout);
  v1::JoinResponse resp;
  grpc::Status s = stub->Join(&ctx, req, &resp);
  if (!s.ok()) {
    absl::Status st = FromGrpcStatus(s);
    return absl::Status(st.code(), absl::StrCat(address, ": ", st.message()));
  }
  if (!ProofsEqual(resp.proof(), code.AcceptProof(inviter->key_sha256, mine))) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the device at ", address, " did not prove it knows the code"));
  }
  if (resp.records_size() > static_cast<int>(kMaxMembers)) {
    return absl::ResourceExhaustedError("the library sent too many records");
  }
  std::vector<v1::MemberRecord> records(resp.records().begin(),
                                        resp.records().end());
  absl::StatusOr<Library::Change> change =
      library_->AcceptInvitation(*inviter, records);
  if (!change.ok()) return change.status();
  library_->NoteAddresses(inviter->device_id, address, "");
  JoinResult out;
  out.inviter = library_->Find(inviter->device_id).value_or(MemberView{});
  out.members = library_->List(false).size();
  return out;
}

}  // namespace sidecar::availability
