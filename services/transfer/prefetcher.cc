#include "services/transfer/prefetcher.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/log.h"
#include "common/transport.h"

namespace sidecar::transfer {

Prefetcher::Prefetcher(PrefetchOptions options,
                       AvailabilityClient* availability, JobStore* jobs,
                       Fetcher* fetcher, const FetchPolicy* policy,
                       const PrefetchControl* control)
    : options_(std::move(options)),
      availability_(availability),
      jobs_(jobs),
      fetcher_(fetcher),
      policy_(policy),
      control_(control) {}

Prefetcher::~Prefetcher() { Stop(); }

void Prefetcher::Start() {
  threads_.emplace_back([this] { WatchLoop(); });
  threads_.emplace_back([this] { FlushLoop(); });
}

void Prefetcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
    cv_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

void Prefetcher::PolicyChanged() {
  absl::MutexLock lock(&mu_);
  policy_changed_ = true;
  catch_up_ = true;
  if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
  cv_.SignalAll();
}

void Prefetcher::CatchUpSoon() {
  absl::MutexLock lock(&mu_);
  catch_up_ = true;
  cv_.SignalAll();
}

uint64_t Prefetcher::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

void Prefetcher::WatchLoop() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.watch_deadline);
    PrefetchRules rules;
    std::vector<Kind> kinds;
    {
      absl::MutexLock lock(&mu_);
      // Nothing eager: nothing to watch until the policy changes (an empty
      // kind list would watch every kind).
      while (true) {
        if (stopping_) return;
        policy_changed_ = false;
        rules = control_->policy().rules;
        kinds = rules.EagerKindList();
        if (!kinds.empty()) break;
        cv_.Wait(&mu_);
      }
      watch_ctx_ = &ctx;
    }
    v1::WatchRequest req;
    req.set_include_remote(true);
    for (Kind k : kinds) req.add_kinds(k);
    auto reader = availability_->stub()->Watch(&ctx, req);
    {
      absl::MutexLock lock(&mu_);
      catch_up_ = true;  // what happened before this watch
      cv_.Signal();
    }
    v1::AvailabilityEvent ev;
    bool got_any = false;
    while (reader->Read(&ev)) {
      got_any = true;
      // A snapshot replaced what is known of a device (no event per key),
      // or a device came online: what it holds may not have been fetchable
      // when it was announced (its holder was not reachable yet).
      if ((ev.type() == v1::AvailabilityEvent::TYPE_RESET ||
           ev.type() == v1::AvailabilityEvent::TYPE_ONLINE) &&
          !ev.is_local()) {
        absl::MutexLock lock(&mu_);
        catch_up_ = true;
        cv_.Signal();
        continue;
      }
      if (ev.type() != v1::AvailabilityEvent::TYPE_ADDED || ev.is_local()) {
        continue;
      }
      absl::StatusOr<SidecarKey> key = KeyFromProto(ev.key());
      if (!key.ok()) continue;
      if (rules.ModeOf(*key) != PrefetchMode::kEager) continue;
      absl::MutexLock lock(&mu_);
      if (pending_.size() < options_.max_pending) {
        pending_.push_back(std::move(*key));
      }
    }
    grpc::Status s = reader->Finish();
    absl::MutexLock lock(&mu_);
    watch_ctx_ = nullptr;
    if (stopping_) return;
    if (policy_changed_) continue;  // at once, with the new kinds
    if (got_any) backoff = absl::Milliseconds(200);
    SC_LOG(DEBUG) << "prefetch watch ended: " << s.error_message()
                  << "; again in " << backoff;
    cv_.WaitWithTimeout(&mu_, backoff);
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
}

void Prefetcher::FlushLoop() {
  while (true) {
    bool catch_up;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      cv_.WaitWithTimeout(&mu_, options_.batch_window);
      if (stopping_) return;
      catch_up = catch_up_;
      catch_up_ = false;
    }
    Flush();
    if (catch_up) CatchUp();
  }
}

void Prefetcher::Flush() {
  std::vector<SidecarKey> keys;
  {
    absl::MutexLock lock(&mu_);
    keys.swap(pending_);
  }
  if (keys.empty()) return;
  // Duplicates (several holders announced the same key) collapse.
  absl::flat_hash_set<SidecarKey> seen;
  std::vector<SidecarKey> unique;
  for (SidecarKey& k : keys) {
    if (seen.insert(k).second) unique.push_back(std::move(k));
  }
  Queue(std::move(unique));
}

void Prefetcher::CatchUp() {
  const PrefetchRules rules = control_->policy().rules;
  const std::vector<Kind> kinds = rules.EagerKindList();
  if (kinds.empty()) return;
  std::string token;
  size_t listed = 0;
  absl::Time start = absl::Now();
  do {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    v1::ListMissingRequest req;
    for (Kind k : kinds) req.add_kinds(k);
    req.set_page_size(options_.catch_up_page);
    req.set_page_token(token);
    req.set_include_stale(true);  // refresh stale copies of eager kinds
    v1::ListMissingResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    grpc::Status s = availability_->stub()->ListMissing(&ctx, req, &resp);
    if (!s.ok()) {
      SC_LOG(WARNING) << "prefetch: listing missing sidecars: "
                      << s.error_message() << "; again at the next watch";
      return;
    }
    std::vector<SidecarKey> keys;
    for (const v1::SidecarKey& p : resp.keys()) {
      absl::StatusOr<SidecarKey> k = KeyFromProto(p);
      if (k.ok()) keys.push_back(*std::move(k));
    }
    listed += keys.size();
    Queue(std::move(keys));
    token = resp.next_page_token();
  } while (!token.empty() && listed < options_.catch_up_max_keys);
  SC_LOG(DEBUG) << "prefetch: caught up, " << listed
                << " missing sidecar(s) listed in " << absl::Now() - start;
}

void Prefetcher::Queue(std::vector<SidecarKey> keys) {
  // The policy now in force: it may have changed since the keys came.
  const PrefetchPolicy policy = control_->policy();
  std::vector<SidecarKey> unique;
  for (SidecarKey& k : keys) {
    if (policy.rules.ModeOf(k) == PrefetchMode::kEager &&
        !policy_->GenerateInstead(k, policy.metered).has_value()) {
      unique.push_back(std::move(k));
    }
  }
  if (unique.empty()) return;
  absl::StatusOr<std::vector<Resolution>> res =
      availability_->ResolveMany(unique, v1::RESOLVE_MODE_FETCH_ONLY);
  if (!res.ok()) {
    SC_LOG(WARNING) << "prefetch: " << res.status();
    return;
  }
  std::vector<SidecarKey> wanted;
  for (size_t i = 0; i < unique.size(); ++i) {
    if (NeedsFetch((*res)[i])) wanted.push_back(unique[i]);
  }
  if (wanted.empty()) return;
  absl::StatusOr<std::vector<Job>> jobs =
      jobs_->CreateMany(wanted, v1::PRIORITY_PREFETCH);
  if (!jobs.ok()) {
    SC_LOG(WARNING) << "prefetch: " << jobs.status();
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    queued_ += wanted.size();
  }
  SC_LOG(DEBUG) << "prefetch: queued " << wanted.size() << " sidecar(s)";
  fetcher_->Wake();
}

}  // namespace sidecar::transfer
