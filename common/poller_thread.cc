#include "common/poller_thread.h"

namespace sidecar {

PollerThread::PollerThread()
    : thread_([this] {
        void* tag;
        bool ok;
        // Nothing is ever queued: Next returns only at Shutdown.
        while (cq_.Next(&tag, &ok)) {
        }
      }) {}

PollerThread::~PollerThread() {
  cq_.Shutdown();
  thread_.join();
}

}  // namespace sidecar
