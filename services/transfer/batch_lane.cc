#include "services/transfer/batch_lane.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/transport.h"
#include "common/uuid.h"
#include "services/transfer/job_log.h"

namespace sidecar::transfer {

// One batch as it goes through the lane. Jobs are named by their index in
// `jobs`.
struct BatchLane::Batch {
  std::vector<Job> jobs;
  v1::Priority priority = v1::PRIORITY_NORMAL;  // the jobs'

  absl::Time start;
  // ResolveMany's answers, one per job, or why there are none.
  absl::StatusOr<std::vector<Resolution>> res;
  // Jobs the lane gives back to the one-by-one path, with why.
  std::vector<std::pair<size_t, std::string>> fallback;
  // Jobs not received when the batch yielded to foreground work: back to
  // the queue, unattempted.
  std::vector<std::string> yielded;
  // Ids of jobs whose sidecar is already on this device.
  std::vector<std::string> already_local;
  // Items written as part files, the index of each one's job, and the
  // name of each job's source (once written).
  std::vector<StoreWriter::BatchItem> written;
  std::vector<size_t> written_index;
  std::vector<std::string> from_name;
  // Ids of jobs finished DONE with fetched bytes.
  std::vector<std::string> done;
  // The store quota's admissions of the jobs fetched, released once their
  // sidecars are registered (Install), or when the batch ends.
  std::vector<Evictor::Admission> admitted;
  // When each stage ended, for the log.
  absl::Time resolved, received_all, installed, registered;
};

BatchLane::BatchLane(BatchLaneOptions options, JobStore* jobs,
                     StoreWriter* store, AvailabilityClient* availability,
                     Bandwidth* bandwidth, JobEvents* events, Hooks hooks)
    : options_(std::move(options)),
      jobs_(jobs),
      store_(store),
      availability_(availability),
      bandwidth_(bandwidth),
      events_(events),
      hooks_(std::move(hooks)) {}

void BatchLane::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
    }
    PrefetchGate* const gate = options_.prefetch_gate;
    const bool slot = gate == nullptr || gate->TryAcquire();
    absl::StatusOr<std::vector<Job>> jobs =
        jobs_->ClaimBatch(absl::Now(), options_.max_jobs, options_.kinds,
                          slot ? v1::PRIORITY_PREFETCH : v1::PRIORITY_NORMAL);
    // A batch holds one priority: the slot is kept for a prefetch batch.
    const bool keep = slot && gate != nullptr && jobs.ok() && !jobs->empty() &&
                      jobs->front().priority == v1::PRIORITY_PREFETCH;
    if (slot && gate != nullptr && !keep && gate->Release()) hooks_.wake();
    if (jobs.ok() && !jobs->empty()) {
      Run(std::move(*jobs));
      if (keep && gate->Release()) hooks_.wake();
      continue;
    }
    if (!jobs.ok()) SC_LOG(WARNING) << "claiming a batch: " << jobs.status();
    hooks_.idle();
  }
}

void BatchLane::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  stop_requested_ = true;
  // Unfinished batch items go back to their jobs, which resume at the
  // next start.
  for (auto& [ctx, t] : streams_) ctx->TryCancel();
}

void BatchLane::CancelStalled(absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (auto& [ctx, stream] : streams_) {
    absl::Time& last = stream.last;
    if (last != absl::InfiniteFuture() &&
        bandwidth_->Yielding(stream.priority)) {
      last = now;  // paused, not stalled
      continue;
    }
    if (now - last > options_.stall_timeout) {
      SC_LOG(WARNING) << "batch: source stalled for " << options_.stall_timeout
                      << ", cancelling; its items are retried one by one";
      ctx->TryCancel();
      last = absl::InfiniteFuture();  // cancel once
    }
  }
}

void BatchLane::StreamStarted(grpc::ClientContext* ctx, absl::Time t0,
                              v1::Priority priority) {
  absl::MutexLock lock(&mu_);
  if (stopped_) ctx->TryCancel();
  streams_[ctx] = Stream{t0, priority};
}

void BatchLane::StreamAlive(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(ctx);
  // InfiniteFuture: CancelStalled already cancelled it.
  if (it->second.last != absl::InfiniteFuture()) it->second.last = absl::Now();
}

void BatchLane::StreamEnded(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  streams_.erase(ctx);
}

void BatchLane::Run(std::vector<Job> jobs) {
  Batch b;
  b.start = absl::Now();
  b.jobs = std::move(jobs);
  if (!b.jobs.empty()) b.priority = b.jobs[0].priority;
  // The batch's request id, on its log lines and its calls: its job's id
  // when it holds one (as when a worker fetches it), else its own, logged
  // with the jobs it stands for.
  const std::string request_id =
      b.jobs.size() == 1 ? b.jobs[0].id : "batch-" + Uuid::Random().ToString();
  ScopedLogFields log_fields({{"request_id", request_id}});
  if (b.jobs.size() > 1 && MinLogLevel() <= LogLevel::kDebug) {
    std::string ids;
    for (size_t i = 0; i < b.jobs.size() && i < 10; ++i) {
      absl::StrAppend(&ids, i ? ", " : "", b.jobs[i].id);
    }
    SC_LOG(DEBUG) << "batch of " << b.jobs.size() << " jobs: " << ids
                  << (b.jobs.size() > 10 ? ", ..." : "");
  }
  // Lower priorities yield to this batch while it runs.
  Bandwidth::Lease lease = bandwidth_->Begin(b.priority);
  absl::flat_hash_map<std::string, std::pair<FetchSource, Members>> groups =
      Resolve(b);
  b.resolved = absl::Now();
  b.from_name.resize(b.jobs.size());
  for (const auto& [address, group] : groups) {
    ReadFrom(b, group.first, group.second);
  }
  Install(b);
  Conclude(b);
}

absl::flat_hash_map<std::string, std::pair<FetchSource, BatchLane::Members>>
BatchLane::Resolve(Batch& b) {
  std::vector<SidecarKey> keys;
  keys.reserve(b.jobs.size());
  for (const Job& j : b.jobs) keys.push_back(j.key);
  b.res = availability_->ResolveMany(keys, v1::RESOLVE_MODE_FETCH_ONLY);
  absl::flat_hash_map<std::string, std::pair<FetchSource, Members>> by_source;
  if (!b.res.ok()) {
    for (size_t i = 0; i < b.jobs.size(); ++i) {
      b.fallback.push_back({i, std::string(b.res.status().message())});
    }
    return by_source;
  }
  // Group by the best source.
  for (size_t i = 0; i < b.jobs.size(); ++i) {
    const Resolution& r = (*b.res)[i];
    if (r.outcome == v1::ResolveResponse::OUTCOME_LOCAL &&
        !(b.priority == v1::PRIORITY_PREFETCH && NeedsFetch(r))) {
      b.already_local.push_back(b.jobs[i].id);
    } else if (r.sources.empty()) {
      b.fallback.push_back({i, "no online device has it"});
    } else if (r.sources[0].size > options_.max_item_bytes) {
      b.fallback.push_back({i, "large: fetched on its own"});
    } else if (absl::StatusOr<Evictor::Admission> q =
                   hooks_.admit ? hooks_.admit(b.jobs[i], r.sources[0].size)
                                : Evictor::Admission();
               !q.ok()) {
      b.fallback.push_back({i, std::string(q.status().message())});
    } else {
      b.admitted.push_back(std::move(*q));
      auto& [src, members] = by_source[r.sources[0].transfer_address];
      if (members.empty()) src = r.sources[0];  // the first one named
      members.push_back(i);
    }
  }
  return by_source;
}

void BatchLane::ReadFrom(Batch& b, const FetchSource& src,
                         const Members& members) {
  absl::StatusOr<std::shared_ptr<v1::TransferPeer::Stub>> stub =
      hooks_.stub(src, b.priority);
  if (!stub.ok()) {
    SC_LOG(WARNING) << "batch: " << stub.status();
    for (size_t i : members) {
      b.fallback.push_back({i, std::string(stub.status().message())});
    }
    return;  // its jobs go back to the workers, one by one
  }
  v1::BatchReadRequest req;
  uint64_t expected_bytes = 0;
  for (size_t i : members) {
    KeyToProto(b.jobs[i].key, req.add_keys());
    expected_bytes += (*b.res)[i].sources[0].size;
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(30) +
                        absl::Seconds(static_cast<double>(expected_bytes) /
                                      (256 << 10)));
  absl::Time t0 = absl::Now();
  StreamStarted(&ctx, t0, b.priority);
  std::unique_ptr<grpc::ClientReader<v1::BatchReadResponse>> reader =
      (*stub)->BatchRead(&ctx, req);
  std::vector<char> seen(members.size(), 0);
  uint64_t received = 0;
  bool corrupt = false;
  v1::BatchReadResponse batch;
  bool yielded = false;
  while (reader->Read(&batch)) {
    StreamAlive(&ctx);
    for (const v1::BatchReadItem& item : batch.items()) {
      // On Stop the rest of the message is left to the jobs' next start,
      // like the items not received yet.
      if (stop_requested_.load(std::memory_order_relaxed)) break;
      if (item.index() >= members.size() || seen[item.index()]) continue;
      // Paused too long for foreground work: keep what came, give back
      // the rest.
      if (!yielded && !bandwidth_->WaitTurn(b.priority, options_.yield_after)) {
        yielded = true;
        ctx.TryCancel();
      }
      seen[item.index()] = 1;
      TakeItem(b, src, members[item.index()], item, !yielded, &received,
               &corrupt);
      // Waiting for the bandwidth caps is not a stall.
      StreamAlive(&ctx);
    }
    if (yielded) break;
  }
  grpc::Status st = reader->Finish();
  StreamEnded(&ctx);
  for (size_t k = 0; k < members.size(); ++k) {
    if (!seen[k] && yielded) {
      b.yielded.push_back(b.jobs[members[k]].id);
    } else if (!seen[k]) {
      b.fallback.push_back(
          {members[k], absl::StrCat(SourceName(src), ": ",
                                    st.ok() ? "item missing from the batch"
                                            : st.error_message())});
    }
  }
  availability_->ReportTransfer(src.device_id, received, absl::Now() - t0,
                                st.ok() && !corrupt, corrupt);
}

void BatchLane::TakeItem(Batch& b, const FetchSource& src, size_t i,
                         const v1::BatchReadItem& item, bool charge,
                         uint64_t* received, bool* corrupt) {
  const Job& job = b.jobs[i];
  const FetchSource& want = (*b.res)[i].sources[0];
  if (item.status_code() != 0) {
    b.fallback.push_back(
        {i, absl::StrCat(SourceName(src), ": ", item.status_message())});
    return;
  }
  const std::string& data = item.data();
  if (data.size() != want.size || Sha256Of(data) != want.sha256) {
    *corrupt = true;
    WarnIfFailed(jobs_->AddDemoted(job.id, src.device_id), job.id,
                 "cannot demote the source");
    b.fallback.push_back({i, absl::StrCat(SourceName(src),
                                          " sent bytes that fail the "
                                          "advertised SHA-256")});
    return;
  }
  if (charge) bandwidth_->Take(data.size(), b.priority);
  *received += data.size();
  if (absl::Status w = store_->WriteWholePart(job.id, data); !w.ok()) {
    b.fallback.push_back({i, std::string(w.message())});
    return;
  }
  b.written.push_back({job.id, job.key, data.size()});
  b.written_index.push_back(i);
  b.from_name[i] = SourceName(src);
}

void BatchLane::Install(Batch& b) {
  b.received_all = absl::Now();
  std::vector<absl::Status> committed = store_->CommitBatch(b.written);
  b.installed = absl::Now();
  std::vector<AvailabilityClient::ReadyItem> ready;
  std::vector<size_t> ready_index;
  for (size_t k = 0; k < b.written.size(); ++k) {
    size_t i = b.written_index[k];
    if (!committed[k].ok()) {
      b.fallback.push_back({i, std::string(committed[k].message())});
      continue;
    }
    const FetchSource& s = (*b.res)[i].sources[0];
    // Registered with the generator version of the bytes fetched.
    ready.push_back({b.jobs[i].key, s.size, s.sha256, s.generator_version});
    ready_index.push_back(i);
  }
  absl::Status reg = availability_->RegisterReadyMany(ready);
  b.registered = absl::Now();
  // Registered, or never will be by this batch (items set aside are
  // admitted again when the workers retry them).
  b.admitted.clear();
  FinishDone(b, ready, ready_index, reg);
}

void BatchLane::FinishDone(
    Batch& b, const std::vector<AvailabilityClient::ReadyItem>& ready,
    const std::vector<size_t>& ready_index, const absl::Status& reg) {
  // Finished per source, so each job says where it came from.
  struct Done {
    std::vector<std::string> ids;
    std::vector<uint64_t> sizes;
  };
  absl::flat_hash_map<std::string, Done> done_by_source;
  for (size_t k = 0; k < ready_index.size(); ++k) {
    size_t i = ready_index[k];
    if (!reg.ok()) {
      b.fallback.push_back({i, std::string(reg.message())});
    } else {
      Done& d = done_by_source[b.from_name[i]];
      d.ids.push_back(b.jobs[i].id);
      d.sizes.push_back(ready[k].size);
      b.done.push_back(b.jobs[i].id);
    }
  }
  for (const auto& [from, d] : done_by_source) {
    absl::StatusOr<uint64_t> finished = jobs_->FinishMany(
        d.ids, v1::JOB_STATE_DONE,
        absl::StrCat("fetched from ", from, " in a batch of ", b.jobs.size(),
                     " in ", absl::FormatDuration(absl::Now() - b.start)),
        d.sizes);
    WarnIfFailed(finished.status(),
                 absl::StrCat(d.ids.front(), " (and ", d.ids.size() - 1,
                              " more of its batch)"),
                 "cannot record it done");
    CountEnded(b, d.ids, finished);
  }
  if (!b.already_local.empty()) {
    absl::StatusOr<uint64_t> finished = jobs_->FinishMany(
        b.already_local, v1::JOB_STATE_DONE, "already present locally");
    CountEnded(b, b.already_local, finished);
    WarnIfFailed(
        finished.status(),
        absl::StrCat(b.already_local.front(), " (and ",
                     b.already_local.size() - 1, " more of its batch)"),
        "cannot record it done");
  }
}

void BatchLane::CountEnded(const Batch& b, const std::vector<std::string>& ids,
                           const absl::StatusOr<uint64_t>& finished) {
  if (options_.metrics == nullptr || !finished.ok()) return;
  // FinishMany says how many it ended, not which: a job another path
  // ended first (a cancel) is rare, and then the first ones count.
  uint64_t left = *finished;
  const absl::flat_hash_set<absl::string_view> ended(ids.begin(), ids.end());
  const absl::Time now = absl::Now();
  for (const Job& j : b.jobs) {
    if (left == 0) break;
    if (!ended.contains(j.id)) continue;
    options_.metrics->JobEnded(j.priority, v1::JOB_STATE_DONE,
                               now - j.created_at);
    --left;
  }
}

void BatchLane::Conclude(Batch& b) {
  for (const auto& [i, why] : b.fallback) {
    const std::string& id = b.jobs[i].id;
    WarnIfFailed(store_->Discard(id), id, "cannot delete its partial data");
    WarnIfFailed(jobs_->ScheduleRetry(id, absl::Now(), why), id,
                 "cannot schedule its retry");
  }
  if (!b.yielded.empty()) {
    absl::StatusOr<uint64_t> n = jobs_->GiveBack(b.yielded);
    if (!n.ok()) {
      // They stay RUNNING until the next start resumes them.
      SC_LOG(WARNING) << "batch: cannot put " << b.yielded.size()
                      << " jobs back in the queue: " << n.status();
    } else {
      SC_LOG(INFO) << "batch yielded to foreground work: " << *n
                   << " jobs back in the queue";
    }
  }
  if (!b.fallback.empty() || !b.yielded.empty()) hooks_.wake();
  SC_LOG(DEBUG) << "batch of " << b.jobs.size() << ": " << b.done.size()
                << " fetched, " << b.already_local.size() << " local, "
                << b.fallback.size() << " left to the workers, "
                << b.yielded.size() << " yielded, in " << absl::Now() - b.start
                << " (resolve " << b.resolved - b.start << ", receive "
                << b.received_all - b.resolved << ", install "
                << b.installed - b.received_all << ", register "
                << b.registered - b.installed << ", finish "
                << absl::Now() - b.registered << ")";
  // Only watched jobs are read back (one query each).
  for (const std::vector<std::string>* ids : {&b.done, &b.already_local}) {
    for (const std::string& id : *ids) {
      if (!events_->HasWatchers(id)) continue;
      if (absl::StatusOr<std::optional<Job>> j = jobs_->Get(id);
          j.ok() && j->has_value()) {
        events_->Publish(hooks_.status_of(**j));
      }
    }
  }
}

}  // namespace sidecar::transfer
