// JobStore: the transfer service's fetch jobs, persisted in PostgreSQL so
// that queued, waiting and half-done fetches survive a restart. Schema is
// applied by versioned migrations on Open (job_migrations.h); the database
// must be the transfer service's own.
//
// A job moves QUEUED -> RUNNING (ClaimNext) -> WAITING_RETRY (ScheduleRetry)
// -> RUNNING ... and ends DONE, GENERATE or CANCELLED (Finish). QUEUED,
// RUNNING and WAITING_RETRY are "active"; there is at most one active job per
// key. One transfer process per database: RequeueRunning assumes every
// RUNNING job belongs to a process that is gone.
//
// Every call that loses the connection (server restart) reconnects and
// retries, bounded by a deadline of a few seconds, then fails with
// UNAVAILABLE. Thread-safe: calls are serialized on one connection.
#ifndef SIDECAR_SERVICES_TRANSFER_JOB_STORE_H_
#define SIDECAR_SERVICES_TRANSFER_JOB_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

// True for QUEUED, RUNNING and WAITING_RETRY.
bool IsActiveState(v1::JobState state);
// True for DONE, GENERATE and CANCELLED.
bool IsFinalState(v1::JobState state);

// One row of transfer_jobs.
struct Job {
  std::string id;  // lowercase hyphenated UUID
  SidecarKey key;
  v1::Priority priority = v1::PRIORITY_NORMAL;  // never UNSPECIFIED
  v1::JobState state = v1::JOB_STATE_QUEUED;
  uint32_t attempts = 0;  // claims so far (ClaimNext adds one)
  // WAITING_RETRY: when the job becomes claimable again; else nullopt.
  std::optional<absl::Time> next_attempt_at;
  std::optional<uint64_t> expected_size;        // once a source told it
  std::optional<Sha256Digest> expected_sha256;  // once a source told it
  uint64_t bytes_verified = 0;                  // prefix known good
  std::vector<std::string> sources_tried;       // device ids, first first
  std::vector<std::string> demoted;             // device ids
  std::string last_error;
  std::string reason;      // GENERATE: why; DONE: from where
  int32_t error_code = 0;  // GENERATE: google.rpc.Code of the cause
  absl::Time created_at;
  absl::Time updated_at;
  std::optional<absl::Time> finished_at;  // set iff the state is final
};

// The prefetch policy as stored (prefetch_policy): rules in their text form
// (PrefetchRules), parsed by the caller.
struct StoredPrefetchPolicy {
  std::string rules;
  int max_concurrent = 3;  // 0..64
  bool metered = false;
  bool prefetch_when_metered = false;
  uint64_t background_bytes_per_sec = 0;  // below 2^63
};

class JobStore {
 public:
  // Connects to `conninfo` (libpq syntax), retrying until `connect_timeout`
  // passes, and applies pending migrations. FAILED_PRECONDITION if the
  // database records migrations but has no transfer_jobs table (it belongs
  // to another service).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(
      const std::string& conninfo, absl::Duration connect_timeout);

  virtual ~JobStore() = default;

  // Creates a QUEUED job for `key`, unless an active job for the same key
  // exists: then returns that one (raising its priority to `priority` if
  // that is higher). PRIORITY_UNSPECIFIED is stored as NORMAL.
  // INVALID_ARGUMENT if the key or priority is invalid.
  virtual absl::StatusOr<Job> Create(const SidecarKey& key,
                                     v1::Priority priority) = 0;

  // Create for each key, all in one transaction (for Fetch of many keys).
  // Results in the order of `keys`.
  virtual absl::StatusOr<std::vector<Job>> CreateMany(
      absl::Span<const SidecarKey> keys, v1::Priority priority) = 0;

  // The job with id `id`, or nullopt (also for a malformed id).
  virtual absl::StatusOr<std::optional<Job>> Get(absl::string_view id) = 0;

  // Jobs newest first (by creation), only active ones if `active_only`. At
  // most `limit` (0: 100; clamped to 1,000).
  virtual absl::StatusOr<std::vector<Job>> List(bool active_only,
                                                uint32_t limit) = 0;

  // Ids of all active jobs (for StoreWriter::CleanupStray at start-up).
  virtual absl::StatusOr<std::vector<std::string>> ActiveIds() = 0;

  // How many active jobs there are, by state and priority (for metrics).
  struct ActiveCount {
    v1::JobState state;
    v1::Priority priority;
    uint64_t count;
  };
  virtual absl::StatusOr<std::vector<ActiveCount>> CountActive() = 0;

  // Atomically takes the runnable job with the highest priority, oldest
  // first among equals, marks it RUNNING and adds one to its attempts.
  // Runnable: QUEUED, or WAITING_RETRY with next_attempt_at <= `now`.
  // Concurrent claimers (SKIP LOCKED) never get the same job. nullopt if
  // nothing is runnable.
  // Jobs never attempted whose kind is in `leave_fresh` are left to
  // ClaimBatch; jobs of a priority below `min_priority` are left alone.
  virtual absl::StatusOr<std::optional<Job>> ClaimNext(
      absl::Time now, absl::Span<const Kind> leave_fresh = {},
      v1::Priority min_priority = v1::PRIORITY_PREFETCH) = 0;

  // The batch lane for small sidecars: claims up to `max` jobs never
  // attempted (QUEUED with attempts 0) whose kind is in `kinds`, all of the
  // highest priority any such job has, oldest first: an interactive job
  // never waits in a batch of prefetch jobs. Jobs that fail in the batch
  // lane are retried one by one through ClaimNext. Jobs of a priority below
  // `min_priority` are left alone (the prefetch limit, PrefetchGate).
  virtual absl::StatusOr<std::vector<Job>> ClaimBatch(
      absl::Time now, size_t max, absl::Span<const Kind> kinds,
      v1::Priority min_priority = v1::PRIORITY_PREFETCH) = 0;

  // Prefetch jobs waiting to run (QUEUED or WAITING_RETRY, priority
  // PREFETCH) whose id is greater than `after_id` ("" for the first page),
  // by id, at most `limit` (clamped to 1,000): for cancelling those a new
  // prefetch policy no longer wants.
  virtual absl::StatusOr<std::vector<Job>> ListWaitingPrefetch(
      absl::string_view after_id, uint32_t limit) = 0;

  // The stored prefetch policy, or nullopt if none was ever stored.
  virtual absl::StatusOr<std::optional<StoredPrefetchPolicy>>
  LoadPrefetchPolicy() = 0;
  // Stores `policy`, replacing any stored one. INVALID_ARGUMENT for values
  // out of range.
  virtual absl::Status SavePrefetchPolicy(
      const StoredPrefetchPolicy& policy) = 0;

  // Ends the active jobs among `ids` in `state` (DONE, GENERATE or
  // CANCELLED) with `reason`. `sizes` (empty, or one per id) records each
  // job's size; DONE also sets bytes_verified to it. Returns how many jobs
  // it ended.
  virtual absl::StatusOr<uint64_t> FinishMany(
      absl::Span<const std::string> ids, v1::JobState state,
      absl::string_view reason, absl::Span<const uint64_t> sizes = {}) = 0;

  // Records progress of an active job: the verified prefix, and what the
  // source told of the file (nullopt leaves a stored value as it is).
  // Cheap: one UPDATE. NOT_FOUND if there is no such job;
  // FAILED_PRECONDITION if it has ended (e.g. was cancelled meanwhile: the
  // fetcher should stop).
  virtual absl::Status UpdateProgress(
      absl::string_view id, uint64_t bytes_verified,
      std::optional<uint64_t> expected_size,
      const std::optional<Sha256Digest>& expected_sha256) = 0;

  // Adds `device_id` to the job's sources_tried (once; later calls with the
  // same id keep its first position). Errors as UpdateProgress.
  virtual absl::Status AddSourceTried(absl::string_view id,
                                      absl::string_view device_id) = 0;
  // Adds `device_id` to the job's demoted sources (once). Errors as
  // UpdateProgress.
  virtual absl::Status AddDemoted(absl::string_view id,
                                  absl::string_view device_id) = 0;

  // Puts RUNNING jobs among `ids` back to QUEUED as if never claimed (their
  // claim's attempt is not counted): for work that yielded to foreground
  // work before it started. Returns how many it put back.
  virtual absl::StatusOr<uint64_t> GiveBack(
      absl::Span<const std::string> ids) = 0;

  // Puts an active job into WAITING_RETRY until `next_attempt_at`, with
  // `last_error`. bytes_verified is kept. Errors as UpdateProgress.
  virtual absl::Status ScheduleRetry(absl::string_view id,
                                     absl::Time next_attempt_at,
                                     absl::string_view last_error) = 0;

  // Ends an active job in `state` (DONE, GENERATE or CANCELLED, else
  // INVALID_ARGUMENT) with `reason` and `error_code`; sets finished_at.
  // Returns the job as stored. NOT_FOUND if there is no such job;
  // FAILED_PRECONDITION naming its state if it had already ended.
  virtual absl::StatusOr<Job> Finish(absl::string_view id, v1::JobState state,
                                     absl::string_view reason,
                                     int32_t error_code) = 0;

  // At start-up: jobs left RUNNING by a process that crashed go back to
  // QUEUED, keeping bytes_verified and attempts. Returns how many.
  virtual absl::StatusOr<uint64_t> RequeueRunning() = 0;

  // The earliest next_attempt_at among WAITING_RETRY jobs, or nullopt if
  // none waits (for the scheduler to sleep until).
  virtual absl::StatusOr<std::optional<absl::Time>> NextWakeup() = 0;

  // Deletes ended jobs that finished before `before`. Returns how many.
  virtual absl::StatusOr<uint64_t> PruneFinished(absl::Time before) = 0;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_JOB_STORE_H_
