#include "common/metrics.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/transport.h"

namespace sidecar {
namespace {

absl::once_flag metrics_once;
ProcessMetricsSet* metrics = nullptr;

}  // namespace

ProcessMetricsSet::ProcessMetricsSet(std::shared_ptr<prometheus::Registry> r)
    : registry(std::move(r)),
      grpc_server(GrpcMetrics::Side::kServer, *registry),
      grpc_client(GrpcMetrics::Side::kClient, *registry) {}

ProcessMetricsSet* EnableProcessMetrics() {
  absl::call_once(metrics_once, [] {
    // Never deleted: servers and channels may outlive main()'s locals.
    metrics = new ProcessMetricsSet(std::make_shared<prometheus::Registry>());
  });
  return metrics;
}

ProcessMetricsSet* ProcessMetrics() {
  // Set once, before any thread that reads it exists (see the header).
  return metrics;
}

MetricsExporter::MetricsExporter(std::unique_ptr<prometheus::Exposer> exposer,
                                 std::string host, int port)
    : exposer_(std::move(exposer)), host_(std::move(host)), port_(port) {}

MetricsExporter::~MetricsExporter() {
  if (stopping_.joinable()) stopping_.join();
}

void MetricsExporter::StopSoon() {
  if (exposer_ == nullptr) return;
  stopping_ = std::thread([e = std::move(exposer_)]() mutable { e.reset(); });
}

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& address, bool allow_network,
    std::shared_ptr<prometheus::Registry> registry) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      absl::StartsWith(address, "unix:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen ", address,
                     ": give host:port, e.g. 127.0.0.1:9464 (port 0 for any)"));
  }
  if (!allow_network && !IsLocalOnlyAddress(address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_listen ", address,
        " is on the network: use a loopback address (127.0.0.1:port), or set "
        "--metrics_listen_allow_network for a container's private network"));
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads and a short request timeout: a scrape is small, and a
    // client that stalls must not hold the service's threads.
    exposer = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", address, "num_threads", "2",
                                 "request_timeout_ms", "5000"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what(),
                     " (port in use, or not an address of this machine)"));
  }
  std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty() || ports[0] <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": not listening"));
  }
  exposer->RegisterCollectable(registry);
  std::string host = address.substr(0, colon);
  return std::unique_ptr<MetricsExporter>(
      new MetricsExporter(std::move(exposer), std::move(host), ports[0]));
}

std::string MetricsExporter::url() const {
  return absl::StrCat("http://", host_, ":", port_, "/metrics");
}

}  // namespace sidecar
