#include "services/availability/log_mark.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sidecar::availability {

absl::StatusOr<std::optional<LogPosition>> ReadLogMark(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return std::nullopt;
    return absl::UnavailableError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  if (s.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is too long"));
  }
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(s), ' ');
  LogPosition mark;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &mark.generation) ||
      !absl::SimpleAtoi(parts[1], &mark.max_seq)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not \"<generation> <seq>\""));
  }
  return mark;
}

absl::Status WriteLogMark(const std::string& path, const LogPosition& mark) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << mark.generation << " " << mark.max_seq << "\n";
    out.close();
    if (!out) {
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace sidecar::availability
