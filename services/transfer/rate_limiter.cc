#include "services/transfer/rate_limiter.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace sidecar::transfer {

RateLimiter::RateLimiter(double bytes_per_sec)
    : rate_(bytes_per_sec), tokens_(bytes_per_sec), last_(absl::Now()) {}

void RateLimiter::RefillLocked(absl::Time now) {
  tokens_ =
      std::min(rate_, tokens_ + rate_ * absl::ToDoubleSeconds(now - last_));
  last_ = now;
}

void RateLimiter::SetRate(double bytes_per_sec) {
  absl::MutexLock lock(&mu_);
  RefillLocked(absl::Now());
  rate_ = std::max(0.0, bytes_per_sec);
  tokens_ = std::clamp(tokens_, -rate_, rate_);
}

absl::Duration RateLimiter::WouldWait(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (rate_ <= 0) return absl::ZeroDuration();
  RefillLocked(absl::Now());
  double missing = static_cast<double>(bytes) - tokens_;
  return missing <= 0 ? absl::ZeroDuration() : absl::Seconds(missing / rate_);
}

void RateLimiter::Acquire(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (rate_ <= 0 || cancelled_) return;
  RefillLocked(absl::Now());
  tokens_ -= static_cast<double>(bytes);  // may go into debt
  if (tokens_ >= 0) return;
  // Sleeps with mu_ released; Cancel() ends the wait early.
  mu_.AwaitWithTimeout(absl::Condition(&cancelled_),
                       absl::Seconds(-tokens_ / rate_));
}

void RateLimiter::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

}  // namespace sidecar::transfer
