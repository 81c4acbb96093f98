#include "services/transfer/policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sidecar::transfer {

absl::StatusOr<FetchPolicy> FetchPolicy::Make(absl::string_view strategy,
                                              bool metered,
                                              absl::string_view cheap_kinds) {
  FetchPolicy p;
  if (strategy == "prefer-fetch") {
    p.strategy_ = Strategy::kPreferFetch;
  } else if (strategy == "generate-cheap") {
    p.strategy_ = Strategy::kGenerateCheap;
  } else if (strategy == "unmetered-only") {
    p.strategy_ = Strategy::kUnmeteredOnly;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown strategy \"", strategy,
                     "\"; use prefer-fetch, generate-cheap or unmetered-only"));
  }
  p.metered_ = metered;
  for (absl::string_view k :
       absl::StrSplit(cheap_kinds, ',', absl::SkipEmpty())) {
    std::optional<Kind> kind = KindFromName(absl::StripAsciiWhitespace(k));
    if (!kind) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown kind \"", k, "\" in the cheap kinds"));
    }
    p.cheap_.push_back(*kind);
  }
  return p;
}

std::optional<std::string> FetchPolicy::GenerateInstead(const SidecarKey& key,
                                                        bool metered) const {
  switch (strategy_) {
    case Strategy::kPreferFetch:
      return std::nullopt;
    case Strategy::kGenerateCheap:
      for (Kind k : cheap_) {
        if (k == key.kind) {
          return absl::StrCat("this device generates ", KindName(key.kind),
                              " sidecars itself (strategy generate-cheap)");
        }
      }
      return std::nullopt;
    case Strategy::kUnmeteredOnly:
      if (metered) {
        return "this device is on a metered link and fetches only on "
               "unmetered ones (strategy unmetered-only)";
      }
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace sidecar::transfer
