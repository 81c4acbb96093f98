// StateHash: a digest of what one origin advertises at one point of its
// change log, the same on every device that holds that state. An origin
// signs it with its generation and max_seq (a SignedHead) and sends it with
// its entries; relays pass the head on unchanged; a receiver accepts what a
// relay sends about the origin only if the state it ends up with has the
// digest the origin signed. So a relay can pass an origin's state on, but
// cannot add, drop or alter a sidecar of it, nor claim a later max_seq.
//
// What is hashed: the live entries only (tombstones are not part of what is
// advertised, and devices may compact them differently), each as its
// content id, kind, format, variant *name* (ids differ between processes),
// size, SHA-256 and generator version (as its string: a byte of length and
// the bytes), in canonical order (content id, kind, format, name). The
// version is covered so that a relay cannot change what others believe
// about which generator made a third device's sidecars.
//
// Recomputing it over millions of entries for every change would cost too
// much, so entries are split into 4,096 buckets by the leading bits of
// their content id. StateHasher keeps a digest per bucket and recomputes
// only the buckets touched since its last computation; the state digest is
// the digest of the bucket digests.
#ifndef SIDECAR_SERVICES_AVAILABILITY_STATE_HASH_H_
#define SIDECAR_SERVICES_AVAILABILITY_STATE_HASH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "services/availability/entry_set.h"

namespace sidecar::availability {

// An origin's signed statement of its state: "at `max_seq` of `generation`
// my live entries have the digest `state`".
struct SignedHead {
  uint64_t generation = 0;
  uint64_t max_seq = 0;
  Sha256Digest state{};
  std::string signature;  // Ed25519 over HeadStatement (gossip_protocol.h)

  bool operator==(const SignedHead&) const = default;
};

inline constexpr int kStateHashBucketBits = 12;

// Appends `v` as 8 big-endian bytes: how numbers enter every digest and
// signed statement of the gossip protocol.
void AppendBigEndian(uint64_t v, std::string* out);

// The state digest of `entries` (REQUIRES: sorted by KeyLess, one entry per
// key), computed from scratch.
Sha256Digest StateHashOf(const Entries& entries);

// Incremental form of StateHashOf for a table that changes a few entries at
// a time. Not thread-safe; copyable (about 128 KiB once computed).
//
// To compute without holding the table's lock: Fork under the lock, Compute
// on the fork without it, and Adopt the fork under the lock again. The
// table's hasher records in the meantime only what changed after the fork.
class StateHasher {
 public:
  StateHasher();

  // Notes that the entry of `content` may have changed.
  void Touch(const Uuid& content);
  // Notes that any entry may have changed (the table was replaced).
  void TouchAll();

  // StateHashOf(entries), recomputing only the buckets touched since the
  // last call (all of them the first time). REQUIRES: every change to
  // `entries` since the last call was noted with Touch or TouchAll.
  Sha256Digest Compute(const Entries& entries);

  // A copy to compute on; this hasher then forgets what it had recorded,
  // which the copy now carries. Adopt must follow, with the copy computed.
  StateHasher Fork();
  // Takes the bucket digests of a computed fork, unless TouchAll was called
  // since the fork.
  void Adopt(const StateHasher& computed);

 private:
  std::vector<Sha256Digest> buckets_;  // empty: every bucket is to compute
  std::vector<bool> touched_;          // per bucket
  uint64_t epoch_ = 0;                 // counts TouchAll calls
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_STATE_HASH_H_
