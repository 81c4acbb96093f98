#include "services/transfer/job_migrations.h"

namespace sidecar::transfer {
namespace {

// state holds v1::JobState values: 1 QUEUED, 2 RUNNING, 3 WAITING_RETRY
// (active), 4 DONE, 5 GENERATE, 6 CANCELLED (finished).
constexpr pg::Migration kMigrations[] = {
    {1, "transfer jobs", R"sql(
CREATE TABLE transfer_jobs (
  id uuid PRIMARY KEY,
  content_uuid uuid NOT NULL,
  kind smallint NOT NULL,
  variant text COLLATE "C" NOT NULL,
  format smallint NOT NULL,
  priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
  state smallint NOT NULL CHECK (state BETWEEN 1 AND 6),
  attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at timestamptz,
  expected_size bigint CHECK (expected_size IS NULL OR expected_size >= 0),
  expected_sha256 bytea
    CHECK (expected_sha256 IS NULL OR length(expected_sha256) = 32),
  bytes_verified bigint NOT NULL DEFAULT 0 CHECK (bytes_verified >= 0),
  sources_tried text[] NOT NULL DEFAULT '{}',
  demoted text[] NOT NULL DEFAULT '{}',
  last_error text NOT NULL DEFAULT '',
  reason text NOT NULL DEFAULT '',
  error_code integer NOT NULL DEFAULT 0,
  -- Set by each claim, so that a claim retried after a lost COMMIT finds
  -- the job it already took instead of taking a second one.
  claim_token uuid,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at timestamptz,
  CHECK ((state >= 4) = (finished_at IS NOT NULL)),
  CHECK (state <> 3 OR next_attempt_at IS NOT NULL)
);
-- At most one active job per key: Create dedupes on it.
CREATE UNIQUE INDEX transfer_jobs_active_key
  ON transfer_jobs (content_uuid, kind, variant, format)
  WHERE state IN (1, 2, 3);
-- ClaimNext: highest priority, then oldest, among runnable jobs.
CREATE INDEX transfer_jobs_runnable
  ON transfer_jobs (priority DESC, created_at, id) WHERE state IN (1, 3);
-- NextWakeup.
CREATE INDEX transfer_jobs_retry
  ON transfer_jobs (next_attempt_at) WHERE state = 3;
-- List, newest first.
CREATE INDEX transfer_jobs_created ON transfer_jobs (created_at DESC, id DESC);
)sql"},
    {2, "prefetch policy", R"sql(
-- The prefetch policy set through the local API (SetPrefetchPolicy): one
-- row once set; until then the flags give the policy.
CREATE TABLE prefetch_policy (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  rules text NOT NULL,
  max_concurrent integer NOT NULL CHECK (max_concurrent BETWEEN 0 AND 64),
  metered boolean NOT NULL,
  prefetch_when_metered boolean NOT NULL,
  background_bytes_per_sec bigint NOT NULL
    CHECK (background_bytes_per_sec >= 0),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
)sql"},
};

}  // namespace

absl::Span<const pg::Migration> JobMigrations() { return kMigrations; }

}  // namespace sidecar::transfer
