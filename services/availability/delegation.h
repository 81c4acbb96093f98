// Delegation: how a leaf device (a phone) answers "who has this sidecar?"
// without mirroring the library.
//
// It asks a full member, the always-on home server at best, with the
// peer API's WhoHas, and keeps the answers for a short while (ttl). When no
// full member answers, it asks every online peer about its own sidecars
// (HasKeys), so a leaf still finds copies when the home server is away.
//
// What a delegate says is hostile input like any peer's: only members are
// taken as holders, every field is checked, and the answer only ever
// proposes sources. A fetch verifies the bytes against the sha256 (and the
// source's certificate against the library), so a lying delegate can make
// a fetch fail, never store wrong bytes or reach a non-member.
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_DELEGATION_H_
#define SIDECAR_SERVICES_AVAILABILITY_DELEGATION_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"
#include "services/availability/delegated_answer.h"

namespace sidecar::availability {

class Library;
class PeerManager;

struct DelegationOptions {
  // The member to ask first: a device id or a member name (--delegate).
  // Empty: PeerManager::DelegateCandidates' order (the full member that
  // knows the most origins, the nearest among equals).
  std::string preferred;
  absl::Duration ttl = absl::Seconds(30);
  size_t cache_capacity = 20000;
  // Per call to a delegate; the next one is tried after it.
  absl::Duration timeout = absl::Seconds(2);
  size_t max_delegates_tried = 2;
};

class Delegation {
 public:
  // Pointers must outlive the delegation.
  Delegation(DelegationOptions options, PeerManager* peers, Library* library);

  // Where the answers came from.
  enum class Source { kCache, kDelegate, kPeers };
  // Holders of each key (answers[i] for keys[i]), from the cache, a
  // delegate, or the online peers about themselves. Keys nobody answered
  // for have no holders. Blocks for at most about max_delegates_tried *
  // timeout plus one HasKeys round.
  Source Lookup(const std::vector<SidecarKey>& keys, KeyAnswers* answers);

 private:
  // The preferred member's id, once it is a member.
  std::optional<Uuid> Preferred() const;
  // Asks delegates about `keys`; nullopt if none answered validly.
  std::optional<KeyAnswers> AskDelegates(const std::vector<SidecarKey>& keys);

  const DelegationOptions options_;
  PeerManager* const peers_;
  Library* const library_;
  AnswerCache cache_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_DELEGATION_H_
