#include "services/transfer/bandwidth.h"

#include <utility>

namespace sidecar::transfer {

Bandwidth::Bandwidth(double total_bytes_per_sec,
                     double background_bytes_per_sec)
    : total_(total_bytes_per_sec), background_(background_bytes_per_sec) {}

int Bandwidth::Level(v1::Priority p) {
  switch (p) {
    case v1::PRIORITY_PREFETCH:
      return 0;
    case v1::PRIORITY_INTERACTIVE:
      return 2;
    default:
      return 1;
  }
}

Bandwidth::Lease::Lease(Lease&& other) noexcept
    : bw_(std::exchange(other.bw_, nullptr)), level_(other.level_) {}

Bandwidth::Lease& Bandwidth::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    bw_ = std::exchange(other.bw_, nullptr);
    level_ = other.level_;
  }
  return *this;
}

Bandwidth::Lease::~Lease() { Release(); }

void Bandwidth::Lease::Release() {
  if (bw_ != nullptr) std::exchange(bw_, nullptr)->End(level_);
}

Bandwidth::Lease Bandwidth::Begin(v1::Priority p) {
  const int level = Level(p);
  absl::MutexLock lock(&mu_);
  ++active_[level];
  return Lease(this, level);
}

void Bandwidth::End(int level) {
  absl::MutexLock lock(&mu_);
  --active_[level];
}

bool Bandwidth::HigherActive(int level) const {
  for (int l = level + 1; l < kLevels; ++l) {
    if (active_[l] > 0) return true;
  }
  return false;
}

bool Bandwidth::Yielding(v1::Priority p) const {
  absl::MutexLock lock(&mu_);
  return HigherActive(Level(p));
}

void Bandwidth::Take(uint64_t bytes, v1::Priority p) {
  // After Cancel the buckets are cancelled too and return at once.
  WaitTurn(p, absl::InfiniteDuration());
  total_.Acquire(bytes);
  if (Level(p) == 0) background_.Acquire(bytes);
}

bool Bandwidth::WaitTurn(v1::Priority p, absl::Duration max_pause) {
  const int level = Level(p);
  absl::MutexLock lock(&mu_);
  auto may_go = [this, level]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return cancelled_ || !HigherActive(level);
  };
  return mu_.AwaitWithTimeout(absl::Condition(&may_go), max_pause);
}

void Bandwidth::Cancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  total_.Cancel();
  background_.Cancel();
}

}  // namespace sidecar::transfer
