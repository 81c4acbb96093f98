// StringDict: a bounded, process-wide interning of short strings to 16-bit
// ids, so that a cache entry can name a string in a few bits. Names are never
// freed; ids are stable for the life of the process (they differ between
// processes, so nothing that crosses the wire or is signed uses them).
//
// Peers are hostile: what they may add is bounded twice, per peer and for
// all peers together, so that one flooding member cannot keep the others'
// new names out, and all of them together cannot keep this device from
// naming its own. VariantDict (variant names) and GeneratorVersionDict
// (generator versions) are its two instances.
#ifndef SIDECAR_SERVICES_AVAILABILITY_STRING_DICT_H_
#define SIDECAR_SERVICES_AVAILABILITY_STRING_DICT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/uuid.h"

namespace sidecar::availability {

class StringDict {
 public:
  struct Limits {
    // Ids 0..capacity-1; at most 65,536.
    size_t capacity = 0;
    // Ids only this device's own names may take.
    size_t local_reserve = 0;
    // New names one peer may add, however many batches it sends.
    size_t per_peer_share = 0;
    // For messages: what the strings are ("variant names") and a hint of
    // what they are meant to be.
    absl::string_view what;
    absl::string_view hint;
  };

  // `well_known` take ids 0..N-1 in order. REQUIRES: N <= limits.capacity
  // - limits.local_reserve, capacity <= 65536.
  StringDict(const Limits& limits,
             absl::Span<const absl::string_view> well_known);
  StringDict(const StringDict&) = delete;
  StringDict& operator=(const StringDict&) = delete;

  // Returns the id of `name`, adding it if new, for this device's own
  // names. REQUIRES: the caller validated `name`. RESOURCE_EXHAUSTED once
  // the dictionary is full.
  absl::StatusOr<uint16_t> Intern(absl::string_view name)
      ABSL_LOCKS_EXCLUDED(mu_);

  // As Intern, for a name that `peer` sent. A new name is charged to the
  // peer: RESOURCE_EXHAUSTED once the peer has added per_peer_share names,
  // or once only the local reserve is left.
  absl::StatusOr<uint16_t> InternFromPeer(absl::string_view name,
                                          const Uuid& peer)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The id of `name` if it is known; never adds. Lookups of keys from
  // requests use this, so queries cannot fill the dictionary.
  std::optional<uint16_t> Find(absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // The name of an id returned by Intern. Lock-free: ids are only handed out
  // after their name is stored, and names are never moved or freed.
  absl::string_view Name(uint16_t id) const { return *names_[id]; }

  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // How many names `peer` has added.
  size_t added_by(const Uuid& peer) const ABSL_LOCKS_EXCLUDED(mu_);
  const Limits& limits() const { return limits_; }

  // Frees the names. Only a dictionary nobody reads any more may be
  // destroyed: the process-wide ones never are.
  ~StringDict();

 private:
  // Stores `name` under the next id. REQUIRES: mu_ held, name not present,
  // next_ < capacity.
  uint16_t AddLocked(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Limits limits_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint16_t> ids_ ABSL_GUARDED_BY(mu_);
  // Fixed-size table of stable pointers; written once per id under mu_,
  // read without it by Name() (not GUARDED_BY: an id reaches a caller only
  // after its slot is written, so each slot is read after its one write).
  std::vector<const std::string*> names_;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  // Names each peer added. As many keys as peers that added a name, and
  // peers are members.
  absl::flat_hash_map<Uuid, size_t> added_by_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_STRING_DICT_H_
