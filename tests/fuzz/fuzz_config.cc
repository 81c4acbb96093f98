// Fuzz target: the config-file parser (common/config.h, ApplyConfigText;
// ApplyConfigFile reads the file and calls it) on any text, against the
// flags of the services (common/service_flags.cc) and a few of other types
// defined here, so that values reach Abseil's parsers of each kind.
// Properties: a refusal is INVALID_ARGUMENT naming the source and a line
// that exists; text that applied applies again with the same result; the
// values it set, written back as "name = value" lines, apply and read back
// the same (for values the syntax can carry: no '#', no newline, no
// surrounding blanks). Flags are restored after each input (FlagSaver).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/service_flags.h"
#include "tests/fuzz/fuzz_support.h"

ABSL_FLAG(int32_t, fuzz_int32, 7, "a 32-bit integer");
ABSL_FLAG(uint64_t, fuzz_uint64, 0, "an unsigned integer");
ABSL_FLAG(double, fuzz_double, 0.5, "a floating-point number");
ABSL_FLAG(absl::Duration, fuzz_duration, absl::Seconds(1), "a duration");
ABSL_FLAG(std::vector<std::string>, fuzz_list, {}, "a comma-separated list");
ABSL_FLAG(std::string, fuzz_string, "", "a string");

namespace sidecar::fuzz {
namespace {

constexpr absl::string_view kSource = "fuzz.conf";
constexpr const char* kFlags[] = {
    "fuzz_int32",    "fuzz_uint64",  "fuzz_double",
    "fuzz_duration", "fuzz_list",    "fuzz_string",
    "state_dir",     "local_listen", "local_listen_allow_network"};

std::vector<std::string> Values() {
  std::vector<std::string> v;
  for (const char* name : kFlags) {
    absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    FUZZ_CHECK(f != nullptr);
    v.push_back(f->CurrentValue());
  }
  return v;
}

bool Writable(absl::string_view value) {
  return value.find_first_of("#\n") == absl::string_view::npos &&
         absl::StripAsciiWhitespace(value) == value;
}

}  // namespace
}  // namespace sidecar::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  absl::FlagSaver restore;
  const absl::string_view text = AsText(data, size);
  absl::Status s = ApplyConfigText(text, kSource);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    absl::string_view m = s.message();
    FUZZ_CHECK(absl::ConsumePrefix(&m, absl::StrCat(kSource, ":")));
    int line = 0;
    FUZZ_CHECK(absl::SimpleAtoi(m.substr(0, m.find(':')), &line));
    FUZZ_CHECK(line >= 1 && static_cast<size_t>(line) <=
                                1 + static_cast<size_t>(std::count(
                                        text.begin(), text.end(), '\n')));
    return 0;
  }
  const std::vector<std::string> set = Values();
  // What the services read is what the file said.
  const std::string state_dir = set[6], local_listen = set[7];
  if (!state_dir.empty()) FUZZ_CHECK(StateDirFromFlags() == state_dir);
  LocalListener listener = LocalListenerFromFlags("/state", "availability");
  if (!local_listen.empty()) FUZZ_CHECK(listener.address == local_listen);
  FUZZ_CHECK(listener.allow_network == (set[8] == "true"));

  FUZZ_CHECK(ApplyConfigText(text, kSource).ok());
  FUZZ_CHECK(Values() == set);

  std::string written;
  for (size_t i = 0; i < set.size(); ++i) {
    if (Writable(set[i]))
      absl::StrAppend(&written, kFlags[i], " = ", set[i], "\n");
  }
  FUZZ_CHECK(ApplyConfigText(written, kSource).ok());
  FUZZ_CHECK(Values() == set);
  return 0;
}
