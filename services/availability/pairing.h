// Pairing: how a new device joins a library with a one-time code.
//
//  inviter (a member)                       joiner (the new device)
//  CreateInvite -> code (S, tag of its key)
//                    ...the person types the code on the joiner...
//                                           FetchPeerCertificate(address)
//                                           code.MatchesInviter(its key)?
//                                             no: stop (typo, wrong address
//                                             or a man in the middle)
//        <-- Peer.Join(hello, JoinProof(S, joiner key, inviter key)) ---
//  proof matches a live invite?                (mutual TLS, inviter pinned)
//  Admit(joiner), invite used up
//        --- JoinResponse(AcceptProof, the library's records) -->
//                                           AcceptProof checks out?
//                                           Library::AcceptInvitation
//
// Invites live in memory only: a restart of the inviter voids them, which
// is the safe direction. Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_PAIRING_H_
#define SIDECAR_SERVICES_AVAILABILITY_PAIRING_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/device_key.h"
#include "common/pairing_code.h"
#include "services/availability/library.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

struct PairingOptions {
  absl::Duration default_ttl = absl::Minutes(10);
  absl::Duration max_ttl = absl::Hours(1);
  size_t max_live_invites = 16;
  // Failed Join attempts tolerated per window before Join answers
  // RESOURCE_EXHAUSTED until the window ends (online guessing bound).
  int max_failures = 10;
  absl::Duration failure_window = absl::Minutes(1);
};

class Pairing {
 public:
  // `key` and `library` must outlive this. `self_hello` tells this
  // device's Hello (addresses) at the time of a join.
  Pairing(const DeviceKey* key, Library* library,
          std::function<v1::Hello()> self_hello, PairingOptions options = {});

  struct Invite {
    std::string code;
    absl::Time expires_at;
  };
  // A new one-time code, valid for `ttl` (0: the default; at most max_ttl).
  absl::StatusOr<Invite> CreateInvite(absl::Duration ttl);

  // Inviter side of Peer.Join: `caller` is the certificate the caller's TLS
  // session presented. PERMISSION_DENIED for a wrong code or a Hello that
  // names another device, FAILED_PRECONDITION for an expired or used code,
  // RESOURCE_EXHAUSTED after too many failures.
  absl::StatusOr<v1::JoinResponse> HandleJoin(const DeviceCertificate& caller,
                                              const v1::JoinRequest& request);

  struct JoinResult {
    MemberView inviter;
    size_t members = 0;
  };
  // Joiner side: pairs with the device that made `code`, trying `addresses`
  // in turn (its peer listener). Each step is bounded by `timeout`.
  absl::StatusOr<JoinResult> Join(const std::string& code,
                                  const std::vector<std::string>& addresses,
                                  absl::Duration timeout);

 private:
  struct Pending {
    PairingCode code;
    absl::Time expires_at;
    bool used = false;
  };
  absl::StatusOr<JoinResult> JoinAt(const PairingCode& code,
                                    const std::string& address,
                                    absl::Duration timeout);
  // REQUIRES: mu_ held.
  void PurgeLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DeviceKey* const key_;
  Library* const library_;
  const std::function<v1::Hello()> self_hello_;
  const PairingOptions options_;

  absl::Mutex mu_;
  std::vector<Pending> invites_ ABSL_GUARDED_BY(mu_);
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PAIRING_H_
