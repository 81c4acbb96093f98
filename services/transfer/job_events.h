// JobEvents: fans job status out to WatchJob streams. Progress is coalesced:
// a slow watcher sees the latest status, never a backlog. A stream ends
// after it has sent a final state (DONE, GENERATE, CANCELLED).
#ifndef SIDECAR_SERVICES_TRANSFER_JOB_EVENTS_H_
#define SIDECAR_SERVICES_TRANSFER_JOB_EVENTS_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/transfer/job_store.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

class JobEvents {
 public:
  JobEvents() = default;
  ~JobEvents();

  // A reactor for one WatchJob call on `job_id`. It is registered first and
  // then sends what `current()` returns, so no status published meanwhile
  // is lost; nullopt from `current` ends the call with NOT_FOUND. Ends at
  // once if the status is final. Owned by gRPC.
  grpc::ServerWriteReactor<v1::JobStatus>* Open(
      const std::string& job_id,
      const std::function<absl::StatusOr<std::optional<v1::JobStatus>>()>&
          current);

  // Whether anyone watches `job_id` (cheap; lets callers skip work).
  bool HasWatchers(const std::string& job_id);

  // Sends `status` to the watchers of its job.
  void Publish(const v1::JobStatus& status);

  // Ends every stream with UNAVAILABLE (shutting down).
  void Shutdown();

 private:
  class Watcher;
  void Remove(Watcher* w) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<Watcher*>> by_job_
      ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_JOB_EVENTS_H_
