// Readiness: whether a service can do its work now, as an orchestrator (or
// `sidecarctl status`) asks it through grpc.health.v1.
//
// A ReadinessMonitor runs a few checks (the database answers, the store
// takes a file) every interval on a thread of its own, and reports each
// change to a callback, which sets the health of the service names that
// depend on them (ServerHost::SetServiceServing). The server as a whole
// ("") stays SERVING while it runs: a database away for a while makes the
// service unready, not dead, so a liveness probe does not restart it.
// Every change is logged once, with the failing check's reason.
#ifndef SIDECAR_COMMON_READINESS_H_
#define SIDECAR_COMMON_READINESS_H_

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sidecar {

struct ReadinessCheck {
  std::string what;  // "database", "sidecar store": for the log
  // OK when ready; else why not, in words a person can act on. Bounded in
  // time by the check itself.
  std::function<absl::Status()> run;
};

// A check that PostgreSQL at `conninfo` answers "SELECT 1" on a
// connection of its own (kept open between checks, made again when lost;
// each attempt gives up after `timeout`).
ReadinessCheck DatabaseCheck(std::string conninfo, absl::Duration timeout);
// A check that a file can be made, written, synced and removed in `dir`.
ReadinessCheck WritableCheck(std::string what, std::string dir);

class ReadinessMonitor {
 public:
  // `on_change(ready, reason)` runs on the monitor's thread at the first
  // check and at every change; `reason` is empty when ready.
  ReadinessMonitor(
      std::vector<ReadinessCheck> checks, absl::Duration interval,
      std::function<void(bool ready, const std::string& reason)> on_change);
  ~ReadinessMonitor();  // Stop()

  // Runs the checks once now (on the caller's thread), then every interval
  // on the monitor's thread.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // As of the last checks: "" when ready, else the reason.
  std::string reason() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void RunChecks() ABSL_LOCKS_EXCLUDED(mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<ReadinessCheck> checks_;
  const absl::Duration interval_;
  const std::function<void(bool, const std::string&)> on_change_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool checked_ ABSL_GUARDED_BY(mu_) = false;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_READINESS_H_
