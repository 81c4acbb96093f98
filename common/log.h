// Minimal leveled logging to stderr (Debian's Abseil predates absl/log).
//
//   SC_LOG(INFO) << "listening on " << addr;
//
// Lines are "I1126 13:50:20.123456 availability] message". Thread-safe: each
// statement is written with one write(2).
#ifndef SIDECAR_COMMON_LOG_H_
#define SIDECAR_COMMON_LOG_H_

#include <sstream>

#include "absl/strings/string_view.h"

namespace sidecar {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Process-wide settings; call once at start-up.
void SetLogTag(absl::string_view tag);
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
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
