// PrefetchRules: which sidecars this device prefetches, per kind and per
// variant. Each rule gives a (kind[, variant]) one of three modes:
//
//   eager: prefetched as soon as a peer advertises it (and caught up with
//          what peers already hold);
//   lazy:  fetched on request only (any priority);
//   never: never fetched in the background: not prefetched, and a Fetch at
//          PRIORITY_PREFETCH answers GENERATE with the rule as the reason.
//          Interactive and normal requests are still served: a person asked.
//
// A variant rule overrides its kind's rule; a kind without a rule is lazy.
// The text form, as flags, the local API and sidecarctl take it:
//
//   thumb/grid@2x=eager,thumb=lazy,proxy=never
#ifndef SIDECAR_SERVICES_TRANSFER_PREFETCH_RULES_H_
#define SIDECAR_SERVICES_TRANSFER_PREFETCH_RULES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sidecar_key.h"

namespace sidecar::transfer {

enum class PrefetchMode { kEager, kLazy, kNever };

// "eager", "lazy", "never".
absl::string_view PrefetchModeName(PrefetchMode mode);

struct PrefetchRule {
  Kind kind = v1::SIDECAR_KIND_UNSPECIFIED;
  std::string variant;  // empty: the whole kind
  PrefetchMode mode = PrefetchMode::kLazy;

  bool operator==(const PrefetchRule&) const = default;
};

class PrefetchRules {
 public:
  // No rules: everything lazy.
  PrefetchRules() = default;

  // Parses the text form: comma-separated KIND[/VARIANT]=MODE, whitespace
  // around items ignored, empty text: no rules. INVALID_ARGUMENT naming the
  // rule for an unknown kind or mode, a bad variant, or a (kind, variant)
  // given twice.
  static absl::StatusOr<PrefetchRules> Parse(absl::string_view text);

  // One eager rule per kind (the --prefetch_kinds form).
  static PrefetchRules EagerKinds(const std::vector<Kind>& kinds);

  // The mode for `key`: its variant's rule, else its kind's, else lazy.
  PrefetchMode ModeOf(const SidecarKey& key) const;

  // The rule that decides `key`, as text ("thumb/grid@2x=eager"), or empty
  // if none does (lazy by default). For reasons given to callers.
  std::string RuleFor(const SidecarKey& key) const;

  // Kinds with at least one eager rule (kind or variant), in kind order:
  // what the prefetcher watches and lists.
  std::vector<Kind> EagerKindList() const;

  // The canonical text form (by kind, a kind's own rule before its variants');
  // Parse(ToString()) gives equal rules.
  std::string ToString() const;

  const std::vector<PrefetchRule>& rules() const { return rules_; }

  bool operator==(const PrefetchRules&) const = default;

 private:
  // The rule that decides for `key`: its variant's, else its kind's, else
  // none.
  const PrefetchRule* Match(const SidecarKey& key) const;

  std::vector<PrefetchRule> rules_;  // sorted: (kind, variant)
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PREFETCH_RULES_H_
