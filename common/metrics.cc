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

void ScrapeTimeGauges::Add(Source source) {
  absl::MutexLock lock(&mu_);
  sources_.push_back(std::move(source));
}

void ScrapeTimeGauges::RemoveAll() {
  absl::MutexLock lock(&mu_);
  sources_.clear();
}

std::vector<prometheus::MetricFamily> ScrapeTimeGauges::Collect() const {
  // Held while the sources run, so that RemoveAll waits for a scrape in
  // progress before what they read goes away.
  absl::MutexLock lock(&mu_);
  std::vector<prometheus::MetricFamily> out;
  for (const Source& s : sources_) {
    for (prometheus::MetricFamily& f : s()) out.push_back(std::move(f));
  }
  return out;
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help,
                                     std::vector<GaugeSample> samples,
                                     prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  for (GaugeSample& s : samples) {
    prometheus::ClientMetric m;
    for (auto& [k, v] : s.labels) m.label.push_back({k, std::move(v)});
    m.gauge.value = s.value;
    m.counter.value = s.value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

ProcessMetricsSet::ProcessMetricsSet(std::shared_ptr<prometheus::Registry> r)
    : registry(std::move(r)),
      gauges(std::make_shared<ScrapeTimeGauges>()),
      grpc_server(GrpcMetrics::Side::kServer, *registry),
      grpc_client(GrpcMetrics::Side::kClient, *registry) {}

std::string BoundedLabel::Of(const std::string& value) {
  if (seen_.contains(value)) return value;
  if (seen_.size() >= max_) return "other";
  seen_.insert(value);
  return value;
}

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

void MetricsExporter::Serve(std::shared_ptr<prometheus::Collectable> c,
                            const std::string& uri) {
  if (exposer_ == nullptr) return;
  exposer_->RegisterCollectable(c, uri);
  more_.push_back(std::move(c));
}

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& address, bool allow_network,
    std::shared_ptr<prometheus::Registry> registry,
    std::shared_ptr<ScrapeTimeGauges> gauges) {
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
  if (gauges != nullptr) exposer->RegisterCollectable(gauges);
  std::string host = address.substr(0, colon);
  auto e = std::unique_ptr<MetricsExporter>(
      new MetricsExporter(std::move(exposer), std::move(host), ports[0]));
  e->registry_ = std::move(registry);
  e->gauges_ = std::move(gauges);
  return e;
}

std::string MetricsExporter::url() const {
  return absl::StrCat("http://", host_, ":", port_, "/metrics");
}

}  // namespace sidecar
