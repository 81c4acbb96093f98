// UsageRecorder: records that local sidecars were used (a Resolve answered
// LOCAL) without a database write per use. Uses are coalesced in memory,
// one entry per key, and written in batches (InventoryStore::TouchUsed) by
// a background thread every flush interval, and once more on Stop. The
// store quota's eviction order (least recently used first) reads them.
//
// Bounded: at most max_pending distinct keys wait for a flush; uses of
// further keys before the next flush are dropped (counted), which only makes
// those sidecars look older than they are.
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_USAGE_RECORDER_H_
#define SIDECAR_SERVICES_AVAILABILITY_USAGE_RECORDER_H_

#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/sidecar_key.h"
#include "services/availability/inventory_store.h"

namespace sidecar::availability {

class UsageRecorder {
 public:
  struct Options {
    absl::Duration flush_interval = absl::Seconds(30);
    size_t max_pending = 100000;
  };
  // `store` must outlive this.
  UsageRecorder(InventoryStore* store, Options options);
  ~UsageRecorder();  // Stop()

  // Starts the flushing thread.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Flushes what is pending and joins the thread. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Records a use of `key` now. Cheap: a hash-set insert under a mutex.
  void Touch(const SidecarKey& key) ABSL_LOCKS_EXCLUDED(mu_);

  // Writes the pending uses (in batches of kMaxKeysPerRequest), all stamped
  // with the time of this flush. On a store error the batch is dropped
  // (logged): a lost use only makes a sidecar look older.
  absl::Status Flush() ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t pending() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  InventoryStore* const store_;
  const Options options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<SidecarKey> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_USAGE_RECORDER_H_
