// Minimal leveled logging to stderr (Debian's Abseil predates absl/log).
//
//   SC_LOG(INFO) << "listening on " << addr;
//
// One line per event. As text (the default):
//   I1126 13:50:20.123456 availability] message request_id=... job=...
// or, with SetLogFormat(kJson), one JSON object per line:
//   {"ts":"2026-11-26T13:50:20.123456Z","level":"INFO","service":
//    "availability","msg":"message","request_id":"..."}
// The key=value fields are those of the ScopedLogFields alive on the
// logging thread (a fetch's request id, say). Newlines in a message are
// escaped, so a line is always one event. Thread-safe: each statement is
// written with one write(2).
#ifndef SIDECAR_COMMON_LOG_H_
#define SIDECAR_COMMON_LOG_H_

#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace sidecar {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

enum class LogFormat { kText, kJson };

// Process-wide settings; call once at start-up.
void SetLogTag(absl::string_view tag);
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
void SetLogFormat(LogFormat format);

// Fields added to every line logged on this thread while it lives (nested
// scopes add to the outer ones; empty values are left out). Keys are short
// identifiers; values are quoted in text when they hold spaces, '=' or '"'.
//
//   ScopedLogFields fields({{"request_id", job.id}});
class ScopedLogFields {
 public:
  ScopedLogFields(
      std::initializer_list<std::pair<absl::string_view, absl::string_view>>
          fields);
  ~ScopedLogFields();
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;

 private:
  size_t added_ = 0;
};

// The value of `key` among this thread's fields (innermost first); empty if
// none.
std::string CurrentLogField(absl::string_view key);

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;  // the message only
};
// Turns `stream << ...` into void so both arms of SC_LOG's ?: agree.
struct LogVoidify {
  void operator&(std::ostream&) {}
};
}  // namespace internal

}  // namespace sidecar

#define SC_LOG_LEVEL_DEBUG ::sidecar::LogLevel::kDebug
#define SC_LOG_LEVEL_INFO ::sidecar::LogLevel::kInfo
#define SC_LOG_LEVEL_WARNING ::sidecar::LogLevel::kWarning
#define SC_LOG_LEVEL_ERROR ::sidecar::LogLevel::kError

// An expression, not an if-statement, so that `if (x) SC_LOG(INFO) << y;
// else ...` means what it says.
#define SC_LOG(level)                                                       \
  (SC_LOG_LEVEL_##level < ::sidecar::MinLogLevel())                         \
      ? (void)0                                                             \
      : ::sidecar::internal::LogVoidify() &                                 \
            ::sidecar::internal::LogMessage(SC_LOG_LEVEL_##level, __FILE__, \
                                            __LINE__)                       \
                .stream()

#endif  // SIDECAR_COMMON_LOG_H_
