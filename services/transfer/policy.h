// FetchPolicy: a device's strategy for fetch-or-generate.
//   prefer-fetch:     fetch whenever a peer has it (the default);
//   generate-cheap:   generate cheap kinds (e.g. thumbnails) locally, fetch
//                     the rest;
//   unmetered-only:   fetch only while this device is on an unmetered link.
#ifndef SIDECAR_SERVICES_TRANSFER_POLICY_H_
#define SIDECAR_SERVICES_TRANSFER_POLICY_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sidecar_key.h"

namespace sidecar::transfer {

class FetchPolicy {
 public:
  enum class Strategy { kPreferFetch, kGenerateCheap, kUnmeteredOnly };

  // Parses "prefer-fetch", "generate-cheap" or "unmetered-only", and a
  // comma-separated list of cheap kinds ("thumb,ocr").
  static absl::StatusOr<FetchPolicy> Make(absl::string_view strategy,
                                          bool metered,
                                          absl::string_view cheap_kinds);

  // nullopt if fetching `key` is allowed; else why it should be generated.
  // Uses the metered state given to Make.
  std::optional<std::string> GenerateInstead(const SidecarKey& key) const {
    return GenerateInstead(key, metered_);
  }
  // The same with the device's metered state now (it changes at run time:
  // PrefetchControl).
  std::optional<std::string> GenerateInstead(const SidecarKey& key,
                                             bool metered) const;

 private:
  Strategy strategy_ = Strategy::kPreferFetch;
  bool metered_ = false;
  std::vector<Kind> cheap_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_POLICY_H_
