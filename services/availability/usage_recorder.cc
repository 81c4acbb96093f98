#include "services/availability/usage_recorder.h"

#include <utility>
#include <vector>

#include "common/log.h"
#include "common/request_limits.h"

namespace sidecar::availability {

UsageRecorder::UsageRecorder(InventoryStore* store, Options options)
    : store_(store), options_(options) {}

UsageRecorder::~UsageRecorder() { Stop(); }

void UsageRecorder::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void UsageRecorder::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (absl::Status s = Flush(); !s.ok()) {
    SC_LOG(WARNING) << "last uses of local sidecars not recorded: " << s;
  }
}

void UsageRecorder::Touch(const SidecarKey& key) {
  absl::MutexLock lock(&mu_);
  if (pending_.size() >= options_.max_pending && !pending_.contains(key)) {
    ++dropped_;
    return;
  }
  pending_.insert(key);
}

absl::Status UsageRecorder::Flush() {
  absl::flat_hash_set<SidecarKey> taken;
  {
    absl::MutexLock lock(&mu_);
    taken.swap(pending_);
  }
  if (taken.empty()) return absl::OkStatus();
  const absl::Time at = absl::Now();
  std::vector<SidecarKey> batch;
  batch.reserve(std::min(taken.size(), kMaxKeysPerRequest));
  absl::Status first;
  auto write = [&] {
    absl::Status s = store_->TouchUsed(batch, at);
    if (!s.ok() && first.ok()) first = s;
    batch.clear();
  };
  for (const SidecarKey& k : taken) {
    batch.push_back(k);
    if (batch.size() == kMaxKeysPerRequest) write();
  }
  if (!batch.empty()) write();
  return first;
}

uint64_t UsageRecorder::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

size_t UsageRecorder::pending() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

void UsageRecorder::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                               options_.flush_interval)) {
        return;  // Stop() flushes the rest
      }
    }
    if (absl::Status s = Flush(); !s.ok()) {
      SC_LOG(WARNING) << "could not record uses of local sidecars: " << s;
    }
  }
}

}  // namespace sidecar::availability
