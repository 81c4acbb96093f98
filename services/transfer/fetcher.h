// Fetcher: runs fetch jobs. Workers claim runnable jobs from the JobStore
// (highest priority first) and run one attempt each:
//
//   1. ask the availability service for sources, best first;
//   2. small and medium sidecars come from one source at a time, streamed
//      from the bytes already verified (resume), with failover to the next
//      source on error, stall or a chunk that fails its checksum;
//      large ones (>= multi_source_min_bytes, several sources) come from up
//      to max_sources holders at once: the file is cut into pieces and each
//      source takes the next missing piece when it finishes one, so faster
//      holders carry more of the file and the fetch uses their summed rate;
//   3. the whole-file SHA-256 advertised by the availability service is
//      checked before commit; the StoreWriter renames the verified file into
//      the layout atomically; the sidecar is registered READY;
//   4. transfer statistics go back to the availability service, and a source
//      that sent corrupt bytes is reported (and so demoted in ranking).
//
// An attempt that fails on every source is retried with exponential backoff
// and jitter, at most max_attempts times; then the job ends in GENERATE with
// the reason. Every RPC has a deadline; a stream that stops delivering bytes
// for stall_timeout is cancelled.
#ifndef SIDECAR_SERVICES_TRANSFER_FETCHER_H_
#define SIDECAR_SERVICES_TRANSFER_FETCHER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/peer_channels.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/bandwidth.h"
#include "services/transfer/batch_lane.h"
#include "services/transfer/evictor.h"
#include "services/transfer/job_events.h"
#include "services/transfer/job_store.h"
#include "services/transfer/prefetch_gate.h"
#include "services/transfer/range_reader.h"
#include "services/transfer/store_writer.h"
#include "services/transfer/transfer_metrics.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::transfer {

struct FetcherOptions {
  // Counts the jobs that end; null: metrics are off.
  TransferMetrics* metrics = nullptr;
  int workers = 3;
  // Workers that take only interactive jobs (small ones too), so that a new
  // interactive job starts at once, whatever the other workers and the
  // batch lanes are busy with.
  int interactive_workers = 2;
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  uint64_t multi_source_min_bytes = 32ull << 20;
  uint64_t piece_bytes = 2ull << 20;
  int max_sources = 3;
  uint32_t chunk_bytes = 0;  // 0: the server's choice
  absl::Duration stall_timeout = absl::Seconds(10);
  absl::Duration progress_interval = absl::Milliseconds(250);
  uint64_t min_free_bytes = 64ull << 20;
  // The batch lane: new jobs of small kinds are claimed many at a time and
  // fetched with one BatchRead per source, written with two filesystem
  // flushes per batch and registered in one call. Items it cannot finish
  // (too large, failed, corrupt) are retried one by one by the workers.
  std::vector<Kind> batch_kinds = {
      v1::SIDECAR_KIND_THUMB, v1::SIDECAR_KIND_THUMBSTRIP, v1::SIDECAR_KIND_OCR,
      v1::SIDECAR_KIND_TRANSCRIPT, v1::SIDECAR_KIND_EMBEDDINGS};
  size_t batch_max_jobs = 1000;
  // Batches in flight at once, so that one batch's network time overlaps
  // another's flushes and renames.
  int batch_lanes = 4;
  uint64_t batch_max_item_bytes = 4ull << 20;
  // A batch paused this long for foreground work finishes early
  // (BatchLaneOptions::yield_after).
  absl::Duration batch_yield_after = absl::Seconds(1);
  // The store quota (Evictor::Admit), asked before a job fetches `bytes`
  // more; a non-OK answer ends the job GENERATE with its message. The
  // Admission is held until the attempt has registered its sidecar or
  // ended. Null: no quota.
  std::function<absl::StatusOr<Evictor::Admission>(const Job& job,
                                                   uint64_t bytes)>
      admit;
  // The limit on prefetch attempts at once and the metered pause: workers
  // and batch lanes claim prefetch jobs only with a slot of it (a batch
  // holds one). Null: no limit.
  PrefetchGate* prefetch_gate = nullptr;
};

class Fetcher {
 public:
  // Pointers must outlive the fetcher.
  // `channels` makes the pinned channels to holders.
  Fetcher(FetcherOptions options, JobStore* jobs, StoreWriter* store,
          AvailabilityClient* availability, Bandwidth* bandwidth,
          JobEvents* events, PeerChannels* channels);
  ~Fetcher();

  // Starts the workers and the stall watchdog.
  void Start();
  // Cancels running attempts and batches (their jobs stay resumable) and
  // bandwidth waits (the RateLimiter stays cancelled), and joins.
  void Stop();
  // A job became runnable.
  void Wake();

  // Cancels a job: a running attempt stops, partial data is deleted, the
  // job ends CANCELLED. NOT_FOUND for an unknown job; FAILED_PRECONDITION if
  // it already ended.
  absl::StatusOr<v1::JobState> Cancel(const std::string& job_id);

  // Status of a job for the API: stored state plus live progress.
  v1::JobStatus StatusOf(const Job& job) const;

 private:
  struct Attempt;  // one running job
  struct Progress {
    uint64_t bytes_verified = 0;
    double rate = 0;
    std::vector<std::string> sources;
  };

  // These take mu_ as needed.
  // Claims and runs jobs of at least `min_priority` until Stop.
  void WorkerLoop(v1::Priority min_priority) ABSL_LOCKS_EXCLUDED(mu_);
  // Sleeps until woken, a retry is due, or a second has passed.
  void Idle() ABSL_LOCKS_EXCLUDED(mu_);
  void WatchdogLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one attempt of `job` and records its outcome in the store.
  void RunJob(Job job) ABSL_LOCKS_EXCLUDED(mu_);
  // Returns OK when committed; otherwise why the attempt failed.
  absl::Status FetchSingle(Attempt* a, const std::vector<FetchSource>& sources);
  absl::Status FetchMulti(Attempt* a, const std::vector<FetchSource>& sources);
  // The stub for `src`'s transfer service, on the connection for fetches of
  // `priority` (TrafficClass); PERMISSION_DENIED for a holder that is not a
  // member.
  absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>> PeerStub(
      const FetchSource& src, v1::Priority priority) ABSL_LOCKS_EXCLUDED(mu_);
  // A reader of `a`'s sidecar (a->size and a->expected must be set) from
  // `src`, for one thread. Callers look the stub up (PeerStub) before each
  // read, so a holder that stops being a member is refused mid-fetch.
  RangeReader MakeReader(Attempt* a, const FetchSource& src);
  // What a reader tells `a`: its streams are registered in a->streams (for
  // the watchdog and StopAttempt); in-order reads set a->verified, record
  // the synced prefix (RecordProgress) and publish progress.
  RangeReader::Callbacks StreamCallbacks(Attempt* a);
  absl::Status Commit(Attempt* a, const FetchSource& from,
                      const Sha256Digest* streamed_digest);
  void PublishProgress(Attempt* a, bool force) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops a running attempt: its streams are cancelled and it commits
  // nothing. Records no state.
  void StopAttempt(Attempt* a);
  // Counts `job` ended in `state` in the metrics, if they are on.
  void CountEnded(const Job& job, v1::JobState state);
  // Records `verified` as the job's verified prefix. False, with the
  // attempt stopped, if the job has ended (FAILED_PRECONDITION: cancelled or
  // finished elsewhere). Other errors are logged once per attempt and the
  // fetch goes on: the next checkpoint may be recorded.
  bool RecordProgress(Attempt* a, uint64_t verified);
  absl::Duration Backoff(int attempts);

  const FetcherOptions options_;
  JobStore* const jobs_;
  StoreWriter* const store_;
  AvailabilityClient* const availability_;
  Bandwidth* const bandwidth_;
  JobEvents* const events_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t wake_seq_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by Wake()
  absl::flat_hash_map<std::string, Attempt*> running_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Progress> progress_ ABSL_GUARDED_BY(mu_);
  // Stubs on channels pinned to each holder's certificate, per (device,
  // address). Looked up through PeerStub, which refuses non-members.
  absl::flat_hash_map<std::string, std::shared_ptr<v1::TransferPeer::Stub>>
      stubs_ ABSL_GUARDED_BY(mu_);
  PeerChannels* const channels_;
  // Its threads run Loop; Stop() stops it, the watchdog cancels its stalled
  // streams, both with mu_ held (mu_ comes before the lane's own mutex).
  BatchLane batch_lane_;
  std::vector<std::thread> threads_;  // Start and Stop only (the owner's)
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_FETCHER_H_
