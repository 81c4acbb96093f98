// PollerThread: a thread that always waits in gRPC's poller, so that a
// request is read as soon as it arrives.
//
// gRPC 1.51 (Debian's) has no background I/O threads. A server that has both
// sync and callback methods (ours: every service, as streams use the
// callback API and the health and reflection services are there too) takes
// its sync requests from completion queues that do not poll
// (GRPC_CQ_NON_POLLING, ServerBuilder's "hybrid server"): it relies on the
// threads of the callback API's completion queue to read the sockets. Those
// threads leave the poller for 100 ms whenever a second passes without a
// callback event (CallbackAlternativeCQ). A request that arrives meanwhile
// waits until one comes back: on an idle device, a WhoHas that takes 0.05 ms
// in its handler took 95–100 ms once every 1.1 s.
//
// This thread blocks in CompletionQueue::Next on a queue nothing is put on,
// so gRPC always has a thread to poll with (the poll set is process-wide).
// It wakes only for I/O, never on a timer. One per ServerHost.
#ifndef SIDECAR_COMMON_POLLER_THREAD_H_
#define SIDECAR_COMMON_POLLER_THREAD_H_

#include <grpcpp/grpcpp.h>

#include <thread>

namespace sidecar {

class PollerThread {
 public:
  PollerThread();
  // Shuts the queue down and joins the thread.
  ~PollerThread();
  PollerThread(const PollerThread&) = delete;
  PollerThread& operator=(const PollerThread&) = delete;

 private:
  grpc::CompletionQueue cq_;
  std::thread thread_;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_POLLER_THREAD_H_
