// TransferMetrics: what the transfer service counts for Prometheus (the
// gRPC series are common/grpc_metrics.h's):
//
//   sidecar_transfer_received_bytes_total{source}   bytes read from a peer
//   sidecar_transfer_verification_failures_total{source}
//                                      bytes that failed their SHA-256
//   sidecar_fetch_jobs_ended_total{priority,state}  DONE, GENERATE, CANCELLED
//   sidecar_fetch_seconds{priority}    a fetched job's time from its request
//                                      to DONE (histogram)
//
// and, read at scrape time (AddScrapeTimeGauges):
//
//   sidecar_fetch_jobs{state,priority}  active jobs (queued, running,
//                                      waiting to retry): the queue depth
//   sidecar_prefetch_backlog           prefetch jobs waiting
//   sidecar_store_used_bytes, sidecar_store_quota_bytes,
//   sidecar_store_evicted_total, sidecar_store_evicted_bytes_total
//
// `source` is a peer's device id as the availability service named it,
// at most kMaxSources distinct ones (then "other"): a library has few
// devices, and nothing a peer sends can grow the series.
//
// Thread-safe. A null TransferMetrics* means metrics are off: callers check.
#ifndef SIDECAR_SERVICES_TRANSFER_TRANSFER_METRICS_H_
#define SIDECAR_SERVICES_TRANSFER_TRANSFER_METRICS_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

class Evictor;
class JobStore;

class TransferMetrics {
 public:
  static constexpr size_t kMaxSources = 64;

  explicit TransferMetrics(prometheus::Registry& registry);

  // A transfer from `source` ended: `bytes` received; `corrupt` if they
  // failed verification.
  void Received(const std::string& source, uint64_t bytes, bool corrupt)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A job of `priority` ended in `state`, `since_request` after it was
  // created (observed for DONE only).
  void JobEnded(v1::Priority priority, v1::JobState state,
                absl::Duration since_request);

  // Registers the scrape-time gauges of `jobs` and `evictor` (either may
  // be null). They must outlive the exporter, or gauges->RemoveAll() runs
  // first.
  static void AddScrapeTimeGauges(ScrapeTimeGauges* gauges, JobStore* jobs,
                                  const Evictor* evictor);

 private:
  struct Source {
    prometheus::Counter* bytes;
    prometheus::Counter* failures;
  };
  Source& SourceFor(const std::string& source)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Counter>& failures_;
  prometheus::Family<prometheus::Counter>& ended_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  // By priority (1..3); made up front, so JobEnded takes no lock.
  std::array<prometheus::Histogram*, 4> seconds_by_priority_{};
  // By priority and end state, likewise (null: not made up front).
  std::array<std::array<prometheus::Counter*, v1::JobState_ARRAYSIZE>, 4>
      ended_by_{};

  absl::Mutex mu_;
  BoundedLabel source_labels_ ABSL_GUARDED_BY(mu_){kMaxSources};
  absl::flat_hash_map<std::string, Source> sources_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_TRANSFER_METRICS_H_
