#include "services/transfer/prefetch_gate.h"

#include <algorithm>

namespace sidecar::transfer {

PrefetchGate::PrefetchGate(int max_running)
    : max_running_(std::max(0, max_running)) {}

void PrefetchGate::Configure(int max_running, bool paused) {
  absl::MutexLock lock(&mu_);
  max_running_ = std::max(0, max_running);
  paused_ = paused;
}

bool PrefetchGate::TryAcquire() {
  absl::MutexLock lock(&mu_);
  if (paused_ || running_ >= max_running_) {
    refused_ = true;
    return false;
  }
  ++running_;
  peak_ = std::max(peak_, running_);
  return true;
}

bool PrefetchGate::Release() {
  absl::MutexLock lock(&mu_);
  if (running_ > 0) --running_;
  const bool refused = refused_;
  refused_ = false;
  return refused;
}

int PrefetchGate::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

int PrefetchGate::peak() const {
  absl::MutexLock lock(&mu_);
  return peak_;
}

int PrefetchGate::max_running() const {
  absl::MutexLock lock(&mu_);
  return max_running_;
}

bool PrefetchGate::paused() const {
  absl::MutexLock lock(&mu_);
  return paused_;
}

}  // namespace sidecar::transfer
