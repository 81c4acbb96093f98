// MemberFollower: keeps the transfer service's PeerTrust equal to the
// library's members as the device's availability service knows them
// (Availability.ListMembers over the local API, polled every `interval`).
// Until the first answer the set is empty and every peer is refused; a
// member unpaired is refused within one interval.
#ifndef SIDECAR_SERVICES_TRANSFER_MEMBER_FOLLOWER_H_
#define SIDECAR_SERVICES_TRANSFER_MEMBER_FOLLOWER_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/peer_trust.h"
#include "sidecar/v1/availability.grpc.pb.h"

namespace sidecar::transfer {

class MemberFollower {
 public:
  // `stub` and `trust` must outlive the follower.
  // Each poll also announces `transfer_address` (where peers reach this
  // transfer service; empty: nothing), so that an availability service
  // that restarted learns it again.
  MemberFollower(v1::Availability::Stub* stub, PeerTrust* trust,
                 absl::Duration interval, absl::Duration timeout,
                 std::string transfer_address = "");
  ~MemberFollower() { Stop(); }

  // One poll now; returns how it went. Start() polls in a thread after.
  absl::Status PollOnce();
  void Start();
  void Stop();

 private:
  v1::Availability::Stub* const stub_;
  PeerTrust* const trust_;
  const absl::Duration interval_;
  const absl::Duration timeout_;
  const std::string transfer_address_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_version_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;  // Start and Stop only (the owner's thread)
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_MEMBER_FOLLOWER_H_
