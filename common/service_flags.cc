#include "common/service_flags.h"

#include <algorithm>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/state_dir.h"

ABSL_FLAG(std::string, state_dir, "",
          "directory of the device key and the local sockets, shared by the "
          "device's two services (default: $XDG_STATE_HOME/sidecar-sync or "
          "~/.local/state/sidecar-sync)");
ABSL_FLAG(std::string, local_listen, "",
          "where the local API listens: unix:/path or a loopback host:port "
          "(default: unix:<state_dir>/<service>.sock)");
ABSL_FLAG(bool, local_listen_allow_network, false,
          "allow --local_listen on a non-loopback address (a container's "
          "private network; never a network other devices share)");
ABSL_FLAG(std::string, log_format, "text",
          "text: \"I1208 10:00:00.000000 transfer] message key=value ...\"; "
          "json: one JSON object per line (ts, level, service, msg and the "
          "fields, e.g. request_id)");
ABSL_FLAG(absl::Duration, readiness_interval, absl::Seconds(10),
          "how often readiness is checked (the database answers, the store "
          "takes a file); grpc.health.v1 reports it per service name");
ABSL_FLAG(std::string, metrics_listen, "",
          "where Prometheus metrics are served (GET /metrics), a loopback "
          "host:port such as 127.0.0.1:9464, port 0 for any (default: no "
          "metrics are recorded or served)");
ABSL_FLAG(bool, metrics_listen_allow_network, false,
          "allow --metrics_listen on a non-loopback address (a container's "
          "private network that a Prometheus shares; never one other "
          "devices share)");
ABSL_FLAG(bool, metrics_members, false,
          "give this service's metrics to the library's members, on the peer "
          "listener (mutual TLS, members only); the availability service "
          "then relays every member's at /members/metrics of "
          "--metrics_listen, so one Prometheus sees the whole library");
ABSL_FLAG(std::string, metrics_port_file, "",
          "write the metrics port to this file once serving (for tests and "
          "scripts that use port 0)");

namespace sidecar {

std::string StateDirFromFlags() {
  std::string dir = absl::GetFlag(FLAGS_state_dir);
  return dir.empty() ? DefaultStateDir() : dir;
}

LocalListener LocalListenerFromFlags(const std::string& state_dir,
                                     const std::string& service) {
  std::string address = absl::GetFlag(FLAGS_local_listen);
  if (address.empty()) address = LocalSocketAddress(state_dir, service);
  return LocalListener{address,
                       absl::GetFlag(FLAGS_local_listen_allow_network)};
}

std::unique_ptr<ReadinessMonitor> StartReadinessFromFlags(
    std::vector<ReadinessCheck> checks, std::vector<ServerHost*> hosts) {
  auto monitor = std::make_unique<ReadinessMonitor>(
      std::move(checks),
      std::max(absl::Milliseconds(100),
               absl::GetFlag(FLAGS_readiness_interval)),
      [hosts = std::move(hosts)](bool ready, const std::string&) {
        for (ServerHost* h : hosts) h->SetServiceServing(ready);
      });
  monitor->Start();
  return monitor;
}

absl::Status SetLogFormatFromFlags() {
  const std::string f = absl::GetFlag(FLAGS_log_format);
  if (f == "text") {
    SetLogFormat(LogFormat::kText);
  } else if (f == "json") {
    SetLogFormat(LogFormat::kJson);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_format ", f, ": give text or json"));
  }
  return absl::OkStatus();
}

bool EnableMetricsFromFlags() {
  if (absl::GetFlag(FLAGS_metrics_listen).empty() &&
      !absl::GetFlag(FLAGS_metrics_members)) {
    return false;
  }
  EnableProcessMetrics();
  return true;
}

std::unique_ptr<MemberMetricsService> MemberMetricsServiceFromFlags() {
  ProcessMetricsSet* metrics = ProcessMetrics();
  if (!absl::GetFlag(FLAGS_metrics_members) || metrics == nullptr) {
    return nullptr;
  }
  return std::make_unique<MemberMetricsService>(metrics);
}

absl::StatusOr<std::unique_ptr<MetricsExporter>> StartMetricsFromFlags() {
  const std::string address = absl::GetFlag(FLAGS_metrics_listen);
  ProcessMetricsSet* metrics = ProcessMetrics();
  if (address.empty() || metrics == nullptr) return nullptr;
  absl::StatusOr<std::unique_ptr<MetricsExporter>> e = MetricsExporter::Start(
      address, absl::GetFlag(FLAGS_metrics_listen_allow_network),
      metrics->registry, metrics->gauges);
  if (!e.ok()) return e.status();
  SC_LOG(INFO) << "metrics on " << (*e)->url();
  if (std::string pf = absl::GetFlag(FLAGS_metrics_port_file); !pf.empty()) {
    if (absl::Status s = WritePortFile(pf, (*e)->port()); !s.ok()) return s;
  }
  return e;
}

}  // namespace sidecar
