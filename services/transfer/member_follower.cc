#include "services/transfer/member_follower.h"

#include "common/log.h"
#include "common/transport.h"

namespace sidecar::transfer {

MemberFollower::MemberFollower(v1::Availability::Stub* stub, PeerTrust* trust,
                               absl::Duration interval, absl::Duration timeout,
                               std::string transfer_address)
    : stub_(stub),
      trust_(trust),
      interval_(interval),
      timeout_(timeout),
      transfer_address_(std::move(transfer_address)) {}

absl::Status MemberFollower::PollOnce() {
  if (!transfer_address_.empty()) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout_);
    v1::AnnounceTransferRequest req;
    req.set_transfer_address(transfer_address_);
    v1::AnnounceTransferResponse resp;
    grpc::Status s = stub_->AnnounceTransfer(&ctx, req, &resp);
    if (!s.ok()) return FromGrpcStatus(s);
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  v1::ListMembersRequest req;
  v1::ListMembersResponse resp;
  grpc::Status s = stub_->ListMembers(&ctx, req, &resp);
  if (!s.ok()) return FromGrpcStatus(s);
  {
    absl::MutexLock lock(&mu_);
    if (resp.version() == last_version_ && last_version_ != 0) {
      return absl::OkStatus();
    }
    last_version_ = resp.version();
  }
  std::vector<DeviceCertificate> members;
  for (const v1::Member& m : resp.members()) {
    if (m.removed()) continue;
    absl::StatusOr<DeviceCertificate> c =
        DeviceCertificate::Parse(m.certificate());
    if (c.ok()) members.push_back(std::move(*c));
  }
  uint64_t before = trust_->version();
  trust_->Set(members);
  if (trust_->version() != before) {
    SC_LOG(INFO) << "library: " << members.size() << " member(s)";
  }
  return absl::OkStatus();
}

void MemberFollower::Start() {
  thread_ = std::thread([this] {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    while (true) {
      absl::Status s = PollOnce();
      if (!s.ok()) SC_LOG(DEBUG) << "listing the library's members: " << s;
      absl::MutexLock lock(&mu_);
      // True once stopping_ is set.
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) return;
    }
  });
}

void MemberFollower::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace sidecar::transfer
