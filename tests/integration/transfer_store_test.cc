// JobStore (the transfer service's job queue) against a real, private
// PostgreSQL 15 server.
#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "common/pg/migrate.h"
#include "gtest/gtest.h"
#include "services/transfer/job_migrations.h"
#include "services/transfer/job_store.h"
#include "tests/support/pg_test.h"

namespace sidecar::transfer {
namespace {

constexpr absl::Duration kConnectTimeout = absl::Seconds(10);

SidecarKey KeyFor(uint64_t i, std::string variant = "grid@2x") {
  Uuid u;
  for (int b = 0; b < 8; ++b) {
    u.bytes[b] = static_cast<uint8_t>(i >> (56 - 8 * b));
  }
  u.bytes[8] = 0x80;
  u.bytes[15] = 1;
  return SidecarKey{u, v1::SIDECAR_KIND_THUMB, std::move(variant),
                    v1::SIDECAR_FORMAT_WEBP};
}

class JobStoreTest : public ::sidecar::testing::PgTest {
 protected:
  std::unique_ptr<JobStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        JobStore::Open(conninfo_, kConnectTimeout);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  static Job MustCreate(JobStore& store, const SidecarKey& key,
                        v1::Priority priority = v1::PRIORITY_NORMAL) {
    absl::StatusOr<Job> job = store.Create(key, priority);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : Job();
  }

  static Job MustGet(JobStore& store, const std::string& id) {
    absl::StatusOr<std::optional<Job>> job = store.Get(id);
    EXPECT_TRUE(job.ok()) << job.status();
    EXPECT_TRUE(job.ok() && job->has_value()) << id;
    return job.ok() && job->has_value() ? **job : Job();
  }

  static std::optional<Job> MustClaim(JobStore& store,
                                      absl::Time now = absl::Now()) {
    absl::StatusOr<std::optional<Job>> job = store.ClaimNext(now);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : std::nullopt;
  }
};

TEST_F(JobStoreTest, OpenTwiceAppliesMigrationsOnce) {
  ASSERT_NE(OpenStore(), nullptr);
  ASSERT_NE(OpenStore(), nullptr);
  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto version = pg::SchemaVersion(**conn);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, JobMigrations().back().version);
}

TEST_F(JobStoreTest, RefusesAnotherServicesDatabase) {
  {
    auto conn = pg::Connection::Open(conninfo_);
    ASSERT_TRUE(conn.ok()) << conn.status();
    const pg::Migration other[] = {{1, "other", "CREATE TABLE other (x int)"}};
    ASSERT_TRUE(pg::ApplyMigrations(**conn, other, 42).ok());
  }
  auto store = JobStore::Open(conninfo_, kConnectTimeout);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
      << store.status();
}

TEST_F(JobStoreTest, CreateDedupesActiveJobs) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::Time before = absl::Now();
  Job a = MustCreate(*store, KeyFor(1), v1::PRIORITY_PREFETCH);
  EXPECT_TRUE(Uuid::Parse(a.id).ok()) << a.id;
  EXPECT_EQ(a.key, KeyFor(1));
  EXPECT_EQ(a.state, v1::JOB_STATE_QUEUED);
  EXPECT_EQ(a.priority, v1::PRIORITY_PREFETCH);
  EXPECT_EQ(a.attempts, 0u);
  EXPECT_EQ(a.bytes_verified, 0u);
  EXPECT_FALSE(a.expected_size.has_value());
  EXPECT_FALSE(a.finished_at.has_value());
  EXPECT_GE(a.created_at, before - absl::Seconds(5));

  // Same key while active: the same job, its priority raised, never lowered.
  Job again = MustCreate(*store, KeyFor(1), v1::PRIORITY_INTERACTIVE);
  EXPECT_EQ(again.id, a.id);
  EXPECT_EQ(again.priority, v1::PRIORITY_INTERACTIVE);
  again = MustCreate(*store, KeyFor(1), v1::PRIORITY_UNSPECIFIED);
  EXPECT_EQ(again.id, a.id);
  EXPECT_EQ(again.priority, v1::PRIORITY_INTERACTIVE);

  // Still deduped while RUNNING and WAITING_RETRY.
  std::optional<Job> claimed = MustClaim(*store);
  ASSERT_TRUE(claimed.has_value());
  EXPECT_EQ(MustCreate(*store, KeyFor(1)).id, a.id);
  ASSERT_TRUE(
      store->ScheduleRetry(a.id, absl::Now() + absl::Hours(1), "x").ok());
  EXPECT_EQ(MustCreate(*store, KeyFor(1)).id, a.id);

  // Another key (even one differing only in variant): another job.
  Job b = MustCreate(*store, KeyFor(1, "icon@1x"));
  EXPECT_NE(b.id, a.id);
  EXPECT_EQ(b.priority, v1::PRIORITY_NORMAL);  // UNSPECIFIED -> NORMAL

  // Once it ended, the key gets a new job.
  ASSERT_TRUE(store->Finish(a.id, v1::JOB_STATE_GENERATE, "nobody", 14).ok());
  Job c = MustCreate(*store, KeyFor(1));
  EXPECT_NE(c.id, a.id);
  EXPECT_EQ(c.state, v1::JOB_STATE_QUEUED);

  // Bad input.
  SidecarKey bad = KeyFor(2);
  bad.variant = "../x";
  EXPECT_EQ(store->Create(bad, v1::PRIORITY_NORMAL).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      store->Create(KeyFor(2), static_cast<v1::Priority>(9)).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// CreateMany in one call: new keys get new jobs, keys with an active job
// get that job (priority raised), a key listed twice gets one job, and the
// answer follows the order of the request.
TEST_F(JobStoreTest, CreateManyMixesNewActiveAndRepeatedKeys) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job active = MustCreate(*store, KeyFor(1), v1::PRIORITY_PREFETCH);
  Job ended = MustCreate(*store, KeyFor(2));
  ASSERT_TRUE(store->Finish(ended.id, v1::JOB_STATE_DONE, "ok", 0).ok());

  const std::vector<SidecarKey> keys = {KeyFor(3), KeyFor(1), KeyFor(2),
                                        KeyFor(3), KeyFor(1, "icon@1x")};
  auto jobs = store->CreateMany(keys, v1::PRIORITY_INTERACTIVE);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ((*jobs)[i].key, keys[i]) << i;
    EXPECT_EQ((*jobs)[i].priority, v1::PRIORITY_INTERACTIVE) << i;
    EXPECT_EQ((*jobs)[i].state, v1::JOB_STATE_QUEUED) << i;
  }
  EXPECT_EQ((*jobs)[1].id, active.id);
  EXPECT_NE((*jobs)[2].id, ended.id);
  EXPECT_EQ((*jobs)[0].id, (*jobs)[3].id);
  std::set<std::string> distinct;
  for (const Job& j : *jobs) distinct.insert(j.id);
  EXPECT_EQ(distinct.size(), 4u);
  EXPECT_EQ(MustGet(*store, active.id).priority, v1::PRIORITY_INTERACTIVE);

  auto listed = store->List(/*active_only=*/true, 100);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), 4u);

  // Again at a lower priority: the same jobs, priorities kept.
  auto again = store->CreateMany(keys, v1::PRIORITY_PREFETCH);
  ASSERT_TRUE(again.ok()) << again.status();
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ((*again)[i].id, (*jobs)[i].id) << i;
    EXPECT_EQ((*again)[i].priority, v1::PRIORITY_INTERACTIVE) << i;
  }
}

TEST_F(JobStoreTest, ConcurrentCreatesOfOneKeyMakeOneJob) {
  constexpr int kThreads = 6;
  std::vector<std::unique_ptr<JobStore>> stores;
  for (int i = 0; i < kThreads; ++i) stores.push_back(OpenStore());
  std::vector<std::string> ids(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<Job> job =
          stores[i]->Create(KeyFor(7), v1::PRIORITY_NORMAL);
      EXPECT_TRUE(job.ok()) << job.status();
      if (job.ok()) ids[i] = job->id;
    });
  }
  for (auto& t : threads) t.join();
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
}

TEST_F(JobStoreTest, ClaimNextTakesHighestPriorityThenOldest) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job prefetch = MustCreate(*store, KeyFor(1), v1::PRIORITY_PREFETCH);
  Job normal1 = MustCreate(*store, KeyFor(2), v1::PRIORITY_NORMAL);
  Job interactive = MustCreate(*store, KeyFor(3), v1::PRIORITY_INTERACTIVE);
  Job normal2 = MustCreate(*store, KeyFor(4), v1::PRIORITY_NORMAL);

  std::vector<std::string> order;
  while (std::optional<Job> job = MustClaim(*store)) {
    EXPECT_EQ(job->state, v1::JOB_STATE_RUNNING);
    EXPECT_EQ(job->attempts, 1u);
    order.push_back(job->id);
    ASSERT_LE(order.size(), 4u);
  }
  EXPECT_EQ(order, (std::vector<std::string>{interactive.id, normal1.id,
                                             normal2.id, prefetch.id}));
  EXPECT_EQ(MustGet(*store, normal1.id).state, v1::JOB_STATE_RUNNING);
}

// The interactive workers' claim: nothing below the priority asked for,
// and new small jobs too (they would otherwise wait for a batch lane).
TEST_F(JobStoreTest, ClaimNextLeavesJobsBelowTheMinimumPriority) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  MustCreate(*store, KeyFor(1), v1::PRIORITY_PREFETCH);
  MustCreate(*store, KeyFor(2), v1::PRIORITY_NORMAL);
  Job interactive = MustCreate(*store, KeyFor(3), v1::PRIORITY_INTERACTIVE);
  const Kind thumbs[] = {KeyFor(3).kind};

  // A worker that leaves new thumbnails to the lanes finds nothing of at
  // least interactive priority; an interactive worker takes the job.
  auto none = store->ClaimNext(absl::Now(), thumbs, v1::PRIORITY_INTERACTIVE);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  auto got = store->ClaimNext(absl::Now(), {}, v1::PRIORITY_INTERACTIVE);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->id, interactive.id);
  auto next = store->ClaimNext(absl::Now(), {}, v1::PRIORITY_INTERACTIVE);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_FALSE(next->has_value());

  // Normal workers take the rest, highest first.
  auto normal = store->ClaimNext(absl::Now(), {}, v1::PRIORITY_NORMAL);
  ASSERT_TRUE(normal.ok() && normal->has_value());
  EXPECT_EQ((*normal)->priority, v1::PRIORITY_NORMAL);
  auto prefetch = store->ClaimNext(absl::Now());
  ASSERT_TRUE(prefetch.ok() && prefetch->has_value());
  EXPECT_EQ((*prefetch)->priority, v1::PRIORITY_PREFETCH);
}

TEST_F(JobStoreTest, ConcurrentClaimersNeverGetTheSameJob) {
  constexpr int kJobs = 200;
  constexpr int kClaimers = 4;
  std::vector<std::unique_ptr<JobStore>> stores;
  for (int i = 0; i < kClaimers; ++i) {
    stores.push_back(OpenStore());
    ASSERT_NE(stores.back(), nullptr);
  }
  std::set<std::string> created;
  for (int i = 0; i < kJobs; ++i) {
    created.insert(MustCreate(*stores[0], KeyFor(1000 + i)).id);
  }
  std::vector<std::vector<std::string>> claimed(kClaimers);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClaimers; ++c) {
    threads.emplace_back([&, c] {
      while (true) {
        absl::StatusOr<std::optional<Job>> job =
            stores[c]->ClaimNext(absl::Now());
        ASSERT_TRUE(job.ok()) << job.status();
        if (!job->has_value()) break;
        claimed[c].push_back((*job)->id);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::map<std::string, int> seen;
  size_t total = 0;
  for (int c = 0; c < kClaimers; ++c) {
    total += claimed[c].size();
    for (const std::string& id : claimed[c]) ++seen[id];
  }
  EXPECT_EQ(total, static_cast<size_t>(kJobs));
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id << " claimed twice";
  EXPECT_EQ(seen.size(), created.size());
  int busy = 0;
  for (int c = 0; c < kClaimers; ++c) busy += claimed[c].empty() ? 0 : 1;
  std::cerr << "claimers that got jobs: " << busy << " of " << kClaimers
            << "\n";
}

TEST_F(JobStoreTest, SkipLockedPassesOverAJobAnotherClaimerHolds) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job first = MustCreate(*store, KeyFor(1), v1::PRIORITY_INTERACTIVE);
  Job second = MustCreate(*store, KeyFor(2), v1::PRIORITY_NORMAL);
  // Another session holds the row lock of the best job, as a claimer in the
  // middle of its transaction would.
  auto other = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->Exec("BEGIN").ok());
  ASSERT_TRUE((*other)
                  ->ExecParams("SELECT id FROM transfer_jobs WHERE id = $1 "
                               "FOR UPDATE",
                               {first.id})
                  .ok());
  absl::Time start = absl::Now();
  std::optional<Job> got = MustClaim(*store);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // did not wait
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, second.id);
  EXPECT_FALSE(MustClaim(*store).has_value());
  ASSERT_TRUE((*other)->Exec("ROLLBACK").ok());
  got = MustClaim(*store);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, first.id);
}

TEST_F(JobStoreTest, RetryIsClaimableOnlyAfterNextAttemptAt) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job job = MustCreate(*store, KeyFor(1));
  ASSERT_TRUE(MustClaim(*store).has_value());
  ASSERT_TRUE(store->UpdateProgress(job.id, 4096, 10000, std::nullopt).ok());
  auto wake = store->NextWakeup();
  ASSERT_TRUE(wake.ok());
  EXPECT_FALSE(wake->has_value());

  const absl::Time at =
      absl::FromUnixMicros(absl::ToUnixMicros(absl::Now() + absl::Minutes(10)));
  ASSERT_TRUE(store->ScheduleRetry(job.id, at, "peer laptop: deadline").ok());
  Job waiting = MustGet(*store, job.id);
  EXPECT_EQ(waiting.state, v1::JOB_STATE_WAITING_RETRY);
  ASSERT_TRUE(waiting.next_attempt_at.has_value());
  EXPECT_EQ(*waiting.next_attempt_at, at);
  EXPECT_EQ(waiting.last_error, "peer laptop: deadline");
  EXPECT_EQ(waiting.bytes_verified, 4096u);

  wake = store->NextWakeup();
  ASSERT_TRUE(wake.ok());
  ASSERT_TRUE(wake->has_value());
  EXPECT_EQ(**wake, at);

  EXPECT_FALSE(MustClaim(*store, absl::Now()).has_value());
  EXPECT_FALSE(MustClaim(*store, at - absl::Microseconds(1)).has_value());
  // A queued job of lower priority is still claimable meanwhile.
  Job other = MustCreate(*store, KeyFor(2), v1::PRIORITY_PREFETCH);
  std::optional<Job> got = MustClaim(*store, absl::Now());
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, other.id);

  got = MustClaim(*store, at);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, job.id);
  EXPECT_EQ(got->state, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(got->attempts, 2u);
  EXPECT_FALSE(got->next_attempt_at.has_value());
  EXPECT_EQ(got->bytes_verified, 4096u);
  EXPECT_EQ(got->last_error, "peer laptop: deadline");
  wake = store->NextWakeup();
  ASSERT_TRUE(wake.ok());
  EXPECT_FALSE(wake->has_value());
}

TEST_F(JobStoreTest, ProgressSourcesAndDemotedRoundTrip) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job job = MustCreate(*store, KeyFor(1));
  const Sha256Digest sha = Sha256Of("the file");
  ASSERT_TRUE(store->UpdateProgress(job.id, 0, 123456789012, sha).ok());
  ASSERT_TRUE(
      store->UpdateProgress(job.id, 65536, std::nullopt, std::nullopt).ok());
  // Device ids with characters an array literal must quote.
  const std::string odd = "dev \"x\", {y}\\z";
  ASSERT_TRUE(store->AddSourceTried(job.id, "desktop-id").ok());
  ASSERT_TRUE(store->AddSourceTried(job.id, odd).ok());
  ASSERT_TRUE(store->AddSourceTried(job.id, "desktop-id").ok());  // once
  ASSERT_TRUE(store->AddSourceTried(job.id, "").ok());
  ASSERT_TRUE(store->AddDemoted(job.id, "NULL").ok());
  ASSERT_TRUE(store->AddDemoted(job.id, "NULL").ok());

  Job got = MustGet(*store, job.id);
  EXPECT_EQ(got.bytes_verified, 65536u);
  ASSERT_TRUE(got.expected_size.has_value());
  EXPECT_EQ(*got.expected_size, 123456789012u);
  ASSERT_TRUE(got.expected_sha256.has_value());
  EXPECT_EQ(*got.expected_sha256, sha);
  EXPECT_EQ(got.sources_tried,
            (std::vector<std::string>{"desktop-id", odd, ""}));
  EXPECT_EQ(got.demoted, (std::vector<std::string>{"NULL"}));
  EXPECT_GE(got.updated_at, got.created_at);

  // Unknown and malformed ids.
  const std::string unknown = Uuid::Random().ToString();
  EXPECT_EQ(
      store->UpdateProgress(unknown, 1, std::nullopt, std::nullopt).code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(store->AddSourceTried("not-a-uuid", "d").code(),
            absl::StatusCode::kNotFound);
  auto none = store->Get(unknown);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  none = store->Get("../etc");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(JobStoreTest, FinishStates) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job done = MustCreate(*store, KeyFor(1));
  Job gen = MustCreate(*store, KeyFor(2));
  Job cancelled = MustCreate(*store, KeyFor(3));
  Job active = MustCreate(*store, KeyFor(4));
  ASSERT_TRUE(MustClaim(*store).has_value());  // `done` runs

  absl::StatusOr<Job> r =
      store->Finish(done.id, v1::JOB_STATE_DONE, "from laptop", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state, v1::JOB_STATE_DONE);
  EXPECT_EQ(r->reason, "from laptop");
  EXPECT_TRUE(r->finished_at.has_value());
  r = store->Finish(gen.id, v1::JOB_STATE_GENERATE, "every source failed", 5);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->error_code, 5);
  ASSERT_TRUE(
      store->ScheduleRetry(cancelled.id, absl::Now() + absl::Hours(1), "e")
          .ok());
  r = store->Finish(cancelled.id, v1::JOB_STATE_CANCELLED, "by user", 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->next_attempt_at.has_value());

  EXPECT_EQ(MustGet(*store, gen.id).state, v1::JOB_STATE_GENERATE);
  EXPECT_EQ(MustGet(*store, gen.id).reason, "every source failed");
  EXPECT_EQ(MustGet(*store, cancelled.id).state, v1::JOB_STATE_CANCELLED);

  // Ended jobs are not claimed, updated or finished again.
  absl::StatusOr<std::optional<Job>> next = store->ClaimNext(absl::Now());
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->id, active.id);
  EXPECT_FALSE(MustClaim(*store, absl::Now() + absl::Hours(2)).has_value());
  absl::Status s =
      store->UpdateProgress(cancelled.id, 1, std::nullopt, std::nullopt);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("CANCELLED"), absl::string_view::npos) << s;
  EXPECT_EQ(store->ScheduleRetry(done.id, absl::Now(), "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      store->Finish(done.id, v1::JOB_STATE_CANCELLED, "", 0).status().code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      store->Finish(active.id, v1::JOB_STATE_RUNNING, "", 0).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Finish(Uuid::Random().ToString(), v1::JOB_STATE_DONE, "", 0)
                .status()
                .code(),
            absl::StatusCode::kNotFound);

  // List: newest first; active only.
  auto all = store->List(false, 0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].id, active.id);
  EXPECT_EQ((*all)[3].id, done.id);
  auto limited = store->List(false, 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(), 2u);
  auto act = store->List(true, 0);
  ASSERT_TRUE(act.ok());
  ASSERT_EQ(act->size(), 1u);
  EXPECT_EQ((*act)[0].id, active.id);
  auto ids = store->ActiveIds();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{active.id});

  // Prune: ended jobs finished before the cut-off go.
  auto pruned = store->PruneFinished(absl::Now() - absl::Hours(1));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 0u);
  pruned = store->PruneFinished(absl::Now() + absl::Seconds(1));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 3u);
  all = store->List(false, 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

TEST_F(JobStoreTest, RequeueRunningAfterCrash) {
  std::string running_id, queued_id;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    Job a = MustCreate(*store, KeyFor(1), v1::PRIORITY_INTERACTIVE);
    Job b = MustCreate(*store, KeyFor(2));
    running_id = a.id;
    queued_id = b.id;
    ASSERT_TRUE(MustClaim(*store).has_value());
    ASSERT_TRUE(
        store->UpdateProgress(a.id, 1 << 20, 5 << 20, std::nullopt).ok());
    // The process "crashes": the store goes away with the job RUNNING.
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(MustGet(*store, running_id).state, v1::JOB_STATE_RUNNING);
  auto n = store->RequeueRunning();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  Job requeued = MustGet(*store, running_id);
  EXPECT_EQ(requeued.state, v1::JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.bytes_verified, 1u << 20);
  EXPECT_EQ(requeued.attempts, 1u);
  EXPECT_EQ(MustGet(*store, queued_id).state, v1::JOB_STATE_QUEUED);
  n = store->RequeueRunning();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);

  std::optional<Job> again = MustClaim(*store);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->id, running_id);
  EXPECT_EQ(again->attempts, 2u);
  EXPECT_EQ(again->bytes_verified, 1u << 20);
  ASSERT_TRUE(again->expected_size.has_value());
  EXPECT_EQ(*again->expected_size, 5u << 20);
}

// The batch lane's claim takes at most `max` new jobs of the given kinds,
// all of the highest priority (an interactive job never shares a batch with
// slower work), also when its plan was cached while the table was empty (as
// on a fresh device before the first burst of Fetch calls). Such a stale
// plan ran the picking subquery once per row and claimed them all.
TEST_F(JobStoreTest, ClaimBatchTakesAtMostMaxOfOnePriorityWithAStalePlan) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  const Kind thumbs[] = {v1::SIDECAR_KIND_THUMB};
  for (int i = 0; i < 8; ++i) {  // past the custom-plan executions
    auto none = store->ClaimBatch(absl::Now(), 100, thumbs);
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_TRUE(none->empty());
  }
  std::vector<SidecarKey> normal, interactive, proxies;
  for (int i = 0; i < 2000; ++i) normal.push_back(KeyFor(10000 + i));
  for (int i = 0; i < 100; ++i) interactive.push_back(KeyFor(20000 + i));
  for (int i = 0; i < 100; ++i) {
    SidecarKey k = KeyFor(30000 + i);
    k.kind = v1::SIDECAR_KIND_PROXY;
    k.format = v1::SIDECAR_FORMAT_MP4;
    proxies.push_back(k);
  }
  ASSERT_TRUE(store->CreateMany(normal, v1::PRIORITY_NORMAL).ok());
  ASSERT_TRUE(store->CreateMany(proxies, v1::PRIORITY_INTERACTIVE).ok());
  auto urgent = store->CreateMany(interactive, v1::PRIORITY_INTERACTIVE);
  ASSERT_TRUE(urgent.ok()) << urgent.status();

  // First the interactive thumbnails, alone.
  auto batch = store->ClaimBatch(absl::Now(), 1000, thumbs);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 100u);
  std::set<std::string> ids;
  for (const Job& job : *batch) {
    EXPECT_EQ(job.key.kind, v1::SIDECAR_KIND_THUMB);
    EXPECT_EQ(job.priority, v1::PRIORITY_INTERACTIVE);
    EXPECT_EQ(job.state, v1::JOB_STATE_RUNNING);
    EXPECT_EQ(job.attempts, 1u);
    ids.insert(job.id);
  }
  for (const Job& job : *urgent) EXPECT_TRUE(ids.count(job.id)) << job.id;

  // Then the normal ones, at most 1000 at a time.
  auto second = store->ClaimBatch(absl::Now(), 1000, thumbs);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->size(), 1000u);
  for (const Job& job : *second) {
    EXPECT_EQ(job.priority, v1::PRIORITY_NORMAL);
    EXPECT_TRUE(ids.insert(job.id).second) << job.id;
  }

  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto running =
      (*conn)->Exec("SELECT count(*) FROM transfer_jobs WHERE state = 2");
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->GetInt64(0, 0).value_or(-1), 1100);

  // The rest comes in later batches, then nothing.
  size_t rest = 0;
  for (int i = 0; i < 10; ++i) {
    auto more = store->ClaimBatch(absl::Now(), 1000, thumbs);
    ASSERT_TRUE(more.ok()) << more.status();
    if (more->empty()) break;
    rest += more->size();
  }
  EXPECT_EQ(rest, 1000u);
}

// A batch that yields to foreground work gives its unreceived jobs back as
// if never claimed: QUEUED, no attempt counted, batchable again. Jobs no
// longer RUNNING are left alone.
TEST_F(JobStoreTest, GiveBackReturnsClaimedJobsUnattempted) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<SidecarKey> keys;
  for (int i = 0; i < 5; ++i) keys.push_back(KeyFor(500 + i));
  ASSERT_TRUE(store->CreateMany(keys, v1::PRIORITY_PREFETCH).ok());
  const Kind thumbs[] = {v1::SIDECAR_KIND_THUMB};
  auto batch = store->ClaimBatch(absl::Now(), 10, thumbs);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 5u);
  ASSERT_TRUE(
      store->FinishMany({(*batch)[0].id}, v1::JOB_STATE_DONE, "done").ok());

  std::vector<std::string> ids;
  for (const Job& j : *batch) ids.push_back(j.id);
  auto n = store->GiveBack(ids);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 4u);  // the finished one stays DONE
  EXPECT_EQ(MustGet(*store, ids[0]).state, v1::JOB_STATE_DONE);
  for (size_t i = 1; i < ids.size(); ++i) {
    Job j = MustGet(*store, ids[i]);
    EXPECT_EQ(j.state, v1::JOB_STATE_QUEUED);
    EXPECT_EQ(j.attempts, 0u);
  }
  auto again = store->ClaimBatch(absl::Now(), 10, thumbs);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->size(), 4u);
  EXPECT_FALSE(store->GiveBack({"not-a-uuid"}).ok());
}

TEST_F(JobStoreTest, SurvivesServerRestart) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  Job a = MustCreate(*store, KeyFor(1));

  ASSERT_TRUE(server_->Restart().ok());
  // The old connection is dead; calls reconnect, re-prepare and retry.
  Job b = MustCreate(*store, KeyFor(2));
  EXPECT_NE(a.id, b.id);
  EXPECT_EQ(MustCreate(*store, KeyFor(1)).id, a.id);

  ASSERT_TRUE(server_->Restart().ok());
  std::optional<Job> claimed = MustClaim(*store);
  ASSERT_TRUE(claimed.has_value());
  EXPECT_EQ(claimed->id, a.id);

  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(store->UpdateProgress(a.id, 10, 20, std::nullopt).ok());
  ASSERT_TRUE(server_->Restart().ok());
  auto finished = store->Finish(a.id, v1::JOB_STATE_DONE, "ok", 0);
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->bytes_verified, 10u);

  ASSERT_TRUE(server_->Restart().ok());
  auto list = store->List(false, 10);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->size(), 2u);
}

TEST_F(JobStoreTest, UnavailableWhileServerIsDown) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(server_->Stop().ok());
  auto r = store->Create(KeyFor(1), v1::PRIORITY_NORMAL);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  ASSERT_TRUE(server_->Start().ok());
  EXPECT_TRUE(store->Create(KeyFor(1), v1::PRIORITY_NORMAL).ok());
}

// The prefetch limit: without a slot, claims leave prefetch jobs queued.
TEST_F(JobStoreTest, ClaimsBelowMinPriorityLeavePrefetchJobsQueued) {
  std::unique_ptr<JobStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  const Kind thumbs[] = {v1::SIDECAR_KIND_THUMB};
  ASSERT_TRUE(
      store->CreateMany({KeyFor(1), KeyFor(2)}, v1::PRIORITY_PREFETCH).ok());
  auto none = store->ClaimBatch(absl::Now(), 100, thumbs, v1::PRIORITY_NORMAL);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  auto one = store->ClaimNext(absl::Now(), {}, v1::PRIORITY_NORMAL);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_FALSE(one->has_value());
  // A normal job is still claimed by a batch that may not take prefetch.
  ASSERT_TRUE(store->Create(KeyFor(3), v1::PRIORITY_NORMAL).ok());
  auto normal =
      store->ClaimBatch(absl::Now(), 100, thumbs, v1::PRIORITY_NORMAL);
  ASSERT_TRUE(normal.ok()) << normal.status();
  ASSERT_EQ(normal->size(), 1u);
  EXPECT_EQ((*normal)[0].key, KeyFor(3));
  // With a slot, the prefetch jobs come.
  auto batch = store->ClaimBatch(absl::Now(), 100, thumbs);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->size(), 2u);
}

TEST_F(JobStoreTest, ListWaitingPrefetchPagesByIdAndSkipsOthers) {
  std::unique_ptr<JobStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<SidecarKey> keys;
  for (int i = 0; i < 5; ++i) keys.push_back(KeyFor(100 + i));
  ASSERT_TRUE(store->CreateMany(keys, v1::PRIORITY_PREFETCH).ok());
  ASSERT_TRUE(store->Create(KeyFor(200), v1::PRIORITY_NORMAL).ok());
  std::set<std::string> seen;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    auto jobs = store->ListWaitingPrefetch(after, 2);
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    if (jobs->empty()) break;
    for (const Job& j : *jobs) {
      EXPECT_EQ(j.priority, v1::PRIORITY_PREFETCH);
      EXPECT_TRUE(seen.insert(j.id).second) << "listed twice: " << j.id;
    }
    after = jobs->back().id;
  }
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(store->ListWaitingPrefetch("not-an-id", 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobStoreTest, PrefetchPolicyIsStoredAndReplaced) {
  std::unique_ptr<JobStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto none = store->LoadPrefetchPolicy();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  StoredPrefetchPolicy p{.rules = "thumb/grid@2x=eager,proxy=never",
                         .max_concurrent = 2,
                         .metered = true,
                         .prefetch_when_metered = false,
                         .background_bytes_per_sec = 123456};
  ASSERT_TRUE(store->SavePrefetchPolicy(p).ok());
  p.max_concurrent = 5;
  p.metered = false;
  ASSERT_TRUE(store->SavePrefetchPolicy(p).ok());
  // A second store on the same database (a restart) reads it back.
  std::unique_ptr<JobStore> again = OpenStore();
  ASSERT_NE(again, nullptr);
  auto got = again->LoadPrefetchPolicy();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->rules, p.rules);
  EXPECT_EQ((*got)->max_concurrent, 5);
  EXPECT_FALSE((*got)->metered);
  EXPECT_EQ((*got)->background_bytes_per_sec, 123456u);
  p.max_concurrent = 65;
  EXPECT_EQ(store->SavePrefetchPolicy(p).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sidecar::transfer
