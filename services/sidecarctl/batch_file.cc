#include "services/sidecarctl/batch_file.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"

namespace sidecar::ctl {

absl::StatusOr<SidecarKey> ParseUri(absl::string_view uri) {
  absl::StatusOr<SidecarKey> key = ParseSidecarUri(std::string(uri));
  if (key.ok() ||
      absl::StartsWith(key.status().message(), "malformed sidecar URI")) {
    return key;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("malformed sidecar URI \"", uri.substr(0, 200),
                   "\": ", key.status().message()));
}

absl::StatusOr<bool> ParseBatchLine(absl::string_view line,
                                    v1::LocalSidecar* out) {
  absl::string_view l = absl::StripAsciiWhitespace(line);
  if (l.empty() || l[0] == '#') return false;
  std::vector<absl::string_view> f =
      absl::StrSplit(l, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (f.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected \"URI SIZE SHA256HEX\", found ", f.size(), " fields"));
  }
  absl::StatusOr<SidecarKey> key = ParseUri(f[0]);
  if (!key.ok()) return key.status();
  uint64_t size = 0;
  if (!absl::SimpleAtoi(f[1], &size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("size \"", f[1], "\" is not a whole number of bytes"));
  }
  absl::StatusOr<Sha256Digest> digest = DigestFromHex(std::string(f[2]));
  if (!digest.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sha256 \"", f[2].substr(0, 80), "\" is not 64 hex digits"));
  }
  out->Clear();
  KeyToProto(*key, out->mutable_key());
  out->set_size(size);
  out->set_sha256(std::string(DigestBytes(*digest)));
  return true;
}

absl::StatusOr<uint64_t> CheckBatchFile(std::istream& in,
                                        absl::string_view name) {
  uint64_t total = 0;
  std::string line;
  int lineno = 0;
  v1::LocalSidecar scratch;
  while (std::getline(in, line)) {
    ++lineno;
    absl::StatusOr<bool> used = ParseBatchLine(line, &scratch);
    if (!used.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ":", lineno, ": ", used.status().message()));
    }
    if (*used) ++total;
  }
  return total;
}

}  // namespace sidecar::ctl
