// What a leaf takes from a delegate's WhoHas answer (delegation.h), and
// how long it keeps it. Pure logic, no I/O: the fuzz target
// fuzz_leaf_messages runs the parser on hostile bytes.
#ifndef SIDECAR_SERVICES_AVAILABILITY_DELEGATED_ANSWER_H_
#define SIDECAR_SERVICES_AVAILABILITY_DELEGATED_ANSWER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"
#include "services/availability/member_keys.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

// One holder of a key, as another device reported it.
struct DelegatedHolder {
  Uuid device;
  uint64_t size = 0;
  Sha256Digest sha256{};
  std::string generator_version;  // empty when unknown (HasKeys)
};
using KeyAnswers = std::vector<std::vector<DelegatedHolder>>;

// Validates a delegate's answer to a WhoHas of `key_count` keys: one result
// per key, device indices in range, members only (others are dropped),
// 32-byte digests, sizes and generator versions valid. INVALID_ARGUMENT
// saying what is wrong otherwise; the whole answer is then ignored.
absl::StatusOr<KeyAnswers> ParseDelegatedAnswer(
    const v1::PeerWhoHasResponse& resp, size_t key_count,
    const MemberKeys& members);

// Answers kept for `ttl`, at most `capacity` keys: when full, the expired
// ones go, and if none has expired, all of them (a bound, not a policy:
// the delegate answers in a millisecond or two).
class AnswerCache {
 public:
  AnswerCache(absl::Duration ttl, size_t capacity)
      : ttl_(ttl), capacity_(capacity) {}

  // The fresh answer for `key` at `now`, if any.
  std::optional<std::vector<DelegatedHolder>> Get(const SidecarKey& key,
                                                  absl::Time now) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void Put(const SidecarKey& key, std::vector<DelegatedHolder> holders,
           absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Cached {
    std::vector<DelegatedHolder> holders;
    absl::Time expires;
  };
  const absl::Duration ttl_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<SidecarKey, Cached> answers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_DELEGATED_ANSWER_H_
