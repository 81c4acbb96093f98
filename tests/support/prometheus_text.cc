#include "tests/support/prometheus_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace sidecar::testing {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// One line "name{a="x",b="y"} 1.5" (or "name 1.5"); false for comments
// and lines it cannot read. Label values here never hold '"' or ','.
bool ParseLine(const std::string& line, Sample* s) {
  if (line.empty() || line[0] == '#') return false;
  size_t brace = line.find('{');
  size_t space;
  if (brace != std::string::npos) {
    size_t close = line.find('}', brace);
    if (close == std::string::npos) return false;
    s->name = line.substr(0, brace);
    for (absl::string_view kv : absl::StrSplit(
             absl::string_view(line).substr(brace + 1, close - brace - 1), ',',
             absl::SkipEmpty())) {
      size_t eq = kv.find('=');
      if (eq == absl::string_view::npos || kv.size() < eq + 3) return false;
      s->labels[std::string(kv.substr(0, eq))] =
          std::string(kv.substr(eq + 2, kv.size() - eq - 3));
    }
    space = close + 1;
  } else {
    space = line.find(' ');
    if (space == std::string::npos) return false;
    s->name = line.substr(0, space);
  }
  std::string value(absl::StripAsciiWhitespace(line.substr(space)));
  // A timestamp may follow the value.
  value = value.substr(0, value.find(' '));
  return absl::SimpleAtod(value, &s->value);
}

std::vector<Sample> Matching(const std::string& text, const std::string& name,
                             const std::map<std::string, std::string>& labels) {
  std::vector<Sample> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    Sample s;
    if (!ParseLine(std::string(line), &s) || s.name != name) continue;
    bool all = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      all &= it != s.labels.end() && it->second == v;
    }
    if (all) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::string e = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect to port ", port, ": ", e));
  }
  std::string req =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return absl::UnavailableError("send failed");
  }
  std::string resp;
  char buf[16384];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0 || ::poll(&p, 1, left) <= 0) {
      ::close(fd);
      return absl::DeadlineExceededError("no whole answer in time");
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end = resp.find("\r\n\r\n");
  if (end == std::string::npos) {
    return absl::InternalError(absl::StrCat("not HTTP: ", resp.substr(0, 80)));
  }
  std::string status = resp.substr(0, resp.find("\r\n"));
  if (status.find(" 200 ") == std::string::npos) {
    return absl::NotFoundError(status);
  }
  return resp.substr(end + 4);
}

std::optional<double> SampleSum(
    const std::string& text, const std::string& name,
    const std::map<std::string, std::string>& labels) {
  std::vector<Sample> m = Matching(text, name, labels);
  if (m.empty()) return std::nullopt;
  double sum = 0;
  for (const Sample& s : m) sum += s.value;
  return sum;
}

int SampleCount(const std::string& text, const std::string& name,
                const std::map<std::string, std::string>& labels) {
  return static_cast<int>(Matching(text, name, labels).size());
}

}  // namespace sidecar::testing
