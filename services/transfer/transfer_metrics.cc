#include "services/transfer/transfer_metrics.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "services/transfer/evictor.h"
#include "services/transfer/job_store.h"

namespace sidecar::transfer {
namespace {

// A person waits for an interactive fetch (tens of ms to seconds); a
// prefetch may wait minutes behind others.
const prometheus::Histogram::BucketBoundaries& FetchBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900};
  return *b;
}

// "interactive", "normal", "prefetch"; "queued", "done", ...
std::string PriorityName(v1::Priority p) {
  std::string n = v1::Priority_Name(p);
  absl::string_view v = n;
  absl::ConsumePrefix(&v, "PRIORITY_");
  return absl::AsciiStrToLower(v);
}

std::string StateName(v1::JobState s) {
  std::string n = v1::JobState_Name(s);
  absl::string_view v = n;
  absl::ConsumePrefix(&v, "JOB_STATE_");
  return absl::AsciiStrToLower(v);
}

constexpr v1::Priority kPriorities[] = {
    v1::PRIORITY_PREFETCH, v1::PRIORITY_NORMAL, v1::PRIORITY_INTERACTIVE};

}  // namespace

TransferMetrics::TransferMetrics(prometheus::Registry& registry)
    : bytes_(prometheus::BuildCounter()
                 .Name("sidecar_transfer_received_bytes_total")
                 .Help("Bytes of sidecars received from each peer (source "
                       "device id), verified or not.")
                 .Register(registry)),
      failures_(prometheus::BuildCounter()
                    .Name("sidecar_transfer_verification_failures_total")
                    .Help("Transfers from each peer whose bytes failed their "
                          "advertised SHA-256 (and were thrown away).")
                    .Register(registry)),
      ended_(prometheus::BuildCounter()
                 .Name("sidecar_fetch_jobs_ended_total")
                 .Help("Fetch jobs ended, by priority and final state (done, "
                       "generate: this device must make it, cancelled).")
                 .Register(registry)),
      seconds_(prometheus::BuildHistogram()
                   .Name("sidecar_fetch_seconds")
                   .Help("Time from a fetch's request to its sidecar in the "
                         "store, by priority (jobs ended DONE).")
                   .Register(registry)) {
  for (v1::Priority p : kPriorities) {
    seconds_by_priority_[p] =
        &seconds_.Add({{"priority", PriorityName(p)}}, FetchBuckets());
    for (v1::JobState s : {v1::JOB_STATE_DONE, v1::JOB_STATE_GENERATE,
                           v1::JOB_STATE_CANCELLED}) {
      // Made up front, so that every series shows 0 before its first job.
      ended_by_[p][s] =
          &ended_.Add({{"priority", PriorityName(p)}, {"state", StateName(s)}});
    }
  }
}

TransferMetrics::Source& TransferMetrics::SourceFor(const std::string& source) {
  const std::string label = source_labels_.Of(source);
  auto it = sources_.find(label);
  if (it != sources_.end()) return it->second;
  Source s{&bytes_.Add({{"source", label}}),
           &failures_.Add({{"source", label}})};
  return sources_.emplace(label, s).first->second;
}

void TransferMetrics::Received(const std::string& source, uint64_t bytes,
                               bool corrupt) {
  absl::MutexLock lock(&mu_);
  Source& s = SourceFor(source);
  s.bytes->Increment(static_cast<double>(bytes));
  if (corrupt) s.failures->Increment();
}

void TransferMetrics::JobEnded(v1::Priority priority, v1::JobState state,
                               absl::Duration since_request) {
  if (priority < v1::PRIORITY_PREFETCH || priority > v1::PRIORITY_INTERACTIVE) {
    return;
  }
  prometheus::Counter* ended = nullptr;
  if (state >= 0 && state < v1::JobState_ARRAYSIZE) {
    ended = ended_by_[priority][state];
  }
  if (ended == nullptr) {  // a state not made up front (none so far)
    ended = &ended_.Add(
        {{"priority", PriorityName(priority)}, {"state", StateName(state)}});
  }
  ended->Increment();
  if (state == v1::JOB_STATE_DONE) {
    seconds_by_priority_[priority]->Observe(
        absl::ToDoubleSeconds(since_request));
  }
}

void TransferMetrics::AddScrapeTimeGauges(ScrapeTimeGauges* gauges,
                                          JobStore* jobs,
                                          const Evictor* evictor) {
  if (jobs != nullptr) {
    gauges->Add([jobs] {
      std::vector<prometheus::MetricFamily> out;
      absl::StatusOr<std::vector<JobStore::ActiveCount>> counts =
          jobs->CountActive();
      if (!counts.ok()) {
        SC_LOG(WARNING) << "metrics: cannot count the jobs: "
                        << counts.status();
        return out;
      }
      std::vector<GaugeSample> by_state;
      uint64_t backlog = 0;
      // Every state and priority, 0 where there is no job.
      for (v1::JobState s : {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                             v1::JOB_STATE_WAITING_RETRY}) {
        for (v1::Priority p : kPriorities) {
          uint64_t n = 0;
          for (const JobStore::ActiveCount& c : *counts) {
            if (c.state == s && c.priority == p) n += c.count;
          }
          if (p == v1::PRIORITY_PREFETCH && s != v1::JOB_STATE_RUNNING) {
            backlog += n;
          }
          by_state.push_back(
              {{{"state", StateName(s)}, {"priority", PriorityName(p)}},
               static_cast<double>(n)});
        }
      }
      out.push_back(GaugeFamily(
          "sidecar_fetch_jobs",
          "Active fetch jobs by state and priority (queued ones are the "
          "queue's depth).",
          std::move(by_state)));
      out.push_back(GaugeFamily(
          "sidecar_prefetch_backlog",
          "Prefetch jobs waiting to run (queued or waiting to retry).",
          {{{}, static_cast<double>(backlog)}}));
      return out;
    });
  }
  if (evictor != nullptr && evictor->enabled()) {
    gauges->Add([evictor] {
      v1::GetStoreUsageResponse u = evictor->Report();
      std::vector<prometheus::MetricFamily> out;
      out.push_back(GaugeFamily(
          "sidecar_store_used_bytes",
          "Bytes the store's sidecars use, as last read (own and fetched).",
          {{{}, static_cast<double>(u.used_bytes())}}));
      out.push_back(GaugeFamily("sidecar_store_quota_bytes",
                                "The store's total quota (0: none).",
                                {{{}, static_cast<double>(u.quota_bytes())}}));
      out.push_back(
          GaugeFamily("sidecar_store_evicted_total",
                      "Fetched sidecars evicted to stay under the quota.",
                      {{{}, static_cast<double>(u.evicted_count())}},
                      prometheus::MetricType::Counter));
      out.push_back(GaugeFamily(
          "sidecar_store_evicted_bytes_total",
          "Bytes of fetched sidecars evicted to stay under the quota.",
          {{{}, static_cast<double>(u.evicted_bytes())}},
          prometheus::MetricType::Counter));
      return out;
    });
  }
}

}  // namespace sidecar::transfer
