// Configuration from flags, environment and an optional config file.
//
// Every Abseil flag of the binary can also be set by the environment variable
// SIDECAR_<FLAG_NAME_UPPERCASE> or by a line "flag_name = value" in the file
// named by --config=FILE / --config FILE (or SIDECAR_CONFIG). Precedence:
// command line, then environment, then config file, then the flag's default.
#ifndef SIDECAR_COMMON_CONFIG_H_
#define SIDECAR_COMMON_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sidecar {

// Parses argv (after applying the config file and environment). On a bad
// value prints a message naming its source and exits with status 1.
// Returns positional arguments (argv[0] first).
std::vector<char*> ParseConfig(int argc, char** argv, const char* usage);

// Applies "name = value" lines of a config file; '#' starts a comment.
absl::Status ApplyConfigFile(const std::string& path);
// Applies the text of a config file, lines split at '\n' as the file's are;
// messages name `source` and the line. Flags set before the first bad line
// stay set (the caller exits on any error).
absl::Status ApplyConfigText(absl::string_view text, absl::string_view source);
// Applies SIDECAR_* variables that name known flags.
absl::Status ApplyEnvironment();

}  // namespace sidecar

#endif  // SIDECAR_COMMON_CONFIG_H_
