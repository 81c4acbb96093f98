// Bandwidth: how the fetches of one process share its download bandwidth.
//
//   * Foreground first. While a transfer of higher priority is active,
//     transfers of lower priority stop taking bytes: interactive work pauses
//     normal and prefetch work, normal work pauses prefetch. A paused stream
//     stops reading, so its flow-control window fills and its source stops
//     sending; the link is left to the foreground. Interactive work never
//     waits here.
//   * A cap on everything (0: none), and a separate cap on prefetch (0:
//     none), as token buckets.
//
//   Bandwidth bw(/*total=*/0, /*background=*/1 << 20);
//   Bandwidth::Lease lease = bw.Begin(v1::PRIORITY_INTERACTIVE);
//   ... for each message received: bw.Take(bytes, v1::PRIORITY_INTERACTIVE);
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_BANDWIDTH_H_
#define SIDECAR_SERVICES_TRANSFER_BANDWIDTH_H_

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/transfer/rate_limiter.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

class Bandwidth {
 public:
  // Rates in bytes per second; 0 means unlimited.
  Bandwidth(double total_bytes_per_sec, double background_bytes_per_sec);

  Bandwidth(const Bandwidth&) = delete;
  Bandwidth& operator=(const Bandwidth&) = delete;

  // A transfer of one priority in progress, from Begin until destroyed (or
  // moved from). Lower priorities yield while it lives.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();

   private:
    friend class Bandwidth;
    Lease(Bandwidth* bw, int level) : bw_(bw), level_(level) {}
    void Release();
    Bandwidth* bw_ = nullptr;
    int level_ = 0;
  };

  // Registers an active transfer of priority `p` (UNSPECIFIED counts as
  // NORMAL).
  Lease Begin(v1::Priority p) ABSL_LOCKS_EXCLUDED(mu_);

  // Accounts for `bytes` received by a transfer of priority `p`: first
  // waits while a transfer of higher priority is active, then for the caps
  // that apply (Cancel ends both waits).
  void Take(uint64_t bytes, v1::Priority p) ABSL_LOCKS_EXCLUDED(mu_);

  // Waits up to `max_pause` while a transfer of higher priority than `p` is
  // active. True when `p` may go on; false when it is still yielding (for
  // work that would rather give up its turn than wait: a batch gives back
  // what it has not received yet).
  bool WaitTurn(v1::Priority p, absl::Duration max_pause)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Whether transfers of priority `p` are yielding now (for the stall
  // watchdog: a paused stream is not a stalled one).
  bool Yielding(v1::Priority p) const ABSL_LOCKS_EXCLUDED(mu_);

  // Changes the background (prefetch) cap; 0: unlimited (what foreground
  // work leaves). Takes effect for the next bytes taken.
  void SetBackgroundRate(double bytes_per_sec) {
    background_.SetRate(bytes_per_sec);
  }

  // Wakes every waiting Take and makes later ones return at once: for
  // shutting down.
  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  static constexpr int kLevels = 3;  // prefetch, normal, interactive
  static int Level(v1::Priority p);
  // REQUIRES: mu_ held.
  bool HigherActive(int level) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void End(int level) ABSL_LOCKS_EXCLUDED(mu_);

  RateLimiter total_;
  RateLimiter background_;
  mutable absl::Mutex mu_;
  std::array<int, kLevels> active_ ABSL_GUARDED_BY(mu_) = {0, 0, 0};
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_BANDWIDTH_H_
