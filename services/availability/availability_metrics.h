// AvailabilityMetrics: what the availability service counts for Prometheus
// (the gRPC series are common/grpc_metrics.h's):
//
//   sidecar_gossip_rounds_total{result}   exchanges this device pulled: ok,
//                                         failed (unreachable, timed out),
//                                         refused (the peer sent bad data
//                                         or more than this device accepts)
//   sidecar_gossip_round_seconds          their duration (histogram)
//   sidecar_gossip_received_bytes_total   bytes of their answers
//   sidecar_gossip_applied_total{kind}    snapshots and deltas applied
//   sidecar_peer_rejected_total{device_id,code}
//                                         answers refused, per peer and why
//
// and, read at scrape time (AddScrapeTimeGauges):
//
//   sidecar_peer_up{device_id}            1 while the peer answers
//   sidecar_peers{state}                  members online and offline
//   sidecar_origin_entries{device_id}     live sidecars known per device
//                                         (this one included)
//
// device_id labels are members' ids (at most kMaxDevices series, then
// "other"), so nothing a peer sends can grow them. Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_METRICS_H_
#define SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/member_metrics.h"
#include "common/metrics.h"
#include "common/uuid.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace sidecar::availability {

class PeerCache;
class PeerManager;
struct PeerStatus;

// What MemberMetricsRelay scrapes: both services of every member online
// (`peers`: PeerManager::List()), at the addresses its Hello gave.
std::vector<MemberEndpoint> MemberEndpointsOf(
    const std::vector<PeerStatus>& peers);

class AvailabilityMetrics {
 public:
  static constexpr size_t kMaxDevices = 64;

  explicit AvailabilityMetrics(prometheus::Registry& registry);

  // One exchange pulled from `peer` ended: `failure` is what the receiver
  // refused (OK if nothing), `transport` the call's own status.
  struct Round {
    absl::Duration duration;
    uint64_t bytes = 0;
    size_t snapshots = 0;
    size_t deltas = 0;
  };
  void RoundEnded(const Uuid& peer, const Round& round,
                  const absl::Status& failure, const absl::Status& transport)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Registers the scrape-time gauges of `peers` and `cache`. They must
  // outlive the exporter, or gauges->RemoveAll() runs first.
  static void AddScrapeTimeGauges(ScrapeTimeGauges* gauges,
                                  const PeerManager* peers,
                                  const PeerCache* cache);

 private:
  // `id` as a label value: itself for the first kMaxDevices ids seen,
  // then "other".
  std::string DeviceLabel(const Uuid& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  prometheus::Family<prometheus::Counter>& rounds_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Counter>& applied_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Histogram* round_seconds_;
  prometheus::Counter* received_bytes_;

  absl::Mutex mu_;
  BoundedLabel device_labels_ ABSL_GUARDED_BY(mu_){kMaxDevices};
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_METRICS_H_
