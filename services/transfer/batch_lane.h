// BatchLane: the Fetcher's lane for many small sidecars. New jobs of small
// kinds are claimed many at a time (JobStore::ClaimBatch) and fetched with
// one BatchRead per best source, written as whole part files with two
// filesystem flushes per batch (StoreWriter::CommitBatch), registered READY
// in one call and finished in one call per source. Items it cannot finish
// (no source, too large, a bad item, corrupt bytes, a failed write or
// commit) are given back to the Fetcher's workers, which retry them one by
// one: their jobs are scheduled for retry at once.
//
// Thread-safe: several threads run Loop() at once (the lanes), so that one
// batch's network time overlaps another's flushes and renames; Stop and
// CancelStalled may be called from any thread, with the caller's own locks
// held: the lane never calls a hook while it holds its mutex.
#ifndef SIDECAR_SERVICES_TRANSFER_BATCH_LANE_H_
#define SIDECAR_SERVICES_TRANSFER_BATCH_LANE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/bandwidth.h"
#include "services/transfer/evictor.h"
#include "services/transfer/job_events.h"
#include "services/transfer/job_store.h"
#include "services/transfer/prefetch_gate.h"
#include "services/transfer/store_writer.h"
#include "services/transfer/transfer_metrics.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::transfer {

struct BatchLaneOptions {
  // Kinds whose new jobs the lane takes; empty: none.
  std::vector<Kind> kinds;
  // Jobs claimed per batch.
  size_t max_jobs = 1000;
  // Larger sidecars are left to the workers.
  uint64_t max_item_bytes = 4ull << 20;
  // A BatchRead that receives nothing for this long is cancelled
  // (CancelStalled).
  absl::Duration stall_timeout = absl::Seconds(10);
  // A batch paused this long for foreground work (Bandwidth) finishes
  // early: what it received is installed, and the jobs of the rest go back
  // to the queue unattempted, so the lane is free for the foreground.
  absl::Duration yield_after = absl::Seconds(1);
  // Batches of prefetch jobs are claimed only with a slot of this gate (one
  // per batch, held until the batch ends). Null: no limit.
  PrefetchGate* prefetch_gate = nullptr;
  // Counts the jobs that end; null: metrics are off.
  TransferMetrics* metrics = nullptr;
};

class BatchLane {
 public:
  // What the lane needs of the Fetcher it runs in. Every member but admit
  // must be set.
  struct Hooks {
    // The stub for a holder's transfer service, for fetches of a priority
    // (PERMISSION_DENIED for a holder that is not a member).
    std::function<absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>>(
        const FetchSource&, v1::Priority)>
        stub;
    // Sleeps until there may be work again (or Stop).
    std::function<void()> idle;
    // Jobs were given back to the workers.
    std::function<void()> wake;
    // A job's status for its watchers.
    std::function<v1::JobStatus(const Job&)> status_of;
    // The store quota, asked per job before its bytes are read; a job it
    // refuses is set aside for the workers with the reason. The batch holds
    // the Admissions until its sidecars are registered. May be null.
    std::function<absl::StatusOr<Evictor::Admission>(const Job&,
                                                     uint64_t bytes)>
        admit;
  };

  // Pointers must outlive the lane.
  BatchLane(BatchLaneOptions options, JobStore* jobs, StoreWriter* store,
            AvailabilityClient* availability, Bandwidth* bandwidth,
            JobEvents* events, Hooks hooks);

  BatchLane(const BatchLane&) = delete;
  BatchLane& operator=(const BatchLane&) = delete;

  // Claims and runs batches until Stop, calling Hooks::idle when there is
  // none. Returns at once after Stop.
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the lane on `jobs` (claimed, never attempted, all of one priority:
  // ClaimBatch's): every job ends DONE
  // or is scheduled for a retry by the workers (unless Stop interrupts:
  // then jobs not received yet stay RUNNING and resume at the next start).
  void Run(std::vector<Job> jobs) ABSL_LOCKS_EXCLUDED(mu_);

  // Cancels the BatchReads in flight and any started later; Loop returns
  // and Run stops between items. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Cancels, once, each BatchRead that has received nothing for longer
  // than stall_timeout before `now`: its items are retried one by one. A
  // BatchRead paused for foreground work (Bandwidth::Yielding) is not
  // stalled: its clock restarts.
  void CancelStalled(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Batch;
  // The jobs of one BatchRead: indexes into Batch::jobs.
  using Members = std::vector<size_t>;

  // Resolves the batch's keys; returns the jobs to fetch grouped by their
  // best source's address (and that source), the rest set aside.
  absl::flat_hash_map<std::string, std::pair<FetchSource, Members>> Resolve(
      Batch& b);
  // One BatchRead of `members` from `src`, items written as part files.
  void ReadFrom(Batch& b, const FetchSource& src, const Members& members)
      ABSL_LOCKS_EXCLUDED(mu_);
  // One item of `src`'s answer; adds its bytes to *received and sets
  // *corrupt if they fail the advertised SHA-256. `charge`: take the bytes
  // from the bandwidth (waiting for the caps); not for an item received
  // after the batch decided to yield.
  void TakeItem(Batch& b, const FetchSource& src, size_t i,
                const v1::BatchReadItem& item, bool charge, uint64_t* received,
                bool* corrupt);
  // Installs the written items and registers them READY (FinishDone).
  void Install(Batch& b);
  // Finishes DONE the jobs of `ready` (registered unless `reg` failed:
  // then they are set aside) and those already local.
  void FinishDone(Batch& b,
                  const std::vector<AvailabilityClient::ReadyItem>& ready,
                  const std::vector<size_t>& ready_index,
                  const absl::Status& reg);
  // Counts `finished` of `ids` (jobs of `b` FinishMany ended DONE) in the
  // metrics.
  void CountEnded(const Batch& b, const std::vector<std::string>& ids,
                  const absl::StatusOr<uint64_t>& finished);
  // Schedules the set-aside jobs for the workers, puts those the batch
  // yielded back in the queue, logs the batch and publishes what watched
  // jobs became.
  void Conclude(Batch& b);

  // The BatchRead `ctx` starts, delivers a message, ends.
  void StreamStarted(grpc::ClientContext* ctx, absl::Time t0,
                     v1::Priority priority) ABSL_LOCKS_EXCLUDED(mu_);
  void StreamAlive(grpc::ClientContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);
  void StreamEnded(grpc::ClientContext* ctx) ABSL_LOCKS_EXCLUDED(mu_);

  const BatchLaneOptions options_;
  JobStore* const jobs_;
  StoreWriter* const store_;
  AvailabilityClient* const availability_;
  Bandwidth* const bandwidth_;
  JobEvents* const events_;
  const Hooks hooks_;

  // Set with stopped_; read without mu_ between batch items.
  std::atomic<bool> stop_requested_{false};
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // The BatchReads in flight, when each last received a message
  // (InfiniteFuture once CancelStalled cancelled it) and its priority.
  struct Stream {
    absl::Time last;
    v1::Priority priority;
  };
  absl::flat_hash_map<grpc::ClientContext*, Stream> streams_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_BATCH_LANE_H_
