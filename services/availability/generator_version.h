// Generator versions: which program made a sidecar ("thumbgen 1.2"), as the
// application registers it. They travel in gossip, so that Resolve can
// prefer holders of the newest version, say when the local copy is older
// than a peer's, and report two holders of one version with different bytes.
#ifndef SIDECAR_SERVICES_AVAILABILITY_GENERATOR_VERSION_H_
#define SIDECAR_SERVICES_AVAILABILITY_GENERATOR_VERSION_H_

#include <compare>
#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "services/availability/string_dict.h"

namespace sidecar::availability {

inline constexpr size_t kMaxGeneratorVersionBytes = 128;

// OK iff `v` can be a generator version: at most 128 bytes of UTF-8 without
// NUL or control characters (< 0x20, 0x7f). Empty is allowed (unknown).
absl::Status ValidateGeneratorVersion(absl::string_view v);

// The order of generator versions. A version is read as a generator name,
// then a number: the longest suffix of decimal components separated by '.'
// ("1", "1.2", "10.0.3"; each of 1..18 digits), optionally after a 'v', is
// the number; what precedes it, without one trailing ' ', '-', '_' or '/',
// is the name ("thumbgen 1.2" and "thumbgen-v1.2" are both thumbgen at
// 1.2; "1.2" is the empty name at 1.2).
//  - Equal strings are equivalent.
//  - Two versions with the same name (compared bytewise) compare by their
//    components, numerically, left to right; missing components count as
//    0 ("1.2" is equivalent to "1.2.0"; "1.10" is newer than "1.9").
//  - Anything else is unordered, neither newer nor older: different names
//    ("thumbgen 2" and "ocr 1"), and any version without a number ("",
//    "nightly", "thumbgen 1.2-beta"). So an unknown version never makes a
//    copy look stale, nor another one preferred.
std::partial_ordering CompareGeneratorVersions(absl::string_view a,
                                               absl::string_view b);

// Whether `a` is strictly newer than `b` in that order.
inline bool IsNewerGeneratorVersion(absl::string_view a, absl::string_view b) {
  return CompareGeneratorVersions(a, b) == std::partial_ordering::greater;
}

// The process-wide dictionary of generator versions (StringDict), so that
// a cache entry names its version in 11 bits (Entry::version). Id 0 is the
// empty version (none given).
class GeneratorVersionDict : public StringDict {
 public:
  // 11 bits in Entry.
  static constexpr size_t kCapacity = 2048;
  // Whatever peers send, this device can register this many new versions.
  static constexpr size_t kLocalReserve = 256;
  // A library uses a few versions per generator; one member that floods
  // stops here, and it takes 7 such members to fill the peers' part.
  static constexpr size_t kPerPeerShare = 256;

  static GeneratorVersionDict& Global();

  GeneratorVersionDict();
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_GENERATOR_VERSION_H_
