#include "services/transfer/job_store.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/pg/connection.h"
#include "common/pg/migrate.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "services/transfer/job_migrations.h"

namespace sidecar::transfer {
namespace {

// How long one call keeps retrying after losing the connection.
constexpr absl::Duration kRetryTimeout = absl::Seconds(5);

constexpr uint32_t kDefaultListLimit = 100;
constexpr uint32_t kMaxListLimit = 1000;

// Column order read by JobFromRow.
constexpr char kJobColumns[] =
    "id, content_uuid, kind, variant, format, priority, state, attempts, "
    "(extract(epoch FROM next_attempt_at) * 1000000)::bigint, "
    "expected_size, expected_sha256, bytes_verified, sources_tried, demoted, "
    "last_error, reason, error_code, "
    "(extract(epoch FROM created_at) * 1000000)::bigint, "
    "(extract(epoch FROM updated_at) * 1000000)::bigint, "
    "(extract(epoch FROM finished_at) * 1000000)::bigint";

constexpr char kActive[] = "state IN (1, 2, 3)";

// A timestamptz from a parameter holding Unix microseconds (exact, unlike
// to_timestamp's double).
std::string TimeParam(int n) {
  return absl::StrCat("('epoch'::timestamptz + $", n,
                      "::bigint * interval '1 microsecond')");
}

// Unix microseconds, clamped to what timestamptz holds.
std::string TimeArg(absl::Time t) {
  constexpr int64_t kLimit = 9'000'000'000'000'000;  // ~ year 287,000
  return std::to_string(std::clamp(absl::ToUnixMicros(t), -kLimit, kLimit));
}

// Parses the text output of a one-dimensional text[] ("{a,\"b c\"}").
absl::StatusOr<std::vector<std::string>> ParseTextArray(
    absl::string_view text) {
  auto malformed = [&] {
    return absl::InternalError(
        absl::StrCat("malformed text[] value from PostgreSQL: ", text));
  };
  std::vector<std::string> out;
  if (text.size() < 2 || text.front() != '{' || text.back() != '}') {
    return malformed();
  }
  absl::string_view body = text.substr(1, text.size() - 2);
  size_t i = 0;
  if (body.empty()) return out;
  while (true) {
    std::string element;
    if (i < body.size() && body[i] == '"') {
      ++i;
      while (true) {
        if (i >= body.size()) return malformed();
        char c = body[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= body.size()) return malformed();
          c = body[i++];
        }
        element.push_back(c);
      }
    } else {
      size_t end = body.find(',', i);
      if (end == absl::string_view::npos) end = body.size();
      element = std::string(body.substr(i, end - i));
      // Our arrays never hold NULL; an unquoted NULL would be one.
      if (element == "NULL") return malformed();
      i = end;
    }
    out.push_back(std::move(element));
    if (i == body.size()) break;
    if (body[i] != ',') return malformed();
    ++i;
  }
  return out;
}

absl::StatusOr<Sha256Digest> DigestFromBytea(absl::string_view text) {
  if (text.size() != 66 || text.substr(0, 2) != "\\x") {
    return absl::InternalError(
        "expected_sha256 column is not 32 bytes in hex format");
  }
  return DigestFromHex(text.substr(2));
}

absl::StatusOr<std::optional<absl::Time>> OptionalTime(const pg::Result& r,
                                                       int row, int col) {
  if (r.IsNull(row, col)) return std::optional<absl::Time>();
  absl::StatusOr<int64_t> v = r.GetInt64(row, col);
  if (!v.ok()) return v.status();
  return std::optional<absl::Time>(absl::FromUnixMicros(*v));
}

absl::StatusOr<Job> JobFromRow(const pg::Result& r, int row) {
  Job job;
  job.id = std::string(r.Get(row, 0));
  absl::StatusOr<Uuid> content = Uuid::Parse(r.Get(row, 1));
  if (!content.ok()) return content.status();
  job.key.content = *content;
  int64_t ints[4];  // kind, format, priority, state
  const int int_cols[4] = {2, 4, 5, 6};
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<int64_t> v = r.GetInt64(row, int_cols[i]);
    if (!v.ok()) return v.status();
    ints[i] = *v;
  }
  job.key.kind = static_cast<Kind>(ints[0]);
  job.key.variant = std::string(r.Get(row, 3));
  job.key.format = static_cast<Format>(ints[1]);
  job.priority = static_cast<v1::Priority>(ints[2]);
  job.state = static_cast<v1::JobState>(ints[3]);
  absl::StatusOr<int64_t> attempts = r.GetInt64(row, 7);
  if (!attempts.ok()) return attempts.status();
  job.attempts = static_cast<uint32_t>(*attempts);
  absl::StatusOr<std::optional<absl::Time>> next = OptionalTime(r, row, 8);
  if (!next.ok()) return next.status();
  job.next_attempt_at = *next;
  if (!r.IsNull(row, 9)) {
    absl::StatusOr<int64_t> size = r.GetInt64(row, 9);
    if (!size.ok()) return size.status();
    job.expected_size = static_cast<uint64_t>(*size);
  }
  if (!r.IsNull(row, 10)) {
    absl::StatusOr<Sha256Digest> d = DigestFromBytea(r.Get(row, 10));
    if (!d.ok()) return d.status();
    job.expected_sha256 = *d;
  }
  absl::StatusOr<int64_t> verified = r.GetInt64(row, 11);
  if (!verified.ok()) return verified.status();
  job.bytes_verified = static_cast<uint64_t>(*verified);
  absl::StatusOr<std::vector<std::string>> tried =
      ParseTextArray(r.Get(row, 12));
  if (!tried.ok()) return tried.status();
  job.sources_tried = std::move(*tried);
  absl::StatusOr<std::vector<std::string>> demoted =
      ParseTextArray(r.Get(row, 13));
  if (!demoted.ok()) return demoted.status();
  job.demoted = std::move(*demoted);
  job.last_error = std::string(r.Get(row, 14));
  job.reason = std::string(r.Get(row, 15));
  absl::StatusOr<int64_t> code = r.GetInt64(row, 16);
  if (!code.ok()) return code.status();
  job.error_code = static_cast<int32_t>(*code);
  absl::StatusOr<int64_t> created = r.GetInt64(row, 17);
  if (!created.ok()) return created.status();
  job.created_at = absl::FromUnixMicros(*created);
  absl::StatusOr<int64_t> updated = r.GetInt64(row, 18);
  if (!updated.ok()) return updated.status();
  job.updated_at = absl::FromUnixMicros(*updated);
  absl::StatusOr<std::optional<absl::Time>> finished = OptionalTime(r, row, 19);
  if (!finished.ok()) return finished.status();
  job.finished_at = *finished;
  return job;
}

// The canonical form of a job id, or nullopt if it is not a UUID.
std::optional<std::string> CanonicalId(absl::string_view id) {
  absl::StatusOr<Uuid> u = Uuid::Parse(id);
  if (!u.ok()) return std::nullopt;
  return u->ToString();
}

absl::Status NoSuchJob(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("no transfer job ", id));
}

absl::Status PrepareStatements(pg::Connection& conn) {
  const std::string returning = absl::StrCat(" RETURNING ", kJobColumns);
  const std::pair<std::string, std::string> statements[] = {
      // CreateMany: one statement per round for the whole list.
      {"create_many",
       absl::StrCat("INSERT INTO transfer_jobs (id, content_uuid, kind, "
                    "variant, format, priority, state) "
                    "SELECT t.i, t.u, t.k, t.v, t.f, $6::smallint, 1 "
                    "FROM unnest($1::uuid[], $2::uuid[], $3::smallint[], "
                    "$4::text[], $5::smallint[]) AS t(i, u, k, v, f) "
                    "ON CONFLICT (content_uuid, kind, variant, format) WHERE ",
                    kActive, " DO NOTHING", returning)},
      {"create_existing_many",
       absl::StrCat("UPDATE transfer_jobs j SET priority = "
                    "greatest(j.priority, $5::smallint), updated_at = CASE "
                    "WHEN j.priority < $5 THEN clock_timestamp() ELSE "
                    "j.updated_at END "
                    "FROM unnest($1::uuid[], $2::smallint[], $3::text[], "
                    "$4::smallint[]) AS t(u, k, v, f) "
                    "WHERE j.content_uuid = t.u AND j.kind = t.k AND "
                    "j.variant = t.v AND j.format = t.f AND j.",
                    kActive, returning)},
      {"get", absl::StrCat("SELECT ", kJobColumns,
                           " FROM transfer_jobs WHERE id = $1")},
      {"state", "SELECT state FROM transfer_jobs WHERE id = $1"},
      {"state_for_update",
       "SELECT state FROM transfer_jobs WHERE id = $1 FOR UPDATE"},
      {"list_all", absl::StrCat("SELECT ", kJobColumns,
                                " FROM transfer_jobs ORDER BY created_at "
                                "DESC, id DESC LIMIT $1")},
      {"list_active",
       absl::StrCat("SELECT ", kJobColumns, " FROM transfer_jobs WHERE ",
                    kActive, " ORDER BY created_at DESC, id DESC LIMIT $1")},
      {"count_active",
       "SELECT state, priority, count(*) FROM transfer_jobs "
       "WHERE state IN (1, 2, 3) GROUP BY state, priority"},
      {"active_ids",
       absl::StrCat("SELECT id FROM transfer_jobs WHERE ", kActive)},
      {"claim",
       absl::StrCat(
           "UPDATE transfer_jobs SET state = 2, attempts = attempts + 1, "
           "next_attempt_at = NULL, claim_token = $2, "
           "updated_at = clock_timestamp() "
           "WHERE state IN (1, 3) AND id = (SELECT id FROM transfer_jobs "
           "WHERE ((state = 1 AND NOT (attempts = 0 AND "
           "kind = ANY($3::smallint[]))) OR (state = 3 AND next_attempt_at <= ",
           TimeParam(1),
           ")) AND priority >= $4::smallint "
           "ORDER BY priority DESC, created_at, id LIMIT 1 "
           "FOR UPDATE SKIP LOCKED)",
           returning)},
      {"claim_batch",
       absl::StrCat(
           // The picked ids are collected once (an InitPlan) and locked by
           // it, so the outer scan needs no state filter and can only be
           // the primary key's. `id IN (subquery)` was planned as a nested
           // loop that ran the subquery per row: quadratic, and it could
           // claim more than $3 jobs.
           "UPDATE transfer_jobs SET state = 2, attempts = attempts + 1, "
           "next_attempt_at = NULL, claim_token = $1, "
           "updated_at = clock_timestamp() "
           "WHERE id = ANY(ARRAY(SELECT id FROM transfer_jobs "
           "WHERE state = 1 AND attempts = 0 AND kind = ANY($2::smallint[]) "
           "AND priority = (SELECT priority FROM transfer_jobs WHERE state = "
           "1 AND attempts = 0 AND kind = ANY($2::smallint[]) AND "
           "priority >= $4::smallint ORDER BY priority DESC LIMIT 1) "
           "ORDER BY priority DESC, created_at, id LIMIT $3 "
           "FOR UPDATE SKIP LOCKED))",
           returning)},
      {"give_back",
       "UPDATE transfer_jobs SET state = 1, attempts = greatest(attempts - 1, "
       "0), claim_token = NULL, next_attempt_at = NULL, updated_at = "
       "clock_timestamp() WHERE id = ANY($1::uuid[]) AND state = 2"},
      {"waiting_prefetch",
       absl::StrCat("SELECT ", kJobColumns,
                    " FROM transfer_jobs WHERE state IN (1, 3) AND "
                    "priority = 1 AND id > $1::uuid ORDER BY id LIMIT $2")},
      {"load_prefetch_policy",
       "SELECT rules, max_concurrent, metered, prefetch_when_metered, "
       "background_bytes_per_sec FROM prefetch_policy"},
      {"save_prefetch_policy",
       "INSERT INTO prefetch_policy (id, rules, max_concurrent, metered, "
       "prefetch_when_metered, background_bytes_per_sec) VALUES (true, $1, "
       "$2::integer, $3::boolean, $4::boolean, $5::bigint) ON CONFLICT (id) "
       "DO UPDATE SET rules = EXCLUDED.rules, max_concurrent = "
       "EXCLUDED.max_concurrent, metered = EXCLUDED.metered, "
       "prefetch_when_metered = EXCLUDED.prefetch_when_metered, "
       "background_bytes_per_sec = EXCLUDED.background_bytes_per_sec, "
       "updated_at = clock_timestamp()"},
      {"finish_many",
       "UPDATE transfer_jobs t SET state = $2::smallint, reason = $3, "
       "error_code = 0, next_attempt_at = NULL, "
       "expected_size = coalesce(v.size, t.expected_size), "
       "bytes_verified = CASE WHEN $2::smallint = 4 THEN "
       "coalesce(v.size, t.expected_size, t.bytes_verified) ELSE "
       "t.bytes_verified END, finished_at = clock_timestamp(), "
       "updated_at = clock_timestamp() "
       "FROM unnest($1::uuid[], $4::bigint[]) AS v(id, size) "
       "WHERE t.id = v.id AND t.state IN (1, 2, 3)"},
      {"claimed_by", absl::StrCat("SELECT ", kJobColumns,
                                  " FROM transfer_jobs WHERE claim_token = $1 "
                                  "AND state = 2")},
      {"progress",
       absl::StrCat("UPDATE transfer_jobs SET bytes_verified = $2, "
                    "expected_size = coalesce($3::bigint, expected_size), "
                    "expected_sha256 = coalesce(decode($4::text, 'hex'), "
                    "expected_sha256), updated_at = clock_timestamp() "
                    "WHERE id = $1 AND ",
                    kActive)},
      {"add_source",
       absl::StrCat("UPDATE transfer_jobs SET sources_tried = CASE WHEN "
                    "$2::text = ANY(sources_tried) THEN sources_tried ELSE "
                    "array_append(sources_tried, $2::text) END, "
                    "updated_at = clock_timestamp() WHERE id = $1 AND ",
                    kActive)},
      {"add_demoted",
       absl::StrCat("UPDATE transfer_jobs SET demoted = CASE WHEN "
                    "$2::text = ANY(demoted) THEN demoted ELSE "
                    "array_append(demoted, $2::text) END, "
                    "updated_at = clock_timestamp() WHERE id = $1 AND ",
                    kActive)},
      {"retry", absl::StrCat("UPDATE transfer_jobs SET state = 3, "
                             "next_attempt_at = ",
                             TimeParam(2),
                             ", last_error = $3, claim_token = NULL, "
                             "updated_at = clock_timestamp() "
                             "WHERE id = $1 AND ",
                             kActive)},
      {"finish",
       absl::StrCat(
           "UPDATE transfer_jobs SET state = $2::smallint, reason = $3, "
           "error_code = $4, next_attempt_at = NULL, "
           "claim_token = NULL, finished_at = clock_timestamp(), "
           "updated_at = clock_timestamp() WHERE id = $1",
           returning)},
      {"requeue",
       "UPDATE transfer_jobs SET state = 1, claim_token = NULL, "
       "updated_at = clock_timestamp() WHERE state = 2"},
      {"next_wakeup",
       "SELECT (extract(epoch FROM min(next_attempt_at)) * 1000000)::bigint "
       "FROM transfer_jobs WHERE state = 3"},
      {"prune", absl::StrCat("DELETE FROM transfer_jobs WHERE state >= 4 AND "
                             "finished_at < ",
                             TimeParam(1))},
  };
  for (const auto& [name, sql] : statements) {
    SC_RETURN_IF_ERROR(conn.Prepare(name, sql));
  }
  return absl::OkStatus();
}

class PgJobStore final : public JobStore {
 public:
  explicit PgJobStore(std::unique_ptr<pg::Connection> conn)
      : conn_(std::move(conn)) {}

  absl::StatusOr<Job> Create(const SidecarKey& key,
                             v1::Priority priority) override;
  absl::StatusOr<std::optional<Job>> Get(absl::string_view id) override;
  absl::StatusOr<std::vector<Job>> List(bool active_only,
                                        uint32_t limit) override;
  absl::StatusOr<std::vector<std::string>> ActiveIds() override;
  absl::StatusOr<std::vector<ActiveCount>> CountActive() override;
  absl::StatusOr<std::optional<Job>> ClaimNext(
      absl::Time now, absl::Span<const Kind> leave_fresh,
      v1::Priority min_priority) override;
  absl::StatusOr<std::vector<Job>> CreateMany(absl::Span<const SidecarKey> keys,
                                              v1::Priority priority) override;
  absl::StatusOr<std::vector<Job>> ClaimBatch(
      absl::Time now, size_t max, absl::Span<const Kind> kinds,
      v1::Priority min_priority) override;
  absl::StatusOr<std::vector<Job>> ListWaitingPrefetch(
      absl::string_view after_id, uint32_t limit) override;
  absl::StatusOr<std::optional<StoredPrefetchPolicy>> LoadPrefetchPolicy()
      override;
  absl::Status SavePrefetchPolicy(const StoredPrefetchPolicy& policy) override;
  absl::StatusOr<uint64_t> GiveBack(absl::Span<const std::string> ids) override;
  // Runs prepared `statement` (with retries) and returns the rows it
  // changed.
  absl::StatusOr<uint64_t> ExecCount(const std::string& statement,
                                     const pg::Params& params)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Runs a claiming UPDATE that marks its jobs with `token`, in a
  // transaction; a retry after a lost COMMIT finds them by the token.
  absl::StatusOr<std::vector<Job>> Claim(const std::string& statement,
                                         const std::string& token,
                                         const pg::Params& params);
  absl::StatusOr<uint64_t> FinishMany(
      absl::Span<const std::string> ids, v1::JobState state,
      absl::string_view reason, absl::Span<const uint64_t> sizes) override;
  absl::Status UpdateProgress(
      absl::string_view id, uint64_t bytes_verified,
      std::optional<uint64_t> expected_size,
      const std::optional<Sha256Digest>& expected_sha256) override;
  absl::Status AddSourceTried(absl::string_view id,
                              absl::string_view device_id) override;
  absl::Status AddDemoted(absl::string_view id,
                          absl::string_view device_id) override;
  absl::Status ScheduleRetry(absl::string_view id, absl::Time next_attempt_at,
                             absl::string_view last_error) override;
  absl::StatusOr<Job> Finish(absl::string_view id, v1::JobState state,
                             absl::string_view reason,
                             int32_t error_code) override;
  absl::StatusOr<uint64_t> RequeueRunning() override;
  absl::StatusOr<std::optional<absl::Time>> NextWakeup() override;
  absl::StatusOr<uint64_t> PruneFinished(absl::Time before) override;

 private:
  // Runs prepared statement `name` (an UPDATE of one active job, params[0]
  // its canonical id); if it touched no row, says why: NOT_FOUND or
  // FAILED_PRECONDITION.
  absl::Status UpdateActive(absl::string_view id, const std::string& name,
                            pg::Params params) ABSL_LOCKS_EXCLUDED(mu_);
  // A list of jobs from prepared statement `name`.
  absl::StatusOr<std::vector<Job>> Query(const std::string& name,
                                         const pg::Params& params)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;  // held for every use of the connection
  const std::unique_ptr<pg::Connection> conn_ ABSL_PT_GUARDED_BY(mu_);
};

// Why an update of job `id` touched no row; `conn` is in use by the caller.
absl::Status WhyNotActive(pg::Connection& conn, const std::string& id) {
  absl::StatusOr<pg::Result> r = conn.ExecPrepared("state", {id});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return NoSuchJob(id);
  absl::StatusOr<int64_t> state = r->GetInt64(0, 0);
  if (!state.ok()) return state.status();
  return absl::FailedPreconditionError(absl::StrCat(
      "transfer job ", id,
      " has ended: ", v1::JobState_Name(static_cast<v1::JobState>(*state))));
}

absl::Status PgJobStore::UpdateActive(absl::string_view id,
                                      const std::string& name,
                                      pg::Params params) {
  std::optional<std::string> canonical = CanonicalId(id);
  if (!canonical) return NoSuchJob(id);
  params.insert(params.begin(), *canonical);
  absl::MutexLock lock(&mu_);
  return conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        absl::StatusOr<pg::Result> r = conn.ExecPrepared(name, params);
        if (!r.ok()) return r.status();
        if (r->affected_rows() > 0) return absl::OkStatus();
        return WhyNotActive(conn, *canonical);
      });
}

absl::StatusOr<std::vector<Job>> PgJobStore::Query(const std::string& name,
                                                   const pg::Params& params) {
  absl::MutexLock lock(&mu_);
  return pg::QueryPrepared<Job>(*conn_, kRetryTimeout, name, params,
                                JobFromRow);
}

namespace {

absl::Status ValidateNewJob(const SidecarKey& key, v1::Priority priority) {
  SC_RETURN_IF_ERROR(ValidateKey(key));
  if (!v1::Priority_IsValid(priority)) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority ", static_cast<int>(priority), " is unknown"));
  }
  return absl::OkStatus();
}

// Makes sure each of `keys` (distinct) has an active job: inserts one with
// the matching id from `ids`, or raises the priority of the key's active
// job. Fills `jobs` (same order; entries already set are kept). Runs
// inside the caller's transaction.
absl::Status CreateAllInTransaction(pg::Connection& conn,
                                    absl::Span<const std::string> ids,
                                    absl::Span<const SidecarKey> keys,
                                    v1::Priority priority,
                                    std::vector<std::optional<Job>>& jobs) {
  absl::flat_hash_map<SidecarKey, size_t> index;
  index.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], i);
  auto take = [&](const pg::Result& r) -> absl::Status {
    for (int row = 0; row < r.rows(); ++row) {
      absl::StatusOr<Job> job = JobFromRow(r, row);
      if (!job.ok()) return job.status();
      auto it = index.find(job->key);
      if (it != index.end()) jobs[it->second] = std::move(*job);
    }
    return absl::OkStatus();
  };
  const std::string prio = std::to_string(priority);
  // The active job of a key may end between the insert that found it and
  // the update; then the insert succeeds the next time round.
  for (int round = 0; round < 3; ++round) {
    pg::ArrayBuilder id, u, k, v, f;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (jobs[i]) continue;
      id.Add(ids[i]);
      u.Add(keys[i].content.ToString());
      k.AddInt(keys[i].kind);
      v.Add(keys[i].variant);
      f.AddInt(keys[i].format);
    }
    if (u.size() == 0) return absl::OkStatus();
    const bool all_new = round == 0 && u.size() == keys.size();
    const std::string us = u.Finish(), ks = k.Finish(), vs = v.Finish(),
                      fs = f.Finish();
    absl::StatusOr<pg::Result> r =
        conn.ExecPrepared("create_many", {id.Finish(), us, ks, vs, fs, prio});
    if (!r.ok()) return r.status();
    SC_RETURN_IF_ERROR(take(*r));
    if (all_new && static_cast<size_t>(r->rows()) == keys.size()) break;
    r = conn.ExecPrepared("create_existing_many", {us, ks, vs, fs, prio});
    if (!r.ok()) return r.status();
    SC_RETURN_IF_ERROR(take(*r));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!jobs[i]) {
      return absl::AbortedError(
          absl::StrCat("could not create a job for ", KeyDebugString(keys[i]),
                       ": its active job kept changing; try again"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Job> PgJobStore::Create(const SidecarKey& key,
                                       v1::Priority priority) {
  absl::StatusOr<std::vector<Job>> jobs =
      CreateMany(absl::MakeConstSpan(&key, 1), priority);
  if (!jobs.ok()) return jobs.status();
  return std::move(jobs->front());
}

absl::StatusOr<std::vector<Job>> PgJobStore::CreateMany(
    absl::Span<const SidecarKey> keys, v1::Priority priority) {
  if (priority == v1::PRIORITY_UNSPECIFIED) priority = v1::PRIORITY_NORMAL;
  for (const SidecarKey& key : keys) {
    SC_RETURN_IF_ERROR(ValidateNewJob(key, priority));
  }
  // Ids are chosen here so that a retry after a lost COMMIT finds the jobs
  // it created (as the active jobs of the keys) instead of making more.
  std::vector<std::string> ids;
  ids.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    ids.push_back(Uuid::Random().ToString());
  }
  // One job per distinct key; repeats get the same job.
  std::vector<SidecarKey> distinct;
  std::vector<size_t> slot(keys.size());
  {
    absl::flat_hash_map<SidecarKey, size_t> first;
    for (size_t i = 0; i < keys.size(); ++i) {
      auto [it, added] = first.emplace(keys[i], distinct.size());
      if (added) distinct.push_back(keys[i]);
      slot[i] = it->second;
    }
  }
  absl::MutexLock lock(&mu_);
  std::vector<std::optional<Job>> made;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        made.assign(distinct.size(), std::nullopt);
        return CreateAllInTransaction(conn, ids, distinct, priority, made);
      });
  if (!s.ok()) return s;
  std::vector<Job> out;
  out.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) out.push_back(*made[slot[i]]);
  return out;
}

namespace {

// A uuid[] literal of job ids; INVALID_ARGUMENT if one is not a UUID.
absl::StatusOr<std::string> IdArray(absl::Span<const std::string> ids) {
  std::string array = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    std::optional<std::string> c = CanonicalId(ids[i]);
    if (!c) return absl::InvalidArgumentError("job ids are UUIDs");
    absl::StrAppend(&array, i ? "," : "", *c);
  }
  return array + "}";
}

// A smallint[] literal of kinds.
std::string KindArray(absl::Span<const Kind> kinds) {
  std::string out = "{";
  for (size_t i = 0; i < kinds.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", static_cast<int>(kinds[i]));
  }
  return out + "}";
}

}  // namespace

absl::StatusOr<uint64_t> PgJobStore::ExecCount(const std::string& statement,
                                               const pg::Params& params) {
  absl::MutexLock lock(&mu_);
  uint64_t n = 0;
  SC_RETURN_IF_ERROR(conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        SC_ASSIGN_OR_RETURN(pg::Result r, conn.ExecPrepared(statement, params));
        n = r.affected_rows();
        return absl::OkStatus();
      }));
  return n;
}

absl::StatusOr<std::vector<Job>> PgJobStore::Claim(const std::string& statement,
                                                   const std::string& token,
                                                   const pg::Params& params) {
  absl::MutexLock lock(&mu_);
  std::vector<Job> out;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int attempt) -> absl::Status {
        out.clear();
        // Plan the claim for the table as it is now. A generic plan made
        // while the table was small (statistics lag behind a burst of
        // Fetch calls) scans every queued job per claimed one.
        SC_RETURN_IF_ERROR(
            conn.Exec("SET LOCAL plan_cache_mode = force_custom_plan")
                .status());
        absl::StatusOr<pg::Result> r;
        if (attempt > 0) {
          // The first attempt's COMMIT may have gone through: then the jobs
          // carry our token already.
          r = conn.ExecPrepared("claimed_by", {token});
          if (!r.ok()) return r.status();
        }
        if (attempt == 0 || r->rows() == 0) {
          r = conn.ExecPrepared(statement, params);
          if (!r.ok()) return r.status();
        }
        for (int row = 0; row < r->rows(); ++row) {
          absl::StatusOr<Job> job = JobFromRow(*r, row);
          if (!job.ok()) return job.status();
          out.push_back(std::move(*job));
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<Job>> PgJobStore::ClaimBatch(
    absl::Time now, size_t max, absl::Span<const Kind> kinds,
    v1::Priority min_priority) {
  if (max == 0 || kinds.empty()) return std::vector<Job>();
  const std::string token = Uuid::Random().ToString();
  return Claim("claim_batch", token,
               {token, KindArray(kinds), std::to_string(max),
                std::to_string(static_cast<int>(min_priority))});
}

absl::StatusOr<std::vector<Job>> PgJobStore::ListWaitingPrefetch(
    absl::string_view after_id, uint32_t limit) {
  std::string after = "00000000-0000-0000-0000-000000000000";
  if (!after_id.empty()) {
    std::optional<std::string> canonical = CanonicalId(after_id);
    if (!canonical) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", after_id, "\" is not a job id"));
    }
    after = *canonical;
  }
  if (limit == 0) limit = kDefaultListLimit;
  limit = std::min(limit, kMaxListLimit);
  return Query("waiting_prefetch", {after, std::to_string(limit)});
}

absl::StatusOr<std::optional<StoredPrefetchPolicy>>
PgJobStore::LoadPrefetchPolicy() {
  absl::MutexLock lock(&mu_);
  std::optional<StoredPrefetchPolicy> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.reset();
        absl::StatusOr<pg::Result> r =
            conn.ExecPrepared("load_prefetch_policy", {});
        if (!r.ok()) return r.status();
        if (r->rows() == 0) return absl::OkStatus();
        StoredPrefetchPolicy p;
        p.rules = std::string(r->Get(0, 0));
        SC_ASSIGN_OR_RETURN(int64_t max, r->GetInt64(0, 1));
        SC_ASSIGN_OR_RETURN(p.metered, r->GetBool(0, 2));
        SC_ASSIGN_OR_RETURN(p.prefetch_when_metered, r->GetBool(0, 3));
        SC_ASSIGN_OR_RETURN(int64_t rate, r->GetInt64(0, 4));
        p.max_concurrent = static_cast<int>(max);
        p.background_bytes_per_sec = static_cast<uint64_t>(rate);
        out = std::move(p);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgJobStore::SavePrefetchPolicy(
    const StoredPrefetchPolicy& policy) {
  if (policy.max_concurrent < 0 || policy.max_concurrent > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("max concurrent prefetch ", policy.max_concurrent,
                     " is out of range: use 0 to 64"));
  }
  if (policy.background_bytes_per_sec > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(
        "background bytes per second must be below 2^63");
  }
  absl::MutexLock lock(&mu_);
  return conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        return conn
            .ExecPrepared("save_prefetch_policy",
                          {policy.rules, std::to_string(policy.max_concurrent),
                           policy.metered ? "true" : "false",
                           policy.prefetch_when_metered ? "true" : "false",
                           std::to_string(policy.background_bytes_per_sec)})
            .status();
      });
}

absl::StatusOr<uint64_t> PgJobStore::FinishMany(
    absl::Span<const std::string> ids, v1::JobState state,
    absl::string_view reason, absl::Span<const uint64_t> sizes) {
  if (!sizes.empty() && sizes.size() != ids.size()) {
    return absl::InvalidArgumentError("one size per job id, or none");
  }
  if (state != v1::JOB_STATE_DONE && state != v1::JOB_STATE_GENERATE &&
      state != v1::JOB_STATE_CANCELLED) {
    return absl::InvalidArgumentError(
        "jobs end in DONE, GENERATE or CANCELLED");
  }
  if (ids.empty()) return 0;
  SC_ASSIGN_OR_RETURN(std::string array, IdArray(ids));
  std::string size_array = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StrAppend(
        &size_array, i ? "," : "",
        sizes.empty() ? std::string("NULL") : std::to_string(sizes[i]));
  }
  size_array += "}";
  return ExecCount("finish_many", {array, std::to_string(state),
                                   std::string(reason), size_array});
}

absl::StatusOr<uint64_t> PgJobStore::GiveBack(
    absl::Span<const std::string> ids) {
  if (ids.empty()) return 0;
  SC_ASSIGN_OR_RETURN(std::string array, IdArray(ids));
  return ExecCount("give_back", {array});
}

absl::StatusOr<std::optional<Job>> PgJobStore::Get(absl::string_view id) {
  std::optional<std::string> canonical = CanonicalId(id);
  if (!canonical) return std::optional<Job>();
  absl::StatusOr<std::vector<Job>> jobs = Query("get", {*canonical});
  if (!jobs.ok()) return jobs.status();
  if (jobs->empty()) return std::optional<Job>();
  return std::optional<Job>(std::move(jobs->front()));
}

absl::StatusOr<std::vector<Job>> PgJobStore::List(bool active_only,
                                                  uint32_t limit) {
  if (limit == 0) limit = kDefaultListLimit;
  limit = std::min(limit, kMaxListLimit);
  return Query(active_only ? "list_active" : "list_all",
               {std::to_string(limit)});
}

absl::StatusOr<std::vector<std::string>> PgJobStore::ActiveIds() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.clear();
        absl::StatusOr<pg::Result> r = conn.ExecPrepared("active_ids", {});
        if (!r.ok()) return r.status();
        out.reserve(r->rows());
        for (int row = 0; row < r->rows(); ++row) {
          out.emplace_back(r->Get(row, 0));
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<JobStore::ActiveCount>> PgJobStore::CountActive() {
  absl::MutexLock lock(&mu_);
  std::vector<ActiveCount> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.clear();
        absl::StatusOr<pg::Result> r = conn.ExecPrepared("count_active", {});
        if (!r.ok()) return r.status();
        for (int row = 0; row < r->rows(); ++row) {
          absl::StatusOr<int64_t> state = r->GetInt64(row, 0);
          absl::StatusOr<int64_t> priority = r->GetInt64(row, 1);
          absl::StatusOr<int64_t> count = r->GetInt64(row, 2);
          if (!state.ok()) return state.status();
          if (!priority.ok()) return priority.status();
          if (!count.ok()) return count.status();
          out.push_back({static_cast<v1::JobState>(*state),
                         static_cast<v1::Priority>(*priority),
                         static_cast<uint64_t>(*count)});
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::optional<Job>> PgJobStore::ClaimNext(
    absl::Time now, absl::Span<const Kind> leave_fresh,
    v1::Priority min_priority) {
  const std::string token = Uuid::Random().ToString();
  absl::StatusOr<std::vector<Job>> jobs =
      Claim("claim", token,
            {TimeArg(now), token, KindArray(leave_fresh),
             std::to_string(static_cast<int>(min_priority))});
  if (!jobs.ok()) return jobs.status();
  if (jobs->empty()) return std::optional<Job>();
  return std::optional<Job>(std::move(jobs->front()));
}

absl::Status PgJobStore::UpdateProgress(
    absl::string_view id, uint64_t bytes_verified,
    std::optional<uint64_t> expected_size,
    const std::optional<Sha256Digest>& expected_sha256) {
  constexpr uint64_t kMaxBigint = INT64_MAX;
  if (bytes_verified > kMaxBigint ||
      (expected_size && *expected_size > kMaxBigint)) {
    return absl::InvalidArgumentError("sizes must be below 2^63");
  }
  pg::Params params = {std::to_string(bytes_verified)};
  params.push_back(expected_size ? pg::Param(std::to_string(*expected_size))
                                 : std::nullopt);
  params.push_back(expected_sha256 ? pg::Param(DigestToHex(*expected_sha256))
                                   : std::nullopt);
  return UpdateActive(id, "progress", std::move(params));
}

absl::Status PgJobStore::AddSourceTried(absl::string_view id,
                                        absl::string_view device_id) {
  return UpdateActive(id, "add_source", {std::string(device_id)});
}

absl::Status PgJobStore::AddDemoted(absl::string_view id,
                                    absl::string_view device_id) {
  return UpdateActive(id, "add_demoted", {std::string(device_id)});
}

absl::Status PgJobStore::ScheduleRetry(absl::string_view id,
                                       absl::Time next_attempt_at,
                                       absl::string_view last_error) {
  return UpdateActive(id, "retry",
                      {TimeArg(next_attempt_at), std::string(last_error)});
}

absl::StatusOr<Job> PgJobStore::Finish(absl::string_view id, v1::JobState state,
                                       absl::string_view reason,
                                       int32_t error_code) {
  if (!IsFinalState(state)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a job cannot finish in state ", v1::JobState_IsValid(state)
                                             ? v1::JobState_Name(state)
                                             : std::to_string(state)));
  }
  std::optional<std::string> canonical = CanonicalId(id);
  if (!canonical) return NoSuchJob(id);
  const pg::Params params = {*canonical, std::to_string(state),
                             std::string(reason), std::to_string(error_code)};
  absl::MutexLock lock(&mu_);
  Job out;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int attempt) -> absl::Status {
        absl::StatusOr<pg::Result> r =
            conn.ExecPrepared("state_for_update", {*canonical});
        if (!r.ok()) return r.status();
        if (r->rows() == 0) return NoSuchJob(*canonical);
        absl::StatusOr<int64_t> current = r->GetInt64(0, 0);
        if (!current.ok()) return current.status();
        const auto now_state = static_cast<v1::JobState>(*current);
        bool finished_before = false;
        if (IsFinalState(now_state)) {
          // After a lost COMMIT the first attempt may have finished it.
          if (attempt == 0 || now_state != state) {
            return absl::FailedPreconditionError(absl::StrCat(
                "transfer job ", *canonical,
                " has already ended: ", v1::JobState_Name(now_state)));
          }
          finished_before = true;
        }
        r = finished_before ? conn.ExecPrepared("get", {*canonical})
                            : conn.ExecPrepared("finish", params);
        if (!r.ok()) return r.status();
        if (r->rows() != 1) return NoSuchJob(*canonical);
        absl::StatusOr<Job> job = JobFromRow(*r, 0);
        if (!job.ok()) return job.status();
        out = std::move(*job);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> PgJobStore::RequeueRunning() {
  SC_ASSIGN_OR_RETURN(uint64_t out, ExecCount("requeue", {}));
  if (out > 0) SC_LOG(INFO) << "requeued " << out << " interrupted jobs";
  return out;
}

absl::StatusOr<std::optional<absl::Time>> PgJobStore::NextWakeup() {
  absl::MutexLock lock(&mu_);
  std::optional<absl::Time> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        absl::StatusOr<pg::Result> r = conn.ExecPrepared("next_wakeup", {});
        if (!r.ok()) return r.status();
        absl::StatusOr<std::optional<absl::Time>> t = OptionalTime(*r, 0, 0);
        if (!t.ok()) return t.status();
        out = *t;
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> PgJobStore::PruneFinished(absl::Time before) {
  return ExecCount("prune", {TimeArg(before)});
}

}  // namespace

bool IsActiveState(v1::JobState state) {
  return state == v1::JOB_STATE_QUEUED || state == v1::JOB_STATE_RUNNING ||
         state == v1::JOB_STATE_WAITING_RETRY;
}

bool IsFinalState(v1::JobState state) {
  return state == v1::JOB_STATE_DONE || state == v1::JOB_STATE_GENERATE ||
         state == v1::JOB_STATE_CANCELLED;
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(
    const std::string& conninfo, absl::Duration connect_timeout) {
  pg::ConnectOptions options;
  options.connect_timeout = connect_timeout;
  options.attempt_timeout = std::min(connect_timeout, absl::Seconds(5));
  options.application_name = "sidecar-transfer";
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(conninfo, options);
  if (!conn.ok()) return conn.status();
  absl::Status s =
      (*conn)->RunWithRetry(connect_timeout, [](pg::Connection& c, int) {
        return pg::ApplyMigrations(c, JobMigrations(), kJobMigrationLockKey);
      });
  if (!s.ok()) return s;
  // Another service's migrations in the same database would have made ours
  // look applied.
  s = (*conn)->RunWithRetry(connect_timeout, [](pg::Connection& c, int) {
    absl::StatusOr<pg::Result> r =
        c.Exec("SELECT to_regclass('transfer_jobs') IS NOT NULL");
    if (!r.ok()) return r.status();
    absl::StatusOr<bool> exists = r->GetBool(0, 0);
    if (!exists.ok()) return exists.status();
    if (*exists) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "the database has schema migrations but no transfer_jobs table: it "
        "belongs to another service; give the transfer service its own "
        "database");
  });
  if (!s.ok()) return s;
  s = (*conn)->RunWithRetry(connect_timeout, [](pg::Connection& c, int) {
    return PrepareStatements(c);
  });
  if (!s.ok()) return s;
  return std::make_unique<PgJobStore>(std::move(*conn));
}

}  // namespace sidecar::transfer
