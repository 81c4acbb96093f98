// VariantDict: interns variant names ("grid@2x") to 16-bit ids so that a cache
// entry stays within 64 bytes (a StringDict). Well-known variants of the
// reference have fixed ids, so sort orders agree between processes for
// typical data.
#ifndef SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_
#define SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_

#include <cstddef>

#include "services/availability/string_dict.h"

namespace sidecar::availability {

class VariantDict : public StringDict {
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

  // The process-wide dictionary. Intern requires a valid variant
  // (ValidateVariant).
  static VariantDict& Global();

  VariantDict();
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_VARIANT_DICT_H_
