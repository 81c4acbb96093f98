#include "services/availability/generator_version.h"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/sidecar_key.h"

namespace sidecar::availability {
namespace {

struct Parsed {
  absl::string_view name;
  std::vector<uint64_t> components;
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Splits `v` into name and number as CompareGeneratorVersions describes;
// nullopt if it has no number.
std::optional<Parsed> Parse(absl::string_view v) {
  // Walk back over "digits(.digits)*" as far as it goes.
  size_t start = v.size();
  std::vector<uint64_t> reversed;
  while (true) {
    size_t end = start;
    while (start > 0 && IsDigit(v[start - 1])) --start;
    size_t digits = end - start;
    if (digits == 0 || digits > 18) return std::nullopt;
    uint64_t n = 0;
    for (char c : v.substr(start, digits)) n = n * 10 + (c - '0');
    reversed.push_back(n);
    if (start >= 2 && v[start - 1] == '.' && IsDigit(v[start - 2])) {
      --start;
      continue;
    }
    break;
  }
  auto separator = [](char c) {
    return c == ' ' || c == '-' || c == '_' || c == '/';
  };
  absl::string_view name = v.substr(0, start);
  // A 'v' right before the number, at the start or after a separator.
  if (!name.empty() && name.back() == 'v' &&
      (name.size() == 1 || separator(name[name.size() - 2]))) {
    name.remove_suffix(1);
  }
  if (!name.empty() && separator(name.back())) name.remove_suffix(1);
  Parsed p;
  p.name = name;
  p.components.assign(reversed.rbegin(), reversed.rend());
  return p;
}

}  // namespace

absl::Status ValidateGeneratorVersion(absl::string_view v) {
  if (v.size() > kMaxGeneratorVersionBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("generator version is ", v.size(), " bytes long; at most ",
                     kMaxGeneratorVersionBytes, " are allowed"));
  }
  for (char c : v) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(
          "generator version contains a NUL or control character");
    }
  }
  if (!IsUtf8(v)) {
    return absl::InvalidArgumentError("generator version is not valid UTF-8");
  }
  return absl::OkStatus();
}

std::partial_ordering CompareGeneratorVersions(absl::string_view a,
                                               absl::string_view b) {
  if (a == b) return std::partial_ordering::equivalent;
  std::optional<Parsed> pa = Parse(a), pb = Parse(b);
  if (!pa || !pb || pa->name != pb->name) {
    return std::partial_ordering::unordered;
  }
  size_t n = std::max(pa->components.size(), pb->components.size());
  for (size_t i = 0; i < n; ++i) {
    uint64_t x = i < pa->components.size() ? pa->components[i] : 0;
    uint64_t y = i < pb->components.size() ? pb->components[i] : 0;
    if (x != y) {
      return x < y ? std::partial_ordering::less
                   : std::partial_ordering::greater;
    }
  }
  return std::partial_ordering::equivalent;
}

GeneratorVersionDict& GeneratorVersionDict::Global() {
  static GeneratorVersionDict* dict = new GeneratorVersionDict();
  return *dict;
}

namespace {
constexpr absl::string_view kNoVersion[] = {""};
}  // namespace

GeneratorVersionDict::GeneratorVersionDict()
    : StringDict(
          Limits{kCapacity, kLocalReserve, kPerPeerShare, "generator versions",
                 "a generator version names a program and its release, "
                 "e.g. \"thumbgen 1.2\""},
          kNoVersion) {}

}  // namespace sidecar::availability
