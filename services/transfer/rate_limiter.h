// RateLimiter: a token bucket shared by all transfers of a process, so that
// fetching stays under a configured bandwidth. Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_RATE_LIMITER_H_
#define SIDECAR_SERVICES_TRANSFER_RATE_LIMITER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sidecar::transfer {

class RateLimiter {
 public:
  // `bytes_per_sec` 0 means unlimited. Bursts up to one second's worth.
  explicit RateLimiter(double bytes_per_sec);

  // Blocks until `bytes` may be used (at most ~1 s per call for any size:
  // larger amounts go into debt that later callers wait out).
  void Acquire(uint64_t bytes);

  // Wakes every Acquire now waiting, and makes later ones return at once:
  // for shutting down.
  void Cancel();

  // Changes the rate (0: unlimited) for later Acquire calls; a debt already
  // taken is kept, at most one second's worth of the new rate.
  void SetRate(double bytes_per_sec);

  // How long Acquire(bytes) would wait now; for tests.
  absl::Duration WouldWait(uint64_t bytes);

 private:
  // REQUIRES: mu_ held.
  void RefillLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double rate_ ABSL_GUARDED_BY(mu_);
  absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_RATE_LIMITER_H_
