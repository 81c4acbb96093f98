#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

// Ids 0..N-1, in this order. Append only: order decides fixed ids.
constexpr absl::string_view kWellKnown[] = {
    "icon@1x",
    "icon@2x",
    "grid@1x",
    "grid@2x",
    "detail@1x",
    "detail@2x",
    "thumbstrip_preview",
    "thumbstrip_detailed",
    "thumbstrip_mobile",
    "proxy_scrub",
    "proxy_ultra",
    "proxy_quick",
    "proxy_edit",
    "srt",
    "ply",
    "text",
    "default",
};

}  // namespace

VariantDict& VariantDict::Global() {
  static VariantDict* dict = new VariantDict();
  return *dict;
}

VariantDict::VariantDict()
    : StringDict(
          Limits{kCapacity, kLocalReserve, kPerPeerShare, "variant names",
                 "variants are meant to be a small vocabulary such as "
                 "\"grid@2x\""},
          kWellKnown) {}

}  // namespace sidecar::availability
