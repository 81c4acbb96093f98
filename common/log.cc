#include "common/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sidecar {
namespace {

std::atomic<LogLevel> g_min_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};
std::string* g_tag = new std::string("sidecar");

// This thread's fields, outermost first.
thread_local std::vector<std::pair<std::string, std::string>> t_fields;

// `s` as a JSON string's contents.
void AppendJsonEscaped(std::string* out, absl::string_view s) {
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          *out += c;  // UTF-8 passes as is
        }
    }
  }
}

// A message or field value on one text line: newlines escaped.
void AppendOneLine(std::string* out, absl::string_view s) {
  for (char c : s) {
    if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else {
      *out += c;
    }
  }
}

void AppendTextField(std::string* out, absl::string_view key,
                     absl::string_view value) {
  absl::StrAppend(out, " ", key, "=");
  const bool quote =
      value.empty() || value.find_first_of(" =\"\n") != absl::string_view::npos;
  if (!quote) {
    AppendOneLine(out, value);
    return;
  }
  *out += '"';
  AppendJsonEscaped(out, value);
  *out += '"';
}

}  // namespace

void SetLogTag(absl::string_view tag) { *g_tag = std::string(tag); }
void SetMinLogLevel(LogLevel level) { g_min_level.store(level); }
LogLevel MinLogLevel() { return g_min_level.load(std::memory_order_relaxed); }
void SetLogFormat(LogFormat format) { g_format.store(format); }

ScopedLogFields::ScopedLogFields(
    std::initializer_list<std::pair<absl::string_view, absl::string_view>>
        fields) {
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;  // a request without an id, say
    t_fields.emplace_back(std::string(k), std::string(v));
    ++added_;
  }
}

ScopedLogFields::~ScopedLogFields() {
  t_fields.resize(t_fields.size() - added_);
}

std::string CurrentLogField(absl::string_view key) {
  for (auto it = t_fields.rbegin(); it != t_fields.rend(); ++it) {
    if (it->first == key) return it->second;
  }
  return "";
}

namespace internal {

LogMessage::LogMessage(LogLevel level, const char*, int) : level_(level) {}

LogMessage::~LogMessage() {
  static constexpr char kLetters[] = "DIWE";
  static constexpr const char* kNames[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  const std::string msg = stream_.str();
  std::string line;
  char buf[64];
  if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
             t.tm_sec, static_cast<long>(tv.tv_usec));
    absl::StrAppend(&line, "{\"ts\":\"", buf, "\",\"level\":\"",
                    kNames[static_cast<int>(level_)], "\",\"service\":\"");
    AppendJsonEscaped(&line, *g_tag);
    line += "\",\"msg\":\"";
    AppendJsonEscaped(&line, msg);
    line += '"';
    for (const auto& [k, v] : t_fields) {
      line += ",\"";
      AppendJsonEscaped(&line, k);
      line += "\":\"";
      AppendJsonEscaped(&line, v);
      line += '"';
    }
    line += "}\n";
  } else {
    snprintf(buf, sizeof(buf), "%c%02d%02d %02d:%02d:%02d.%06ld ",
             kLetters[static_cast<int>(level_)], t.tm_mon + 1, t.tm_mday,
             t.tm_hour, t.tm_min, t.tm_sec, static_cast<long>(tv.tv_usec));
    absl::StrAppend(&line, buf, *g_tag, "] ");
    AppendOneLine(&line, msg);
    for (const auto& [k, v] : t_fields) AppendTextField(&line, k, v);
    line += '\n';
  }
  ssize_t ignored = ::write(2, line.data(), line.size());
  (void)ignored;
}

}  // namespace internal
}  // namespace sidecar
