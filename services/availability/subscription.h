// Subscription: what a leaf device wants mirrored of its peers' entries.
//
// A leaf (a phone) does not keep every sidecar of every peer: it names the
// kinds, and optionally the variants, it wants (thumbnails of the grid size,
// say), and each peer sends it only its own entries that match, up to a
// number the leaf can afford (peer.proto, Subscription). Everything else the
// leaf asks a full member about on demand (delegation.h).
#ifndef SIDECAR_SERVICES_AVAILABILITY_SUBSCRIPTION_H_
#define SIDECAR_SERVICES_AVAILABILITY_SUBSCRIPTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/availability/entry.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

// Bounds on a subscription from the wire.
inline constexpr size_t kMaxSubscribedKinds = 16;
inline constexpr size_t kMaxSubscribedVariants = 64;

// What a leaf counts per mirrored entry against its byte budget: the
// 64-byte entry, its table's slack and the allocator's (measured with
// availability_bench --bench=leaf: 80,000 to 100,000 mirrored entries cost
// 95 to 115 bytes each of resident memory).
inline constexpr size_t kLeafBytesPerEntry = 96;

// A validated subscription, ready to match cache entries.
class Subscription {
 public:
  // Matches nothing.
  Subscription() = default;

  // Validates a subscription from a peer: known kinds, at most
  // kMaxSubscribedKinds of them and kMaxSubscribedVariants valid variant
  // names. INVALID_ARGUMENT / RESOURCE_EXHAUSTED saying what is wrong.
  // Variants this device has never seen are kept out of the dictionary
  // (no entry here can have them), so a peer cannot fill it this way.
  static absl::StatusOr<Subscription> FromProto(const v1::Subscription& proto);

  // Whether the leaf wants `e`.
  bool Matches(const Entry& e) const;
  // Whether it matches no entry at all.
  bool empty() const { return kinds_ == 0; }
  uint64_t max_entries() const { return max_entries_; }

 private:
  uint64_t kinds_ = 0;  // bit k: kind k
  bool any_variant_ = true;
  std::vector<uint16_t> variants_;  // sorted ids; when !any_variant_
  uint64_t max_entries_ = 0;
};

// What a leaf subscribes to, as given on its command line.
struct SubscriptionSpec {
  std::vector<Kind> kinds;
  std::vector<std::string> variants;  // empty: every variant
};

// Parses --subscribe_kinds ("thumb,ocr") and --subscribe_variants
// ("grid,grid@2x"; empty for all). INVALID_ARGUMENT naming the bad item.
absl::StatusOr<SubscriptionSpec> ParseSubscriptionSpec(
    absl::string_view kinds, absl::string_view variants);

// The wire form of `spec` with room for `max_entries`.
v1::Subscription SubscriptionToProto(const SubscriptionSpec& spec,
                                     uint64_t max_entries);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_SUBSCRIPTION_H_
