// LogCompactor: keeps the change log, and the own origin in memory, bounded.
// A background thread (at background CPU priority) checks every
// check_interval whether LocalInventory::CompactionDue, and if so runs
// LocalInventory::CompactLog, dropping tombstones older than the retention:
// peers that were online within the retention still get deltas, others a
// snapshot. Writes wait for one batch of a pass at most.
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_LOG_COMPACTOR_H_
#define SIDECAR_SERVICES_AVAILABILITY_LOG_COMPACTOR_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/availability/local_inventory.h"

namespace sidecar::availability {

class LogCompactor {
 public:
  struct Options {
    absl::Duration check_interval = absl::Seconds(30);
    absl::Duration tombstone_retention = absl::Hours(72);
  };
  // `inventory` must outlive this.
  LogCompactor(LocalInventory* inventory, Options options);
  ~LogCompactor();  // Stop()

  // Starts the thread.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops the thread, after the pass in progress if any. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // One check, and a pass if due; what the thread does each interval.
  void RunOnce();

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  LocalInventory* const inventory_;
  const Options options_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_LOG_COMPACTOR_H_
