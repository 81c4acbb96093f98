// Fuzz target: the pairing code as a person types it
// (common/pairing_code.h, PairingCode::Parse), and the code formatter on
// the input's first 10 bytes as a secret and tag.
// Properties: a code parses only from exactly 16 code characters (hyphens
// and spaces aside); parse(ToString(c)) == c, in either case; ToString is
// four groups of four characters of Crockford's alphabet.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "common/pairing_code.h"
#include "tests/fuzz/fuzz_support.h"

namespace sidecar::fuzz {
namespace {

bool Same(const PairingCode& a, const PairingCode& b) {
  return a.secret == b.secret && a.tag == b.tag;
}

void CheckFormat(const PairingCode& code) {
  const std::string s = code.ToString();
  FUZZ_CHECK(s.size() == 19);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i % 5 == 4) {
      FUZZ_CHECK(s[i] == '-');
    } else {
      FUZZ_CHECK(std::strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", s[i]) !=
                     nullptr &&
                 s[i] != '\0');
    }
  }
  for (const std::string& typed : {s, absl::AsciiStrToLower(s)}) {
    absl::StatusOr<PairingCode> back = PairingCode::Parse(typed);
    FUZZ_CHECK(back.ok() && Same(*back, code));
  }
}

}  // namespace
}  // namespace sidecar::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  const absl::string_view text = AsText(data, size);
  absl::StatusOr<PairingCode> code = PairingCode::Parse(text);
  size_t chars = 0;
  for (char c : text) chars += c != '-' && c != ' ';
  if (code.ok()) {
    FUZZ_CHECK(chars == 16);
    CheckFormat(*code);
  } else {
    FUZZ_CHECK(code.status().code() == absl::StatusCode::kInvalidArgument);
  }
  if (size >= 10) {
    PairingCode raw;
    std::memcpy(raw.secret.data(), data, 5);
    std::memcpy(raw.tag.data(), data + 5, 5);
    CheckFormat(raw);
  }
  return 0;
}
