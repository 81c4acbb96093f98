// Prefetcher: eager prefetch of the kinds and variants the prefetch policy
// (PrefetchControl, PrefetchRules) says are eager (thumbnails by default).
// It watches the local availability service for sidecars that peers newly
// advertise and queues PRIORITY_PREFETCH jobs for eager ones that are not
// here, in batches; the fetcher runs them after every interactive and
// normal job, at most the policy's limit at once (PrefetchGate). Lazy and
// never kinds are not prefetched. The device's strategy (FetchPolicy)
// applies: a metered device under unmetered-only prefetches nothing. Each
// time the watch (re)starts, after a RESET event, when a peer comes online
// and when the policy changes, it catches up with a listing of what peers
// hold and this device lacks.
#ifndef SIDECAR_SERVICES_TRANSFER_PREFETCHER_H_
#define SIDECAR_SERVICES_TRANSFER_PREFETCHER_H_

#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/fetcher.h"
#include "services/transfer/job_store.h"
#include "services/transfer/policy.h"
#include "services/transfer/prefetch_control.h"

namespace sidecar::transfer {

struct PrefetchOptions {
  // Events are gathered this long before their jobs are queued together.
  absl::Duration batch_window = absl::Milliseconds(200);
  // Keys waiting to be queued; beyond this, new ones are dropped (they are
  // fetched on demand instead).
  size_t max_pending = 100000;
  // Each Watch call is renewed after this long (every call has a deadline).
  absl::Duration watch_deadline = absl::Hours(1);
  // Keys per ListMissing page while catching up, and the most keys one
  // catch-up queues (the rest wait for the next one, or for a request).
  uint32_t catch_up_page = 1000;
  size_t catch_up_max_keys = 100000;
};

class Prefetcher {
 public:
  // Pointers must outlive the prefetcher.
  Prefetcher(PrefetchOptions options, AvailabilityClient* availability,
             JobStore* jobs, Fetcher* fetcher, const FetchPolicy* policy,
             const PrefetchControl* control);
  ~Prefetcher();

  void Start();
  void Stop();

  // The policy changed: the watch restarts with the eager kinds now in
  // force and a catch-up follows. Returns at once.
  void PolicyChanged() ABSL_LOCKS_EXCLUDED(mu_);

  // Something that held prefetch back has gone (e.g. the store quota has
  // room again): a catch-up follows, which queues again what peers hold
  // and this device lacks. Returns at once.
  void CatchUpSoon() ABSL_LOCKS_EXCLUDED(mu_);

  // Keys queued for prefetch so far (for tests and logs).
  uint64_t queued() const;

 private:
  // These take mu_ as needed.
  void WatchLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void FlushLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);
  // Queues what peers hold and this device lacks (ListMissing, paged):
  // events alone miss what was learned before the watch started, while it
  // was broken, and through snapshots (one RESET event, no keys).
  void CatchUp() ABSL_LOCKS_EXCLUDED(mu_);
  // Resolves `keys` (distinct) and queues jobs for those still remote.
  void Queue(std::vector<SidecarKey> keys) ABSL_LOCKS_EXCLUDED(mu_);

  const PrefetchOptions options_;
  AvailabilityClient* const availability_;
  JobStore* const jobs_;
  Fetcher* const fetcher_;
  const FetchPolicy* const policy_;
  const PrefetchControl* const control_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<SidecarKey> pending_ ABSL_GUARDED_BY(mu_);
  bool catch_up_ ABSL_GUARDED_BY(mu_) = false;
  bool policy_changed_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;  // Start and Stop only (the owner's)
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PREFETCHER_H_
