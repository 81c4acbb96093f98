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

namespace sidecar::availability {

class VariantDict {
 public:
  static constexpr size_t kCapacity = 65536;
  // Ids only this device's own registrations may take: whatever peers send,
  // the device can still register sidecars under this many new variants.
  static constexpr size_t kLocalReserve = 4096;

  // Who asks for a new id. Names from peers may fill the dictionary only up
  // to kCapacity - kLocalReserve.
  enum class Source { kLocal, kPeer };

  // The process-wide dictionary.
  static VariantDict& Global();

  VariantDict();
  VariantDict(const VariantDict&) = delete;
  VariantDict& operator=(const VariantDict&) = delete;

  // Returns the id of `name`, adding it if new. REQUIRES: name is a valid
  // variant (ValidateVariant). RESOURCE_EXHAUSTED once 65,536 distinct
  // variants exist, or, for kPeer, once only the local reserve is left.
  absl::StatusOr<uint16_t> Intern(absl::string_view name,
                                  Source source = Source::kLocal);

  // The id of `name` if it is known; never adds. Lookups of keys from
  // requests use this, so queries cannot fill the dictionary.
  std::optional<uint16_t> Find(absl::string_view name) const;

  // The name of an id returned by Intern. Lock-free: ids are only handed out
  // after their name is stored, and names are never moved or freed.
  absl::string_view Name(uint16_t id) const { return *names_[id]; }

  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint16_t> ids_ ABSL_GUARDED_BY(mu_);
  // Fixed-size table of stable pointers; written once per id under mu_,
  // read without it by Name() (not GUARDED_BY: an id reaches a caller only
  // after its slot is written, so each slot is read after its one write).
  std::vector<const std::string*> names_;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_
