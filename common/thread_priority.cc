#include "common/thread_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sidecar {
namespace {
id_t ThisThreadId() { return static_cast<id_t>(syscall(SYS_gettid)); }
}  // namespace

int ThisThreadNice() {
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, ThisThreadId());
  return errno == 0 ? nice : 0;
}

absl::Status LowerThisThreadPriority(int nice) {
  nice = std::min(nice, 19);
  if (ThisThreadNice() >= nice) return absl::OkStatus();
  if (setpriority(PRIO_PROCESS, ThisThreadId(), nice) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "setting this thread's nice value to ", nice, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace sidecar
