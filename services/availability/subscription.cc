#include "services/availability/subscription.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sidecar_key.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {

absl::StatusOr<Subscription> Subscription::FromProto(
    const v1::Subscription& proto) {
  if (static_cast<size_t>(proto.kinds_size()) > kMaxSubscribedKinds) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a subscription names at most ", kMaxSubscribedKinds, " kinds"));
  }
  if (static_cast<size_t>(proto.variants_size()) > kMaxSubscribedVariants) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a subscription names at most ", kMaxSubscribedVariants, " variants"));
  }
  Subscription s;
  for (int i = 0; i < proto.kinds_size(); ++i) {
    int k = proto.kinds(i);
    if (!v1::SidecarKind_IsValid(k) || k == v1::SIDECAR_KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat("subscription.kinds[", i, "]: unknown kind ", k));
    }
    s.kinds_ |= uint64_t{1} << k;
  }
  s.any_variant_ = proto.variants().empty();
  for (int i = 0; i < proto.variants_size(); ++i) {
    if (absl::Status v = ValidateVariant(proto.variants(i)); !v.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("subscription.variants[", i, "]: ", v.message()));
    }
    if (std::optional<uint16_t> id =
            VariantDict::Global().Find(proto.variants(i))) {
      s.variants_.push_back(*id);
    }
  }
  std::sort(s.variants_.begin(), s.variants_.end());
  s.max_entries_ = proto.max_entries();
  return s;
}

bool Subscription::Matches(const Entry& e) const {
  if ((kinds_ >> static_cast<unsigned>(e.kind()) & 1) == 0) return false;
  return any_variant_ ||
         std::binary_search(variants_.begin(), variants_.end(), e.variant());
}

absl::StatusOr<SubscriptionSpec> ParseSubscriptionSpec(
    absl::string_view kinds, absl::string_view variants) {
  SubscriptionSpec spec;
  for (absl::string_view k :
       absl::StrSplit(kinds, ',', absl::SkipWhitespace())) {
    k = absl::StripAsciiWhitespace(k);
    std::optional<Kind> kind = KindFromName(k);
    if (!kind) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--subscribe_kinds: unknown kind \"", k,
          "\"; use thumb, thumbstrip, proxy, embeddings, ocr, transcript or "
          "gaussian_splat"));
    }
    if (std::find(spec.kinds.begin(), spec.kinds.end(), *kind) ==
        spec.kinds.end()) {
      spec.kinds.push_back(*kind);
    }
  }
  for (absl::string_view v :
       absl::StrSplit(variants, ',', absl::SkipWhitespace())) {
    v = absl::StripAsciiWhitespace(v);
    if (absl::Status s = ValidateVariant(v); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--subscribe_variants: \"", v, "\": ", s.message()));
    }
    spec.variants.emplace_back(v);
  }
  if (spec.kinds.size() > kMaxSubscribedKinds ||
      spec.variants.size() > kMaxSubscribedVariants) {
    return absl::InvalidArgumentError(
        absl::StrCat("a leaf subscribes to at most ", kMaxSubscribedKinds,
                     " kinds and ", kMaxSubscribedVariants, " variants"));
  }
  return spec;
}

v1::Subscription SubscriptionToProto(const SubscriptionSpec& spec,
                                     uint64_t max_entries) {
  v1::Subscription p;
  for (Kind k : spec.kinds) p.add_kinds(k);
  for (const std::string& v : spec.variants) p.add_variants(v);
  p.set_max_entries(max_entries);
  return p;
}

}  // namespace sidecar::availability
