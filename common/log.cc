#include "common/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <string>

namespace sidecar {
namespace {
std::atomic<LogLevel> g_min_level{LogLevel::kInfo};
std::string* g_tag = new std::string("sidecar");
}  // namespace

void SetLogTag(absl::string_view tag) { *g_tag = std::string(tag); }
void SetMinLogLevel(LogLevel level) { g_min_level.store(level); }
LogLevel MinLogLevel() { return g_min_level.load(std::memory_order_relaxed); }

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level) {
  static constexpr char kLetters[] = "DIWE";
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char buf[64];
  snprintf(buf, sizeof(buf), "%c%02d%02d %02d:%02d:%02d.%06ld ",
           kLetters[static_cast<int>(level)], t.tm_mon + 1, t.tm_mday,
           t.tm_hour, t.tm_min, t.tm_sec, static_cast<long>(tv.tv_usec));
  stream_ << buf << *g_tag << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  std::string s = stream_.str();
  ssize_t ignored = ::write(2, s.data(), s.size());
  (void)ignored;
  (void)level_;
}

}  // namespace internal
}  // namespace sidecar
