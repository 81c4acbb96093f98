#include "common/bytes_format.h"

#include <cmath>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sidecar {

std::string HumanBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", v, kUnits[unit]);
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text,
                     "' is not a size: write bytes or a number with k, M, G or "
                     "T (binary units), e.g. 512M or 2G"));
  };
  if (t.empty()) return bad();
  for (absl::string_view suffix : {"ib", "b"}) {
    if (t.size() > suffix.size() && absl::EndsWith(t, suffix)) {
      t.resize(t.size() - suffix.size());
      break;
    }
  }
  uint64_t unit = 1;
  switch (t.back()) {
    case 'k':
      unit = 1ull << 10;
      break;
    case 'm':
      unit = 1ull << 20;
      break;
    case 'g':
      unit = 1ull << 30;
      break;
    case 't':
      unit = 1ull << 40;
      break;
    default:
      break;
  }
  if (unit != 1) t.pop_back();
  uint64_t whole = 0;
  if (absl::SimpleAtoi(t, &whole)) {
    if (whole > UINT64_MAX / unit) return bad();
    return whole * unit;
  }
  double d = 0;
  if (unit == 1 || !absl::SimpleAtod(t, &d) || !std::isfinite(d) || d < 0 ||
      d * static_cast<double>(unit) > 1.8e19) {
    return bad();
  }
  return static_cast<uint64_t>(d * static_cast<double>(unit));
}

}  // namespace sidecar
