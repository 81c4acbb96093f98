// VariantDict: interns variant names ("grid@2x") to 16-bit ids so that a cache
// entry stays within 64 bytes. Well-known variants of the reference have
// fixed ids, so sort orders agree between processes for typical data.
#ifndef SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_
#define SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/uuid.h"

namespace sidecar::availability {

class VariantDict {
 public:
  static constexpr size_t kCapacity = 65536;
  // Ids only this device's own registrations may take: whatever peers send,
  // the device can still register sidecars under this many new variants.
  static constexpr size_t kLocalReserve = 4096;
  // New names one peer may add, however many batches it sends: a member
  // that floods the dictionary cannot keep the others from naming new
  // variants (it takes at least 8 such members to fill the peers' part,
  // kCapacity - kLocalReserve). Real libraries use a few dozen variants.
  static constexpr size_t kPerPeerShare = 8192;

  // The process-wide dictionary.
  static VariantDict& Global();

  VariantDict();
  VariantDict(const VariantDict&) = delete;
  VariantDict& operator=(const VariantDict&) = delete;

  // Returns the id of `name`, adding it if new, for this device's own
  // registrations. REQUIRES: name is a valid variant (ValidateVariant).
  // RESOURCE_EXHAUSTED once 65,536 distinct variants exist.
  absl::StatusOr<uint16_t> Intern(absl::string_view name)
      ABSL_LOCKS_EXCLUDED(mu_);

  // As Intern, for a name that `peer` sent. A new name is charged to the
  // peer: RESOURCE_EXHAUSTED once the peer has added kPerPeerShare names,
  // or once only the local reserve is left.
  absl::StatusOr<uint16_t> InternFromPeer(absl::string_view name,
                                          const Uuid& peer)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The id of `name` if it is known; never adds. Lookups of keys from
  // requests use this, so queries cannot fill the dictionary.
  std::optional<uint16_t> Find(absl::string_view name) const;

  // The name of an id returned by Intern. Lock-free: ids are only handed out
  // after their name is stored, and names are never moved or freed.
  absl::string_view Name(uint16_t id) const { return *names_[id]; }

  size_t size() const;
  // How many names `peer` has added.
  size_t added_by(const Uuid& peer) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Stores `name` under the next id. REQUIRES: mu_ held, name not present,
  // next_ < kCapacity.
  uint16_t AddLocked(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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

#endif  // SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_
