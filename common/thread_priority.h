// CPU priority of bulk work. A device that sends or receives a snapshot of a
// million entries spends a core on encoding and decoding it for a few hundred
// milliseconds; on a phone or a two-core server the threads answering local
// requests (WhoHas, Resolve, an interactive fetch) must get the CPU first.
// Threads doing such bulk work run at a higher nice value, so the scheduler
// lets a woken request thread preempt them at once.
//
// Linux keeps a nice value per thread; raising one's own needs no privilege,
// lowering it again does. So only threads that do nothing else are lowered:
// the gossip threads of PeerManager and the encoder pool of PeerService.
#ifndef SIDECAR_COMMON_THREAD_PRIORITY_H_
#define SIDECAR_COMMON_THREAD_PRIORITY_H_

#include "absl/status/status.h"

namespace sidecar {

// The nice value of threads doing background bulk work. About a tenth of
// the CPU share of a nice 0 thread when both are runnable.
inline constexpr int kBackgroundNice = 10;

// Raises the calling thread's nice value to `nice` (19 at most); a thread
// already at `nice` or above is left as it is. An error if the kernel
// refuses, which callers may log and ignore: priority is an optimization.
absl::Status LowerThisThreadPriority(int nice);

// The calling thread's nice value.
int ThisThreadNice();

}  // namespace sidecar

#endif  // SIDECAR_COMMON_THREAD_PRIORITY_H_
