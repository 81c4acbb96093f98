// A process's Prometheus metrics, and the HTTP listener that exports them.
//
// A service turns metrics on once, at start-up, before it makes servers or
// channels (EnableProcessMetrics); from then on every ServerHost and every
// channel made by transport.h records gRPC metrics (grpc_metrics.h), and
// the service's own code registers its metrics in ProcessMetrics()->
// registry. Without it nothing is recorded and the gRPC paths carry no
// interceptor at all.
//
// The exporter serves GET /metrics (Prometheus text format) with
// prometheus-cpp's civetweb server. Like the local API it stays off the
// network unless told otherwise: a loopback address by default, any other
// only with allow_network (a container's private network, where a
// Prometheus of the same compose project scrapes it). It never listens
// beside the peer API.
#ifndef SIDECAR_COMMON_METRICS_H_
#define SIDECAR_COMMON_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_metrics.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace sidecar {

// Gauges whose values are read at scrape time (peers online, jobs by
// state, store use): each source is a function that returns its families.
// Sources run on the exporter's thread, one scrape at a time per source
// list; they must be quick and thread-safe, and stay valid until the
// exporter stops (RemoveAll before what they read goes away).
class ScrapeTimeGauges final : public prometheus::Collectable {
 public:
  using Source = std::function<std::vector<prometheus::MetricFamily>()>;

  void Add(Source source) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops every source (a service shutting down).
  void RemoveAll() ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<prometheus::MetricFamily> Collect() const override
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::vector<Source> sources_ ABSL_GUARDED_BY(mu_);
};

// One family for ScrapeTimeGauges: `samples` are label sets with their
// values. A gauge, or a counter (kept elsewhere, read at scrape time).
struct GaugeSample {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};
prometheus::MetricFamily GaugeFamily(
    std::string name, std::string help, std::vector<GaugeSample> samples,
    prometheus::MetricType type = prometheus::MetricType::Gauge);

// Label values that come from outside (peers' device ids): the first `max`
// distinct values keep their own series, later ones share "other", so that
// nothing a peer sends can grow a family past max + 1 series. Not
// thread-safe: its owner guards it.
class BoundedLabel {
 public:
  explicit BoundedLabel(size_t max) : max_(max) {}
  // `value` itself, or "other" once `max` other values were given.
  std::string Of(const std::string& value);

 private:
  const size_t max_;
  absl::flat_hash_set<std::string> seen_;
};

struct ProcessMetricsSet {
  std::shared_ptr<prometheus::Registry> registry;
  std::shared_ptr<ScrapeTimeGauges> gauges;
  GrpcMetrics grpc_server;
  GrpcMetrics grpc_client;

  explicit ProcessMetricsSet(std::shared_ptr<prometheus::Registry> r);
};

// Makes the process's metrics (once; later calls return the same). Call in
// main() before any server or channel exists.
ProcessMetricsSet* EnableProcessMetrics();
// The process's metrics, or null if they were never enabled.
ProcessMetricsSet* ProcessMetrics();

// GET http://ADDRESS/metrics for one registry.
class MetricsExporter {
 public:
  // Listens on `address` (host:port, port 0 for any). A non-loopback host
  // needs `allow_network`, else INVALID_ARGUMENT; a port in use is
  // UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(
      const std::string& address, bool allow_network,
      std::shared_ptr<prometheus::Registry> registry,
      std::shared_ptr<ScrapeTimeGauges> gauges = nullptr);
  // Stops serving (StopSoon's, if it has not ended yet, is waited for).
  ~MetricsExporter();

  // Starts stopping in the background and returns at once: civetweb's
  // stop takes up to 2 s (its poll quantum), which a service draining
  // calls meanwhile need not wait for.
  void StopSoon();

  // Serves `collectable` at `uri` too ("/members/metrics"), until the
  // exporter stops. Call before it is scraped there.
  void Serve(std::shared_ptr<prometheus::Collectable> collectable,
             const std::string& uri);

  int port() const { return port_; }
  // "http://127.0.0.1:PORT/metrics", for the log.
  std::string url() const;

 private:
  MetricsExporter(std::unique_ptr<prometheus::Exposer> exposer,
                  std::string host, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  // Kept alive while exposer_ holds weak pointers to them.
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ScrapeTimeGauges> gauges_;
  std::vector<std::shared_ptr<prometheus::Collectable>> more_;
  std::thread stopping_;  // StopSoon's; owns exposer_ while it runs
  std::string host_;
  int port_;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_METRICS_H_
