#include "services/transfer/prefetch_control.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace sidecar::transfer {
namespace {

constexpr uint32_t kCancelPage = 1000;
// Bounds one policy change's scan of the queue (1M jobs).
constexpr int kMaxCancelPages = 1000;

StoredPrefetchPolicy ToStored(const PrefetchPolicy& p) {
  return StoredPrefetchPolicy{
      .rules = p.rules.ToString(),
      .max_concurrent = p.max_concurrent,
      .metered = p.metered,
      .prefetch_when_metered = p.prefetch_when_metered,
      .background_bytes_per_sec = p.background_bytes_per_sec};
}

}  // namespace

PrefetchControl::PrefetchControl(PrefetchPolicy defaults, JobStore* jobs,
                                 PrefetchGate* gate, Bandwidth* bandwidth)
    : jobs_(jobs), gate_(gate), bandwidth_(bandwidth) {
  Apply(defaults);
  policy_ = std::move(defaults);
}

void PrefetchControl::Apply(const PrefetchPolicy& p) {
  gate_->Configure(p.max_concurrent, p.paused());
  if (bandwidth_ != nullptr) {
    bandwidth_->SetBackgroundRate(
        static_cast<double>(p.background_bytes_per_sec));
  }
}

absl::Status PrefetchControl::Load() {
  absl::MutexLock update(&update_mu_);
  SC_ASSIGN_OR_RETURN(std::optional<StoredPrefetchPolicy> stored,
                      jobs_->LoadPrefetchPolicy());
  if (!stored) return absl::OkStatus();
  absl::StatusOr<PrefetchRules> rules = PrefetchRules::Parse(stored->rules);
  if (!rules.ok()) {
    SC_LOG(WARNING) << "the stored prefetch policy is not usable ("
                    << rules.status().message()
                    << "); the flags' policy applies until one is set";
    return absl::OkStatus();
  }
  PrefetchPolicy p{
      .rules = *std::move(rules),
      .max_concurrent = stored->max_concurrent,
      .metered = stored->metered,
      .prefetch_when_metered = stored->prefetch_when_metered,
      .background_bytes_per_sec = stored->background_bytes_per_sec};
  Apply(p);
  absl::MutexLock lock(&mu_);
  policy_ = std::move(p);
  stored_ = true;
  return absl::OkStatus();
}

PrefetchPolicy PrefetchControl::policy() const {
  absl::MutexLock lock(&mu_);
  return policy_;
}

void PrefetchControl::ToProto(v1::PrefetchPolicy* out) const {
  absl::MutexLock lock(&mu_);
  out->set_rules(policy_.rules.ToString());
  out->set_max_concurrent_prefetch(policy_.max_concurrent);
  out->set_metered(policy_.metered);
  out->set_prefetch_when_metered(policy_.prefetch_when_metered);
  out->set_background_bytes_per_sec(policy_.background_bytes_per_sec);
  out->set_stored(stored_);
  out->set_running_prefetch(gate_->running());
  out->set_paused(gate_->paused());
}

absl::Status PrefetchControl::Update(const v1::SetPrefetchPolicyRequest& req) {
  absl::MutexLock update(&update_mu_);
  PrefetchPolicy before = policy();
  PrefetchPolicy p = before;
  if (req.has_rules()) {
    SC_ASSIGN_OR_RETURN(p.rules, PrefetchRules::Parse(req.rules()));
  }
  if (req.has_max_concurrent_prefetch()) {
    if (req.max_concurrent_prefetch() > kMaxConcurrentPrefetchLimit) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_concurrent_prefetch ", req.max_concurrent_prefetch(),
          " is too many: use 0 (no prefetch) to ",
          kMaxConcurrentPrefetchLimit));
    }
    p.max_concurrent = static_cast<int>(req.max_concurrent_prefetch());
  }
  if (req.has_metered()) p.metered = req.metered();
  if (req.has_prefetch_when_metered()) {
    p.prefetch_when_metered = req.prefetch_when_metered();
  }
  if (req.has_background_bytes_per_sec()) {
    if (req.background_bytes_per_sec() > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(
          "background_bytes_per_sec must be below 2^63");
    }
    p.background_bytes_per_sec = req.background_bytes_per_sec();
  }
  SC_RETURN_IF_ERROR(jobs_->SavePrefetchPolicy(ToStored(p)));
  Apply(p);
  {
    absl::MutexLock lock(&mu_);
    policy_ = p;
    stored_ = true;
  }
  uint64_t cancelled = 0;
  if (!(p.rules == before.rules))
    cancelled = CancelUnwanted(before.rules, p.rules);
  SC_LOG(INFO) << "prefetch policy: rules \"" << p.rules.ToString()
               << "\", at most " << p.max_concurrent << " at once, "
               << (p.metered ? "metered" : "unmetered")
               << (p.paused() ? " (paused)" : "") << "; " << cancelled
               << " queued prefetch job(s) cancelled";
  if (on_change_) on_change_();
  return absl::OkStatus();
}

uint64_t PrefetchControl::CancelUnwanted(const PrefetchRules& before,
                                         const PrefetchRules& now) {
  uint64_t cancelled = 0;
  std::string after;
  for (int page = 0; page < kMaxCancelPages; ++page) {
    absl::StatusOr<std::vector<Job>> jobs =
        jobs_->ListWaitingPrefetch(after, kCancelPage);
    if (!jobs.ok()) {
      SC_LOG(WARNING) << "prefetch policy: listing queued prefetch jobs: "
                      << jobs.status();
      return cancelled;
    }
    if (jobs->empty()) break;
    after = jobs->back().id;
    std::vector<std::string> ids;
    for (const Job& j : *jobs) {
      const PrefetchMode m = now.ModeOf(j.key);
      if (m == PrefetchMode::kNever ||
          (m != PrefetchMode::kEager &&
           before.ModeOf(j.key) == PrefetchMode::kEager)) {
        ids.push_back(j.id);
      }
    }
    if (!ids.empty()) {
      absl::StatusOr<uint64_t> n =
          jobs_->FinishMany(ids, v1::JOB_STATE_CANCELLED,
                            "the prefetch policy no longer prefetches it");
      if (!n.ok()) {
        SC_LOG(WARNING) << "prefetch policy: cancelling jobs: " << n.status();
        return cancelled;
      }
      cancelled += *n;
    }
    if (jobs->size() < kCancelPage) break;
  }
  return cancelled;
}

}  // namespace sidecar::transfer
