// Fuzz target: sidecarctl's `register --batch` files
// (services/sidecarctl/batch_file.h): CheckBatchFile on the input as a
// whole file, and ParseBatchLine on each of its lines.
// Properties: the file check fails exactly when some line is bad, naming
// that line, and otherwise counts the lines that name a sidecar; a parsed
// line holds a valid key (CheckValidKey) and a 32-byte SHA-256, and the
// line written back from it parses to the same record.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/sidecarctl/batch_file.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  const absl::string_view text = AsText(data, size);
  std::istringstream in{std::string(text)};
  absl::StatusOr<uint64_t> total = ctl::CheckBatchFile(in, "fuzz.batch");

  // Lines as std::getline splits them: no empty last line after a final
  // newline.
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  uint64_t used = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    v1::LocalSidecar out;
    absl::StatusOr<bool> ok = ctl::ParseBatchLine(lines[i], &out);
    if (!ok.ok()) {
      FUZZ_CHECK(ok.status().code() == absl::StatusCode::kInvalidArgument);
      // The file check stopped at the first bad line, this one.
      FUZZ_CHECK(!total.ok());
      FUZZ_CHECK(absl::StartsWith(total.status().message(),
                                  absl::StrCat("fuzz.batch:", i + 1, ": ")));
      return 0;
    }
    if (!*ok) continue;
    ++used;
    absl::StatusOr<SidecarKey> key = KeyFromProto(out.key());
    FUZZ_CHECK(key.ok());
    CheckValidKey(*key);
    FUZZ_CHECK(out.sha256().size() == 32);
    std::string again =
        absl::StrCat(FormatSidecarUri(*key), " ", out.size(), "\t",
                     absl::BytesToHexString(out.sha256()));
    v1::LocalSidecar out2;
    absl::StatusOr<bool> ok2 = ctl::ParseBatchLine(again, &out2);
    FUZZ_CHECK(ok2.ok() && *ok2);
    FUZZ_CHECK(out2.SerializeAsString() == out.SerializeAsString());
  }
  FUZZ_CHECK(total.ok() && *total == used);
  return 0;
}
