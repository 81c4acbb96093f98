// PrefetchControl: the prefetch policy in force, changed at run time through
// the local API (SetPrefetchPolicy) and stored in the job database so that
// it survives restarts. The flags give the initial policy; once a policy
// has been stored, it wins over the flags at every start.
//
// Applying a policy: the PrefetchGate gets the limit and the pause
// (metered and not prefetch_when_metered), the Bandwidth the background
// cap; queued prefetch jobs whose key is now `never`, or was eager and no
// longer is, are cancelled (running ones finish); then on_change runs (the
// Prefetcher catches up with newly eager kinds, the Fetcher is woken).
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_PREFETCH_CONTROL_H_
#define SIDECAR_SERVICES_TRANSFER_PREFETCH_CONTROL_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/transfer/bandwidth.h"
#include "services/transfer/job_store.h"
#include "services/transfer/prefetch_gate.h"
#include "services/transfer/prefetch_rules.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

inline constexpr int kMaxConcurrentPrefetchLimit = 64;

struct PrefetchPolicy {
  PrefetchRules rules;
  int max_concurrent = 3;  // 0..64; a batch of prefetch jobs counts as one
  bool metered = false;
  bool prefetch_when_metered = false;
  uint64_t background_bytes_per_sec = 0;  // 0: what foreground work leaves

  // Prefetch waits: metered, and the policy does not prefetch then.
  bool paused() const { return metered && !prefetch_when_metered; }
};

class PrefetchControl {
 public:
  // Pointers must outlive the control. `defaults` come from the flags and
  // are applied at once.
  PrefetchControl(PrefetchPolicy defaults, JobStore* jobs, PrefetchGate* gate,
                  Bandwidth* bandwidth);

  // Called after each change is applied (not under any lock of the
  // control). Set before serving.
  void set_on_change(std::function<void()> f) { on_change_ = std::move(f); }

  // At start-up: the stored policy, if any, replaces the defaults and is
  // applied. A stored policy that no longer parses is reported (the
  // defaults stay); a database error is returned.
  absl::Status Load() ABSL_LOCKS_EXCLUDED(mu_);

  PrefetchPolicy policy() const ABSL_LOCKS_EXCLUDED(mu_);

  // The policy in force with the gate's live state, for the API.
  void ToProto(v1::PrefetchPolicy* out) const ABSL_LOCKS_EXCLUDED(mu_);

  // Changes the fields `req` sets, stores the result and applies it.
  // INVALID_ARGUMENT naming the bad rule or value (nothing changes); the
  // database's error if it cannot be stored (nothing changes).
  absl::Status Update(const v1::SetPrefetchPolicyRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_, update_mu_);

 private:
  // Gate and bandwidth.
  void Apply(const PrefetchPolicy& p);
  // Cancels waiting prefetch jobs that `now` does not want but `before`
  // did (see the file comment). Returns how many; errors are logged.
  uint64_t CancelUnwanted(const PrefetchRules& before,
                          const PrefetchRules& now);

  JobStore* const jobs_;
  PrefetchGate* const gate_;
  Bandwidth* const bandwidth_;
  std::function<void()> on_change_;

  absl::Mutex update_mu_;  // serializes Update and Load
  mutable absl::Mutex mu_;
  PrefetchPolicy policy_ ABSL_GUARDED_BY(mu_);
  bool stored_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PREFETCH_CONTROL_H_
