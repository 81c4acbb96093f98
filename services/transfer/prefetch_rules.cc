#include "services/transfer/prefetch_rules.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sidecar::transfer {
namespace {

std::string RuleText(const PrefetchRule& r) {
  return absl::StrCat(KindName(r.kind), r.variant.empty() ? "" : "/", r.variant,
                      "=", PrefetchModeName(r.mode));
}

bool RuleLess(const PrefetchRule& a, const PrefetchRule& b) {
  return std::tie(a.kind, a.variant) < std::tie(b.kind, b.variant);
}

}  // namespace

absl::string_view PrefetchModeName(PrefetchMode mode) {
  switch (mode) {
    case PrefetchMode::kEager:
      return "eager";
    case PrefetchMode::kLazy:
      return "lazy";
    case PrefetchMode::kNever:
      return "never";
  }
  return "lazy";
}

absl::StatusOr<PrefetchRules> PrefetchRules::Parse(absl::string_view text) {
  PrefetchRules out;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prefetch rule \"", item, "\": ", why,
          " (rules look like thumb/grid@2x=eager,thumb=lazy,proxy=never)"));
    };
    // The last '=': a variant may hold one.
    const size_t eq = item.rfind('=');
    if (eq == absl::string_view::npos) {
      return bad("no mode; add =eager, =lazy or =never");
    }
    PrefetchRule rule;
    absl::string_view mode = absl::StripAsciiWhitespace(item.substr(eq + 1));
    if (mode == "eager") {
      rule.mode = PrefetchMode::kEager;
    } else if (mode == "lazy") {
      rule.mode = PrefetchMode::kLazy;
    } else if (mode == "never") {
      rule.mode = PrefetchMode::kNever;
    } else {
      return bad(absl::StrCat("unknown mode \"", mode,
                              "\"; use eager, lazy or never"));
    }
    absl::string_view lhs = absl::StripAsciiWhitespace(item.substr(0, eq));
    absl::string_view kind_name = lhs;
    if (size_t slash = lhs.find('/'); slash != absl::string_view::npos) {
      kind_name = lhs.substr(0, slash);
      rule.variant = std::string(lhs.substr(slash + 1));
      if (absl::Status s = ValidateVariant(rule.variant); !s.ok()) {
        return bad(absl::StrCat("variant: ", s.message()));
      }
    }
    std::optional<Kind> kind = KindFromName(kind_name);
    if (!kind) {
      return bad(absl::StrCat("unknown kind \"", kind_name, "\""));
    }
    rule.kind = *kind;
    for (const PrefetchRule& r : out.rules_) {
      if (r.kind == rule.kind && r.variant == rule.variant) {
        return bad(absl::StrCat("a rule for ", KindName(r.kind),
                                r.variant.empty() ? "" : "/", r.variant,
                                " was already given"));
      }
    }
    out.rules_.push_back(std::move(rule));
  }
  std::sort(out.rules_.begin(), out.rules_.end(), RuleLess);
  return out;
}

PrefetchRules PrefetchRules::EagerKinds(const std::vector<Kind>& kinds) {
  PrefetchRules out;
  for (Kind k : kinds) {
    PrefetchRule r{.kind = k, .variant = "", .mode = PrefetchMode::kEager};
    if (std::find(out.rules_.begin(), out.rules_.end(), r) == out.rules_.end())
      out.rules_.push_back(r);
  }
  std::sort(out.rules_.begin(), out.rules_.end(), RuleLess);
  return out;
}

const PrefetchRule* PrefetchRules::Match(const SidecarKey& key) const {
  const PrefetchRule* kind_rule = nullptr;
  for (const PrefetchRule& r : rules_) {
    if (r.kind != key.kind) continue;
    if (r.variant.empty()) {
      kind_rule = &r;
    } else if (r.variant == key.variant) {
      return &r;
    }
  }
  return kind_rule;
}

PrefetchMode PrefetchRules::ModeOf(const SidecarKey& key) const {
  const PrefetchRule* r = Match(key);
  return r != nullptr ? r->mode : PrefetchMode::kLazy;
}

std::string PrefetchRules::RuleFor(const SidecarKey& key) const {
  const PrefetchRule* r = Match(key);
  return r != nullptr ? RuleText(*r) : std::string();
}

std::vector<Kind> PrefetchRules::EagerKindList() const {
  std::vector<Kind> out;
  for (const PrefetchRule& r : rules_) {
    if (r.mode == PrefetchMode::kEager &&
        (out.empty() || out.back() != r.kind)) {
      out.push_back(r.kind);
    }
  }
  return out;
}

std::string PrefetchRules::ToString() const {
  std::vector<std::string> parts;
  for (const PrefetchRule& r : rules_) parts.push_back(RuleText(r));
  return absl::StrJoin(parts, ",");
}

}  // namespace sidecar::transfer
