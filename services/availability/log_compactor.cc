#include "services/availability/log_compactor.h"

#include "common/log.h"
#include "common/thread_priority.h"

namespace sidecar::availability {

LogCompactor::LogCompactor(LocalInventory* inventory, Options options)
    : inventory_(inventory), options_(options) {}

LogCompactor::~LogCompactor() { Stop(); }

void LogCompactor::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Loop(); });
}

void LogCompactor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void LogCompactor::RunOnce() {
  if (!inventory_->CompactionDue(options_.tombstone_retention)) return;
  const absl::Time start = absl::Now();
  absl::StatusOr<LocalInventory::CompactResult> r =
      inventory_->CompactLog(start - options_.tombstone_retention);
  if (!r.ok()) {
    SC_LOG(WARNING) << "change-log compaction failed (retried later): "
                    << r.status();
    return;
  }
  SC_LOG(INFO) << "change log compacted in " << absl::Now() - start << ": "
               << r->deleted << " rows deleted, " << r->log_rows
               << " left, floor seq " << r->floor_seq;
}

void LogCompactor::Loop() {
  (void)LowerThisThreadPriority(kBackgroundNice);
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.check_interval);
    if (stopping_) break;
    mu_.Unlock();
    RunOnce();
    mu_.Lock();
  }
}

}  // namespace sidecar::availability
