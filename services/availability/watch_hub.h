// WatchHub: fans availability changes out to Watch streams. Each stream has a
// bounded queue; a watcher that falls more than kMaxQueued events behind is
// ended with RESOURCE_EXHAUSTED (it should list again and re-watch) rather
// than slowing gossip down. Publishing never blocks.
#ifndef SIDECAR_SERVICES_AVAILABILITY_WATCH_HUB_H_
#define SIDECAR_SERVICES_AVAILABILITY_WATCH_HUB_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "services/availability/entry.h"
#include "sidecar/v1/availability.pb.h"

namespace sidecar::availability {

class WatchHub {
 public:
  static constexpr size_t kMaxQueued = 65536;

  WatchHub() = default;
  ~WatchHub();

  // A reactor for one Watch call; owned by gRPC, deleted when done.
  grpc::ServerWriteReactor<v1::AvailabilityEvent>* Open(
      const v1::WatchRequest& request);

  // Cheap check so producers can skip building events nobody reads.
  bool HasWatchers() const { return watchers_.load() > 0; }

  // ADDED / REMOVED events for entries of `device` that changed.
  void PublishEntries(const Uuid& device, bool is_local,
                      absl::Span<const Entry> changed);
  // A single event (RESET, ONLINE, OFFLINE).
  void Publish(const v1::AvailabilityEvent& event);

  // Ends every stream (OK); later Opens end at once with UNAVAILABLE.
  void Shutdown();

 private:
  class Watcher;
  friend class Watcher;
  void Remove(Watcher* w) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_set<Watcher*> active_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> watchers_{0};
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_WATCH_HUB_H_
