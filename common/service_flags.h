// The flags both services define alike: --state_dir, --local_listen,
// --local_listen_allow_network and the --metrics_* flags. In a library of their
// own (sidecar_service _flags) that only the two service binaries link:
// sidecarctl defines its own --state_dir.
#ifndef SIDECAR_COMMON_SERVICE_FLAGS_H_
#define SIDECAR_COMMON_SERVICE_FLAGS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/member_metrics.h"
#include "common/metrics.h"
#include "common/readiness.h"
#include "common/transport.h"

namespace sidecar {

// --state_dir, else DefaultStateDir().
std::string StateDirFromFlags();

// The local listener of `service` ("availability" or "transfer"):
// --local_listen, else its unix socket in `state_dir`.
LocalListener LocalListenerFromFlags(const std::string& state_dir,
                                     const std::string& service);

// Checks readiness now and then every --readiness_interval, setting the
// named services' health on `hosts` (ServerHost::SetServiceServing). Stop
// it (or destroy it) before the hosts shut down.
std::unique_ptr<ReadinessMonitor> StartReadinessFromFlags(
    std::vector<ReadinessCheck> checks, std::vector<ServerHost*> hosts);

// Sets the log format from --log_format (text or json); INVALID_ARGUMENT
// for anything else. Call first in the service's Main.
absl::Status SetLogFormatFromFlags();

// With --metrics_listen or --metrics_members set, turns the process's metrics on
// (EnableProcessMetrics) and returns true. Call first in the service's
// Main, before any server or channel is made.
bool EnableMetricsFromFlags();

// With --metrics_members set (and metrics on): the service that gives this
// process's metrics to members, for the peer listener. Null without it.
std::unique_ptr<MemberMetricsService> MemberMetricsServiceFromFlags();

// With --metrics_listen set: serves the metrics there, logs where, and
// writes the port to --metrics_port_file if given. Null without it.
absl::StatusOr<std::unique_ptr<MetricsExporter>> StartMetricsFromFlags();

}  // namespace sidecar

#endif  // SIDECAR_COMMON_SERVICE_FLAGS_H_
