#include "common/config.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

extern char** environ;

namespace sidecar {
namespace {

absl::Status SetFlag(absl::string_view name, absl::string_view value,
                     absl::string_view source) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": unknown setting \"", name, "\""));
  }
  std::string error;
  if (!flag->ParseFrom(value, &error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": bad value \"", value, "\" for ", name, ": ", error));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ApplyConfigText(text.str(), path);
}

absl::Status ApplyConfigText(absl::string_view text, absl::string_view source) {
  int lineno = 0;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    ++lineno;
    if (size_t hash = l.find('#'); hash != absl::string_view::npos) {
      l = l.substr(0, hash);
    }
    l = absl::StripAsciiWhitespace(l);
    if (l.empty()) continue;
    size_t eq = l.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", lineno, ": expected \"name = value\""));
    }
    absl::string_view name = absl::StripAsciiWhitespace(l.substr(0, eq));
    absl::string_view value = absl::StripAsciiWhitespace(l.substr(eq + 1));
    SC_RETURN_IF_ERROR(SetFlag(name, value, absl::StrCat(source, ":", lineno)));
  }
  return absl::OkStatus();
}

absl::Status ApplyEnvironment() {
  constexpr absl::string_view kPrefix = "SIDECAR_";
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view kv = *e;
    if (!absl::StartsWith(kv, kPrefix)) continue;
    size_t eq = kv.find('=');
    if (eq == absl::string_view::npos) continue;
    std::string name =
        absl::AsciiStrToLower(kv.substr(kPrefix.size(), eq - kPrefix.size()));
    if (name == "config") continue;
    // Variables for other programs may share the prefix: only known flags.
    if (absl::FindCommandLineFlag(name) == nullptr) continue;
    SC_RETURN_IF_ERROR(SetFlag(name, kv.substr(eq + 1),
                               absl::StrCat("environment ", kv.substr(0, eq))));
  }
  return absl::OkStatus();
}

std::vector<char*> ParseConfig(int argc, char** argv, const char* usage) {
  absl::SetProgramUsageMessage(usage);
  // --help lists the project's flags (Abseil's default shows only flags
  // defined in a file named after the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "services/") ||
           absl::StrContains(file, "common/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  std::string config_path;
  if (const char* env = std::getenv("SIDECAR_CONFIG")) config_path = env;
  // --config=FILE or --config FILE; consumed here, Abseil never sees it.
  std::vector<char*> args = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (absl::ConsumePrefix(&a, "--config=")) {
      config_path = std::string(a);
    } else if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else {
      args.push_back(argv[i]);
    }
  }
  absl::Status s;
  if (!config_path.empty()) s = ApplyConfigFile(config_path);
  if (s.ok()) s = ApplyEnvironment();
  if (!s.ok()) {
    // Exit 1, as Abseil does for a bad value on the command line.
    std::cerr << argv[0] << ": " << s.message() << "\n";
    std::exit(1);
  }
  return absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
}

}  // namespace sidecar
