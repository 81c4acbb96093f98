#include "services/transfer/prefetcher.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/log.h"
#include "common/transport.h"

namespace sidecar::transfer {

Prefetcher::Prefetcher(PrefetchOptions options,
                       AvailabilityClient* availability, JobStore* jobs,
                       Fetcher* fetcher, const FetchPolicy* policy)
    : options_(std::move(options)),
      availability_(availability),
      jobs_(jobs),
      fetcher_(fetcher),
      policy_(policy) {}

Prefetcher::~Prefetcher() { Stop(); }

void Prefetcher::Start() {
  if (options_.kinds.empty()) return;
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

uint64_t Prefetcher::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

void Prefetcher::WatchLoop() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.watch_deadline);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      watch_ctx_ = &ctx;
    }
    v1::WatchRequest req;
    req.set_include_remote(true);
    for (Kind k : options_.kinds) req.add_kinds(k);
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
      if (std::find(options_.kinds.begin(), options_.kinds.end(), key->kind) ==
          options_.kinds.end()) {
        continue;
      }
      absl::MutexLock lock(&mu_);
      if (pending_.size() < options_.max_pending) {
        pending_.push_back(std::move(*key));
      }
    }
    grpc::Status s = reader->Finish();
    absl::MutexLock lock(&mu_);
    watch_ctx_ = nullptr;
    if (stopping_) return;
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
  std::string token;
  size_t listed = 0;
  absl::Time start = absl::Now();
  do {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    v1::ListMissingRequest req;
    for (Kind k : options_.kinds) req.add_kinds(k);
    req.set_page_size(options_.catch_up_page);
    req.set_page_token(token);
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
  std::vector<SidecarKey> unique;
  for (SidecarKey& k : keys) {
    if (!policy_->GenerateInstead(k).has_value()) {
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
    if ((*res)[i].outcome == v1::ResolveResponse::OUTCOME_REMOTE) {
      wanted.push_back(unique[i]);
    }
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
