#include "services/transfer/fetcher.h"

#include <algorithm>
#include <functional>
#include <optional>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/transport.h"
#include "services/transfer/job_log.h"
#include "services/transfer/piece_scheduler.h"

namespace sidecar::transfer {

struct Fetcher::Attempt {
  // Set by RunJob before the attempt's streams start, then only read; other
  // threads that find the attempt in running_ touch only `cancelled` and
  // what mu guards.
  Job job;
  uint64_t size = 0;
  Sha256Digest expected{};
  // The generator version of the bytes fetched (the first source's), which
  // the local copy is registered with.
  std::string generator_version;
  std::atomic<bool> cancelled{false};
  // Set with `cancelled` when the job's row says it ended (cancelled or
  // finished elsewhere): RunJob then deletes the partial data, as Cancel()
  // does, and records nothing.
  std::atomic<bool> ended_elsewhere{false};
  // Another failure to record progress was logged for this attempt.
  std::atomic<bool> progress_error_logged{false};
  std::atomic<uint64_t> verified{0};
  absl::Time started = absl::Now();
  // The store quota's count of this attempt's bytes: released once the
  // sidecar is registered (Commit), or when the attempt ends. RunJob's
  // thread only.
  Evictor::Admission admission;

  absl::Mutex mu;
  // PublishProgress's: several streams of a job publish (FetchMulti).
  absl::Time last_publish ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  uint64_t bytes_at_last_publish ABSL_GUARDED_BY(mu) = 0;
  double rate ABSL_GUARDED_BY(mu) = 0;
  // Streams in flight and when each last delivered bytes (watchdog).
  absl::flat_hash_map<grpc::ClientContext*, absl::Time> streams
      ABSL_GUARDED_BY(mu);
  std::vector<std::string> sources ABSL_GUARDED_BY(mu);
};

Fetcher::Fetcher(FetcherOptions options, JobStore* jobs, StoreWriter* store,
                 AvailabilityClient* availability, Bandwidth* bandwidth,
                 JobEvents* events, PeerChannels* channels)
    : options_(std::move(options)),
      jobs_(jobs),
      store_(store),
      availability_(availability),
      bandwidth_(bandwidth),
      events_(events),
      channels_(channels),
      batch_lane_(
          BatchLaneOptions{.kinds = options_.batch_kinds,
                           .max_jobs = options_.batch_max_jobs,
                           .max_item_bytes = options_.batch_max_item_bytes,
                           .stall_timeout = options_.stall_timeout,
                           .yield_after = options_.batch_yield_after,
                           .prefetch_gate = options_.prefetch_gate,
                           .metrics = options_.metrics},
          jobs, store, availability, bandwidth, events,
          BatchLane::Hooks{
              .stub = [this](const FetchSource& src,
                             v1::Priority p) { return PeerStub(src, p); },
              .idle = [this] { Idle(); },
              .wake = [this] { Wake(); },
              .status_of = [this](const Job& job) { return StatusOf(job); },
              .admit = options_.admit}) {}

absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>> Fetcher::PeerStub(
    const FetchSource& src, v1::Priority priority) {
  absl::StatusOr<Uuid> id = Uuid::Parse(src.device_id);
  if (!id.ok()) return id.status();
  const TrafficClass traffic =
      priority == v1::PRIORITY_INTERACTIVE ? TrafficClass::kInteractive
      : priority == v1::PRIORITY_PREFETCH  ? TrafficClass::kBackground
                                           : TrafficClass::kDefault;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> ch =
      channels_->Get(*id, src.transfer_address, traffic);
  if (!ch.ok()) return ch.status();
  absl::MutexLock lock(&mu_);
  auto& st = stubs_[absl::StrCat(src.device_id, "@", src.transfer_address, "#",
                                 static_cast<int>(traffic))];
  if (!st) st = v1::TransferPeer::NewStub(*ch);
  return st;
}

Fetcher::~Fetcher() { Stop(); }

void Fetcher::Start() {
  for (int i = 0; i < options_.workers; ++i) {
    threads_.emplace_back([this] { WorkerLoop(v1::PRIORITY_PREFETCH); });
  }
  for (int i = 0; i < options_.interactive_workers; ++i) {
    threads_.emplace_back([this] { WorkerLoop(v1::PRIORITY_INTERACTIVE); });
  }
  if (!options_.batch_kinds.empty() && options_.batch_max_jobs > 0) {
    for (int i = 0; i < options_.batch_lanes; ++i) {
      threads_.emplace_back([this] { batch_lane_.Loop(); });
    }
  }
  threads_.emplace_back([this] { WatchdogLoop(); });
}

void Fetcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    bandwidth_->Cancel();  // nothing waits for bandwidth any more
    for (auto& [id, a] : running_) {
      absl::MutexLock alock(&a->mu);
      for (auto& [ctx, t] : a->streams) ctx->TryCancel();
    }
    batch_lane_.Stop();
    wake_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

void Fetcher::Wake() {
  absl::MutexLock lock(&mu_);
  ++wake_seq_;
  wake_.SignalAll();
}

absl::Duration Fetcher::Backoff(int attempts) {
  thread_local absl::BitGen gen;
  absl::Duration d = options_.initial_backoff;
  for (int i = 1; i < attempts && d < options_.max_backoff; ++i) d *= 2;
  d = std::min(d, options_.max_backoff);
  return d * absl::Uniform(gen, 0.5, 1.5);
}

void Fetcher::WorkerLoop(v1::Priority min_priority) {
  // New small jobs are the batch lane's, except interactive ones for the
  // interactive workers: those start at once, whatever the lanes are doing.
  const bool leave_small =
      options_.batch_max_jobs > 0 && min_priority != v1::PRIORITY_INTERACTIVE;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    // Prefetch jobs only with a slot of the gate (the limit, the metered
    // pause); without one they stay queued for a worker that has one.
    PrefetchGate* const gate = options_.prefetch_gate;
    bool slot = false;
    v1::Priority min = min_priority;
    if (min == v1::PRIORITY_PREFETCH && gate != nullptr) {
      slot = gate->TryAcquire();
      if (!slot) min = v1::PRIORITY_NORMAL;
    }
    absl::StatusOr<std::optional<Job>> job = jobs_->ClaimNext(
        absl::Now(),
        leave_small ? absl::Span<const Kind>(options_.batch_kinds)
                    : absl::Span<const Kind>(),
        min);
    if (slot && !(job.ok() && job->has_value() &&
                  (**job).priority == v1::PRIORITY_PREFETCH)) {
      if (gate->Release()) Wake();  // a worker refused a slot may claim
      slot = false;
    }
    if (job.ok() && job->has_value()) {
      RunJob(std::move(**job));
      if (slot && gate->Release()) Wake();
      continue;
    }
    if (!job.ok()) SC_LOG(WARNING) << "claiming a job: " << job.status();
    Idle();
  }
}

void Fetcher::Idle() {
  // A bound of one second also covers jobs created by other processes.
  absl::Time until = absl::Now() + absl::Seconds(1);
  if (absl::StatusOr<std::optional<absl::Time>> next = jobs_->NextWakeup();
      next.ok() && next->has_value()) {
    until = std::min(until, **next);
  }
  absl::MutexLock lock(&mu_);
  const uint64_t seen = wake_seq_;
  while (!stopping_ && wake_seq_ == seen && absl::Now() < until) {
    wake_.WaitWithDeadline(&mu_, until);
  }
}

void Fetcher::WatchdogLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    wake_.WaitWithTimeout(&mu_, absl::Milliseconds(250));
    absl::Time now = absl::Now();
    batch_lane_.CancelStalled(now);
    for (auto& [id, a] : running_) {
      const bool paused = bandwidth_->Yielding(a->job.priority);
      absl::MutexLock alock(&a->mu);
      for (auto& [ctx, last] : a->streams) {
        if (paused && last != absl::InfiniteFuture()) {
          last = now;  // yielding to foreground work, not stalled
          continue;
        }
        if (now - last > options_.stall_timeout) {
          SC_LOG(WARNING) << "job " << id << ": source stalled for "
                          << options_.stall_timeout << ", cancelling";
          ctx->TryCancel();
          last = absl::InfiniteFuture();  // cancel once
        }
      }
    }
  }
}

v1::JobStatus Fetcher::StatusOf(const Job& job) const {
  v1::JobStatus s;
  s.set_job_id(job.id);
  KeyToProto(job.key, s.mutable_key());
  s.set_state(job.state);
  s.set_priority(job.priority);
  s.set_size(job.expected_size.value_or(0));
  s.set_bytes_verified(job.bytes_verified);
  s.set_attempts(job.attempts);
  s.set_last_error(job.last_error);
  s.set_reason(job.reason);
  s.set_error_code(job.error_code);
  if (job.state == v1::JOB_STATE_DONE) {
    s.set_local_path(store_->FinalPath(job.key));
  }
  absl::MutexLock lock(&mu_);
  if (auto it = progress_.find(job.id); it != progress_.end()) {
    s.set_bytes_verified(
        std::max<uint64_t>(s.bytes_verified(), it->second.bytes_verified));
    s.set_bytes_per_sec(static_cast<uint64_t>(it->second.rate));
    for (const auto& src : it->second.sources) s.add_current_sources(src);
  }
  return s;
}

void Fetcher::PublishProgress(Attempt* a, bool force) {
  absl::Time now = absl::Now();
  uint64_t v = a->verified.load();
  std::vector<std::string> sources;
  double rate;
  {
    absl::MutexLock alock(&a->mu);
    if (!force && now - a->last_publish < options_.progress_interval) return;
    double dt = absl::ToDoubleSeconds(now - a->last_publish);
    if (a->last_publish != absl::InfinitePast() && dt > 0) {
      // The verified count goes back when a resume keeps fewer bytes than
      // the job row said (or a bad source's bytes are dropped): no rate then.
      a->rate = v >= a->bytes_at_last_publish
                    ? static_cast<double>(v - a->bytes_at_last_publish) / dt
                    : 0;
    }
    a->last_publish = now;
    a->bytes_at_last_publish = v;
    rate = a->rate;
    sources = a->sources;
  }
  Job j = a->job;
  j.state = v1::JOB_STATE_RUNNING;
  j.bytes_verified = v;
  j.expected_size = a->size;
  {
    absl::MutexLock lock(&mu_);
    progress_[j.id] = {v, rate, sources};
  }
  events_->Publish(StatusOf(j));
}

void Fetcher::RunJob(Job job) {
  // The job's id is the fetch's request id: in this service's log lines of
  // it, and in the availability service's, which its calls carry it to.
  ScopedLogFields log_fields({{"request_id", job.id}});
  Attempt a;
  a.job = job;
  a.verified = job.bytes_verified;
  {
    absl::MutexLock lock(&mu_);
    running_[job.id] = &a;
  }
  auto finish = [&](v1::JobState state, const std::string& reason,
                    absl::StatusCode code) {
    absl::Status s =
        jobs_->Finish(job.id, state, reason, static_cast<int>(code)).status();
    if (!s.ok()) SC_LOG(WARNING) << "job " << job.id << ": " << s;
    if (s.ok()) CountEnded(job, state);
    if (state != v1::JOB_STATE_DONE) {
      WarnIfFailed(store_->Discard(job.id), job.id,
                   "cannot delete its partial data");
    }
  };

  absl::Status result;
  std::string done_reason;
  absl::StatusOr<Resolution> r =
      availability_->Resolve(job.key, v1::RESOLVE_MODE_FETCH_ONLY);
  if (!r.ok()) {
    result = r.status();
  } else if (r->outcome == v1::ResolveResponse::OUTCOME_LOCAL &&
             !(job.priority == v1::PRIORITY_PREFETCH && NeedsFetch(*r))) {
    // A stale copy is refreshed by prefetch only: a request is served by
    // the copy here.
    finish(v1::JOB_STATE_DONE, "already present locally",
           absl::StatusCode::kOk);
    result = absl::OkStatus();
    done_reason = "local";
  } else if (r->sources.empty()) {
    result = absl::UnavailableError(
        absl::StrCat("no online device has it (", r->reason, ")"));
  } else {
    // Holders must agree on the content; the best-ranked one decides and
    // holders of other bytes are left out, so a fetch never mixes bytes of
    // different digests. Resolve ranks holders of the newest generator
    // version first and keeps holders of the same bytes together; when
    // holders of one version disagree (a conflict, which Resolve reports),
    // the first source's bytes are fetched.
    std::vector<FetchSource> sources;
    for (const FetchSource& s : r->sources) {
      if (s.sha256 == r->sources[0].sha256 && s.size == r->sources[0].size) {
        sources.push_back(s);
      }
    }
    if (!r->conflicting_versions.empty()) {
      SC_LOG(WARNING) << "holders of " << KeyDebugString(job.key)
                      << " disagree on the bytes of generator version(s) "
                      << absl::StrJoin(r->conflicting_versions, ", ")
                      << "; fetching those of " << SourceName(sources[0]);
    }
    a.size = sources[0].size;
    a.expected = sources[0].sha256;
    a.generator_version = sources[0].generator_version;
    if (job.expected_sha256.has_value() && *job.expected_sha256 != a.expected) {
      a.verified = 0;  // a different version than the bytes we kept
    }
    absl::Status space = store_->CheckSpace(
        a.size - std::min<uint64_t>(a.size, a.verified.load()),
        options_.min_free_bytes);
    if (space.ok() && options_.admit) {
      absl::StatusOr<Evictor::Admission> admitted = options_.admit(
          job, a.size - std::min<uint64_t>(a.size, a.verified.load()));
      if (admitted.ok()) {
        a.admission = std::move(*admitted);
      } else {
        space = admitted.status();
      }
    }
    if (!space.ok()) {
      finish(v1::JOB_STATE_GENERATE, std::string(space.message()),
             space.code());
      done_reason = "space";
      result = absl::OkStatus();
    } else if (!RecordProgress(&a, a.verified.load())) {
      result = absl::CancelledError("the job ended meanwhile");
    } else {
      PublishProgress(&a, true);
      // Lower priorities yield to this attempt while it fetches.
      Bandwidth::Lease lease = bandwidth_->Begin(job.priority);
      bool multi = a.size >= options_.multi_source_min_bytes &&
                   sources.size() >= 2 && options_.max_sources >= 2;
      result = multi ? FetchMulti(&a, sources) : FetchSingle(&a, sources);
      if (result.ok()) done_reason = "fetched";
    }
  }

  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    running_.erase(job.id);
    progress_.erase(job.id);
    stopping = stopping_;
  }
  if (a.cancelled) {
    // Cancel() records the final state; a job that ended elsewhere has one.
    if (a.ended_elsewhere) {
      WarnIfFailed(store_->Discard(job.id), job.id,
                   "cannot delete its partial data");
    }
  } else if (result.ok()) {
    if (done_reason == "fetched") {
      // Finished in Commit.
    }
  } else if (stopping) {
    // Resumable: back to the queue at the next start.
    WarnIfFailed(
        jobs_->ScheduleRetry(job.id, absl::Now(), "interrupted by shutdown"),
        job.id, "cannot schedule its retry");
  } else if (static_cast<int>(job.attempts) >= options_.max_attempts) {
    finish(v1::JOB_STATE_GENERATE,
           absl::StrCat(
               "fetch failed ", job.attempts,
               " times; generate locally. Last error: ", result.message()),
           result.code());
  } else {
    absl::Time at = absl::Now() + Backoff(job.attempts);
    WarnIfFailed(
        jobs_->ScheduleRetry(job.id, at, std::string(result.message())), job.id,
        "cannot schedule its retry");
  }
  if (absl::StatusOr<std::optional<Job>> j = jobs_->Get(job.id);
      j.ok() && j->has_value()) {
    events_->Publish(StatusOf(**j));
  }
}

absl::Status Fetcher::FetchSingle(Attempt* a,
                                  const std::vector<FetchSource>& sources) {
  absl::Status last = absl::UnavailableError("no source tried");
  for (const FetchSource& src : sources) {
    if (a->cancelled) return absl::CancelledError("cancelled");
    WarnIfFailed(jobs_->AddSourceTried(a->job.id, src.device_id), a->job.id,
                 "cannot record the source tried");
    {
      absl::MutexLock alock(&a->mu);
      a->sources = {src.device_id};
    }
    uint64_t resume = a->verified.load();
    absl::StatusOr<PartFile> opened =
        store_->OpenPart(a->job.id, a->size, resume);
    if (!opened.ok()) return opened.status();
    auto part = std::make_unique<PartFile>(std::move(*opened));
    Sha256 hasher = part->TakePrefixHash();
    resume = part->resumed_bytes();
    a->verified = resume;
    SC_LOG(INFO) << "job " << a->job.id << ": reading from " << SourceName(src)
                 << (resume > 0 ? " from byte " : " at byte ") << resume
                 << " of " << a->size;
    RangeReader reader = MakeReader(a, src);
    absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>> stub =
        PeerStub(src, a->job.priority);
    absl::Status s =
        stub.ok() ? reader.ReadInOrder(stub->get(), resume, a->size - resume,
                                       part.get(), &hasher)
                  : stub.status();
    // Progress is recorded only once it is durable: a resume trusts it.
    absl::Status synced = part->Sync();
    WarnIfFailed(synced, a->job.id, "cannot sync its partial data");
    const bool go_on = !synced.ok() || RecordProgress(a, a->verified.load());
    availability_->ReportTransfer(src.device_id, reader.received(),
                                  absl::Now() - start, s.ok(),
                                  reader.corrupt());
    if (reader.corrupt()) {
      WarnIfFailed(jobs_->AddDemoted(a->job.id, src.device_id), a->job.id,
                   "cannot demote the source");
    }
    if (!go_on) return absl::CancelledError("the job ended meanwhile");
    if (s.ok()) {
      Sha256Digest digest = hasher.Finish();
      if (digest == a->expected) {
        part.reset();
        return Commit(a, src, &digest);
      }
      // Every chunk matched its checksum yet the whole does not: the
      // source holds other bytes than it advertises.
      availability_->ReportTransfer(src.device_id, 0, absl::ZeroDuration(),
                                    false, /*corrupt=*/true);
      WarnIfFailed(jobs_->AddDemoted(a->job.id, src.device_id), a->job.id,
                   "cannot demote the source");
      s = absl::DataLossError(absl::StrCat(
          SourceName(src), " sent bytes whose SHA-256 ", DigestToHex(digest),
          " differs from the advertised ", DigestToHex(a->expected)));
      part.reset();
      WarnIfFailed(store_->Discard(a->job.id), a->job.id,
                   "cannot delete its partial data");
      a->verified = 0;
      if (!RecordProgress(a, 0)) {
        return absl::CancelledError("the job ended meanwhile");
      }
    }
    SC_LOG(WARNING) << "job " << a->job.id << " from " << SourceName(src)
                    << ": " << s;
    last = absl::Status(s.code(),
                        absl::StrCat(SourceName(src), ": ", s.message()));
    if (s.code() == absl::StatusCode::kCancelled && a->cancelled) return s;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return last;
    }
  }
  return last;
}

absl::Status Fetcher::FetchMulti(Attempt* a,
                                 const std::vector<FetchSource>& all) {
  std::vector<FetchSource> sources(
      all.begin(),
      all.begin() + std::min<size_t>(all.size(), options_.max_sources));
  const uint64_t piece = options_.piece_bytes;
  // Resume: pieces of the verified prefix are kept.
  absl::StatusOr<PartFile> opened =
      store_->OpenPart(a->job.id, a->size, a->verified.load() / piece * piece);
  if (!opened.ok()) return opened.status();
  auto part = std::make_unique<PartFile>(std::move(*opened));
  PieceScheduler scheduler(a->size, piece, part->resumed_bytes());

  // The worker whose piece advanced the verified prefix makes it durable,
  // after the scheduler's lock is released, so that other sources go on
  // taking and finishing pieces meanwhile. Two workers' syncs may end in
  // either order: the job row (and the live count) only ever take a larger
  // prefix than they have.
  struct Published {
    absl::Mutex mu;
    uint64_t prefix ABSL_GUARDED_BY(mu);
  } published{.prefix = a->verified.load()};
  auto checkpoint = [&](uint64_t prefix) {
    // Every piece of `prefix` was written before it was reported finished,
    // so this sync covers all of it.
    // Not durable: no checkpoint (the commit's own sync reports the error).
    if (!part->Sync().ok()) return;
    absl::MutexLock lock(&published.mu);
    if (prefix <= published.prefix) return;
    published.prefix = prefix;
    a->verified = prefix;
    // A job that ended elsewhere stops the attempt (a->cancelled).
    RecordProgress(a, prefix);
  };
  // The error of the source that failed last.
  struct LastError {
    absl::Mutex mu;
    absl::Status status ABSL_GUARDED_BY(mu);
  } last;
  {
    absl::MutexLock alock(&a->mu);
    a->sources.clear();
    for (const auto& s : sources) a->sources.push_back(s.device_id);
  }
  std::vector<std::thread> workers;
  for (const FetchSource& src : sources) {
    WarnIfFailed(jobs_->AddSourceTried(a->job.id, src.device_id), a->job.id,
                 "cannot record the source tried");
    workers.emplace_back([&, src] {
      RangeReader reader = MakeReader(a, src);
      absl::Time start = absl::Now();
      absl::Status s;
      while (!a->cancelled) {
        std::optional<PieceScheduler::Piece> p = scheduler.Next();
        if (!p.has_value()) break;  // nothing left to help with
        if (p->duplicate) {
          SC_LOG(INFO) << "job " << a->job.id << ": " << SourceName(src)
                       << " also fetches piece " << p->index
                       << ", still in flight from a slower source";
        }
        absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>> stub =
            PeerStub(src, a->job.priority);
        s = stub.ok()
                ? reader.ReadPiece(stub->get(), p->offset, p->length,
                                   part.get(), scheduler.abandon_flag(p->index))
                : stub.status();
        PieceScheduler::Outcome o = scheduler.Finished(p->index, s.ok());
        if (o.result == PieceScheduler::Result::kAlreadyDone) {
          s = absl::OkStatus();  // the other copy arrived first
          continue;
        }
        if (!s.ok()) {
          // The others take over its pieces; say why this one stopped.
          SC_LOG(WARNING) << "job " << a->job.id << ": " << SourceName(src)
                          << " stops helping: " << s;
          absl::MutexLock l(&last.mu);
          last.status = absl::Status(
              s.code(), absl::StrCat(SourceName(src), ": ", s.message()));
          break;
        }
        if (o.advanced_prefix.has_value()) checkpoint(*o.advanced_prefix);
      }
      availability_->ReportTransfer(src.device_id, reader.received(),
                                    absl::Now() - start, s.ok(),
                                    reader.corrupt());
    });
  }
  for (std::thread& t : workers) t.join();
  // Progress is recorded only once it is durable: a resume trusts it.
  absl::Status synced = part->Sync();
  WarnIfFailed(synced, a->job.id, "cannot sync its partial data");
  const bool complete = scheduler.Complete();
  a->verified = scheduler.VerifiedPrefix();
  if ((synced.ok() && !RecordProgress(a, a->verified.load())) || a->cancelled) {
    return absl::CancelledError("cancelled");
  }
  if (!complete) {
    absl::MutexLock l(&last.mu);
    return last.status.ok() ? absl::UnavailableError("incomplete")
                            : last.status;
  }
  part.reset();
  absl::Status c = Commit(a, sources[0], nullptr);
  if (c.code() != absl::StatusCode::kDataLoss) return c;
  // Pieces from several sources do not add up to the advertised file, and
  // which source lied cannot be told: fetch whole files one source at a
  // time, where each is checked on its own.
  SC_LOG(WARNING) << "job " << a->job.id << ": " << c
                  << "; retrying one source at a time";
  WarnIfFailed(store_->Discard(a->job.id), a->job.id,
               "cannot delete its partial data");
  a->verified = 0;
  return FetchSingle(a, sources);
}

RangeReader::Callbacks Fetcher::StreamCallbacks(Attempt* a) {
  RangeReader::Callbacks cb;
  cb.stream_started = [a](grpc::ClientContext* ctx) {
    absl::MutexLock alock(&a->mu);
    a->streams[ctx] = absl::Now();
    // StopAttempt sets `cancelled` before it cancels the streams it finds
    // under a->mu: a stream it missed sees the flag here.
    if (a->cancelled) ctx->TryCancel();
  };
  cb.stream_alive = [a](grpc::ClientContext* ctx) {
    absl::MutexLock alock(&a->mu);
    a->streams[ctx] = absl::Now();
  };
  cb.stream_ended = [a](grpc::ClientContext* ctx) {
    absl::MutexLock alock(&a->mu);
    a->streams.erase(ctx);
  };
  cb.verified = [a](uint64_t n) { a->verified = n; };
  // A job that ended elsewhere cancels the stream.
  cb.durable = [this, a](uint64_t synced) { RecordProgress(a, synced); };
  cb.chunk_written = [this, a] { PublishProgress(a, false); };
  return cb;
}

RangeReader Fetcher::MakeReader(Attempt* a, const FetchSource& src) {
  return RangeReader(RangeTarget{a->job.key, a->size, a->expected},
                     SourceName(src), options_.chunk_bytes, bandwidth_,
                     a->job.priority, StreamCallbacks(a));
}

absl::Status Fetcher::Commit(Attempt* a, const FetchSource& from,
                             const Sha256Digest* streamed_digest) {
  // A cancel (or a job that ended elsewhere) that came while the last bytes
  // arrived: nothing is committed.
  if (a->cancelled) return absl::CancelledError("cancelled");
  SC_RETURN_IF_ERROR(
      streamed_digest != nullptr
          ? store_
                ->CommitVerified(a->job.id, a->job.key, *streamed_digest,
                                 a->expected, a->size)
                .status()
          : store_->Commit(a->job.id, a->job.key, a->expected).status());
  // Registered READY so it is advertised: this device becomes a source.
  absl::Status reg;
  for (int i = 0; i < 3; ++i) {
    reg = availability_->RegisterReady(a->job.key, a->size, a->expected,
                                       a->generator_version);
    if (reg.ok()) break;
    absl::SleepFor(absl::Milliseconds(200) * (i + 1));
  }
  // A failed registration may still have been applied: its admission is
  // released when RunJob ends.
  if (!reg.ok()) return reg;
  a->admission.Release();  // a usage read from now on includes the sidecar
  a->verified = a->size;
  // Committed and registered either way; a job that ended meanwhile keeps
  // the state it ended in.
  if (!RecordProgress(a, a->size)) return absl::OkStatus();
  absl::Status f =
      jobs_
          ->Finish(a->job.id, v1::JOB_STATE_DONE,
                   absl::StrCat("fetched from ", SourceName(from), " in ",
                                absl::FormatDuration(absl::Now() - a->started)),
                   0)
          .status();
  if (!f.ok()) SC_LOG(WARNING) << "job " << a->job.id << ": " << f;
  if (f.ok()) CountEnded(a->job, v1::JOB_STATE_DONE);
  return absl::OkStatus();
}

void Fetcher::CountEnded(const Job& job, v1::JobState state) {
  if (options_.metrics == nullptr) return;
  options_.metrics->JobEnded(job.priority, state, absl::Now() - job.created_at);
}

void Fetcher::StopAttempt(Attempt* a) {
  a->cancelled = true;
  absl::MutexLock alock(&a->mu);
  for (auto& [ctx, t] : a->streams) ctx->TryCancel();
}

bool Fetcher::RecordProgress(Attempt* a, uint64_t verified) {
  absl::Status s =
      jobs_->UpdateProgress(a->job.id, verified, a->size, a->expected);
  if (s.ok()) return true;
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    // A Cancel() here stopped the attempt first and deletes its data
    // itself; anything else ended the job behind the fetcher's back.
    if (!a->cancelled.load() && !a->ended_elsewhere.exchange(true)) {
      SC_LOG(INFO) << "job " << a->job.id << ": " << s.message()
                   << "; stopping its fetch";
    }
    StopAttempt(a);
    return false;
  }
  if (!a->progress_error_logged.exchange(true)) {
    SC_LOG(WARNING) << "job " << a->job.id << ": cannot record progress (" << s
                    << "); the fetch goes on";
  }
  return true;
}

absl::StatusOr<v1::JobState> Fetcher::Cancel(const std::string& job_id) {
  absl::StatusOr<std::optional<Job>> job = jobs_->Get(job_id);
  if (!job.ok()) return job.status();
  if (!job->has_value()) {
    return absl::NotFoundError(absl::StrCat("no job ", job_id));
  }
  if (IsFinalState((*job)->state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended (",
                     v1::JobState_Name((*job)->state), ")"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (auto it = running_.find(job_id); it != running_.end()) {
      StopAttempt(it->second);
    }
  }
  SC_RETURN_IF_ERROR(
      jobs_->Finish(job_id, v1::JOB_STATE_CANCELLED, "cancelled by request", 1)
          .status());
  CountEnded(**job, v1::JOB_STATE_CANCELLED);
  WarnIfFailed(store_->Discard(job_id), job_id,
               "cannot delete its partial data");
  if (absl::StatusOr<std::optional<Job>> j = jobs_->Get(job_id);
      j.ok() && j->has_value()) {
    events_->Publish(StatusOf(**j));
  }
  return v1::JOB_STATE_CANCELLED;
}

}  // namespace sidecar::transfer
