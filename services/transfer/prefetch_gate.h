// PrefetchGate: how many prefetch attempts may run at once, and whether
// prefetch is paused (metered link). The Fetcher's workers and batch lanes
// take a slot before they claim prefetch work and give it back when the
// attempt or batch ends; without a slot they claim only normal and
// interactive jobs, so prefetch jobs stay queued. A batch of prefetch jobs
// holds one slot: it is one attempt with one stream per source.
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_PREFETCH_GATE_H_
#define SIDECAR_SERVICES_TRANSFER_PREFETCH_GATE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sidecar::transfer {

class PrefetchGate {
 public:
  // At most `max_running` slots (0: none, prefetch waits), not paused.
  explicit PrefetchGate(int max_running);

  PrefetchGate(const PrefetchGate&) = delete;
  PrefetchGate& operator=(const PrefetchGate&) = delete;

  // Changes the limit and the pause. Slots already taken stay taken (their
  // attempts finish); no new one is given while running >= max or paused.
  void Configure(int max_running, bool paused) ABSL_LOCKS_EXCLUDED(mu_);

  // Takes a slot if fewer than the limit run and prefetch is not paused.
  // True: the caller must Release it.
  bool TryAcquire() ABSL_LOCKS_EXCLUDED(mu_);
  // Gives back a slot TryAcquire gave. True if a TryAcquire was refused
  // since the last Release that returned true: someone may want the slot
  // (wake the claimers; otherwise waking them would only make them spin).
  bool Release() ABSL_LOCKS_EXCLUDED(mu_);

  int running() const ABSL_LOCKS_EXCLUDED(mu_);
  // The most slots ever held at once (for tests and logs).
  int peak() const ABSL_LOCKS_EXCLUDED(mu_);
  int max_running() const ABSL_LOCKS_EXCLUDED(mu_);
  bool paused() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  int max_running_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  bool refused_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PREFETCH_GATE_H_
