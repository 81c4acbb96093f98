// Metrics under the pairing rules: a service's metrics for the other
// members of its library, and their relay into one member's exporter.
//
// With --metrics_members, each service serves sidecar.v1.MemberMetrics on
// its peer listener, where only members get in (mutual TLS, checked on every
// call, like any peer RPC). The availability service also relays, at
// /members/metrics of its own metrics listener, what every member online
// answers, its availability and transfer services both, each series
// labelled with `member` (the device id) and `service`. So a Prometheus on
// one device (the home server) sees the whole library through that
// device's loopback or private listener, and no metrics port is ever on
// the network: what crosses it goes between members over their TLS.
//
//   MemberMetricsService service(ProcessMetrics());
//   peer_host.AddService(&service);
//   auto relay = std::make_shared<MemberMetricsRelay>(endpoints, &channels);
//   exporter->AddCollectable(relay, "/members/metrics");
#ifndef SIDECAR_COMMON_MEMBER_METRICS_H_
#define SIDECAR_COMMON_MEMBER_METRICS_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "common/metrics_wire.h"
#include "common/peer_channels.h"
#include "common/uuid.h"
#include "prometheus/collectable.h"
#include "sidecar/v1/metrics.grpc.pb.h"

namespace sidecar {

// Serves this process's metrics (its registry and scrape-time gauges) to
// members. Answers are shared for `max_age`, so that members asking often
// cost no more than one scrape a period. A sync service: the scrape-time
// gauges may query the database.
class MemberMetricsService final : public v1::MemberMetrics::Service {
 public:
  // `metrics` must outlive this.
  explicit MemberMetricsService(ProcessMetricsSet* metrics,
                                absl::Duration max_age = absl::Seconds(1));

  grpc::Status Scrape(grpc::ServerContext* ctx, const v1::ScrapeRequest* req,
                      v1::ScrapeResponse* resp) override
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  ProcessMetricsSet* const metrics_;
  const absl::Duration max_age_;
  absl::Mutex mu_;
  absl::Time taken_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  v1::ScrapeResponse answer_ ABSL_GUARDED_BY(mu_);
};

// One service of one member to scrape.
struct MemberEndpoint {
  Uuid device;
  std::string service;  // "availability" or "transfer": the label's value
  std::string address;  // its peer listener
};

// A Collectable that scrapes members when scraped itself: at most
// `options.parallel` calls at once, each with `options.timeout`, all within
// `options.budget`; answers checked (metrics_wire.h) and merged by family.
// Besides their series it reports, per endpoint, sidecar_member_scrape_up
// (1 if its answer was taken) and sidecar_member_scrape_seconds.
class MemberMetricsRelay final : public prometheus::Collectable {
 public:
  struct Options {
    absl::Duration timeout = absl::Seconds(2);
    absl::Duration budget = absl::Seconds(8);
    int parallel = 8;
    // Samples taken from all members together; answers past it are left
    // out (up 0).
    size_t samples = 200000;
  };
  using Endpoints = std::function<std::vector<MemberEndpoint>()>;

  // `channels` must outlive this. `endpoints` lists whom to scrape now
  // (members online; at most 128 are taken).
  MemberMetricsRelay(Endpoints endpoints, PeerChannels* channels,
                     Options options);
  MemberMetricsRelay(Endpoints endpoints, PeerChannels* channels)
      : MemberMetricsRelay(std::move(endpoints), channels, Options()) {}

  std::vector<prometheus::MetricFamily> Collect() const override
      ABSL_LOCKS_EXCLUDED(collect_mu_);

 private:
  const Endpoints endpoints_;
  PeerChannels* const channels_;
  const Options options_;
  // One relay scrape at a time; the last error per endpoint, logged when
  // it changes.
  mutable absl::Mutex collect_mu_;
  mutable std::map<std::string, std::string> last_error_
      ABSL_GUARDED_BY(collect_mu_);
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_MEMBER_METRICS_H_
