#include "services/availability/availability_metrics.h"

#include <utility>
#include <vector>

#include "services/availability/peer_cache.h"
#include "services/availability/peer_manager.h"

namespace sidecar::availability {
namespace {

// A round on a quiet library is a few ms; a first snapshot of a million
// entries, seconds.
const prometheus::Histogram::BucketBoundaries& RoundBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *b;
}

// "InvalidArgument", ...: go-grpc-prometheus's names of the codes.
std::string CodeLabel(const absl::Status& s) {
  return GrpcCodeName(static_cast<int>(s.code()));
}

}  // namespace

AvailabilityMetrics::AvailabilityMetrics(prometheus::Registry& registry)
    : rounds_(prometheus::BuildCounter()
                  .Name("sidecar_gossip_rounds_total")
                  .Help("Exchanges this device pulled from a peer, by result "
                        "(ok; failed: unreachable or timed out; refused: the "
                        "peer sent bad data or more than this device "
                        "accepts).")
                  .Register(registry)),
      seconds_(prometheus::BuildHistogram()
                   .Name("sidecar_gossip_round_seconds")
                   .Help("Duration of the exchanges this device pulled.")
                   .Register(registry)),
      bytes_(prometheus::BuildCounter()
                 .Name("sidecar_gossip_received_bytes_total")
                 .Help("Bytes of the exchanges' answers (messages, as "
                       "encoded).")
                 .Register(registry)),
      applied_(prometheus::BuildCounter()
                   .Name("sidecar_gossip_applied_total")
                   .Help("Devices' states applied from exchanges: whole "
                         "snapshots, or deltas.")
                   .Register(registry)),
      rejected_(prometheus::BuildCounter()
                    .Name("sidecar_peer_rejected_total")
                    .Help("Exchange answers refused, by the peer that sent "
                          "them and the reason's status code.")
                    .Register(registry)),
      round_seconds_(&seconds_.Add({}, RoundBuckets())),
      received_bytes_(&bytes_.Add({})) {
  for (const char* r : {"ok", "failed", "refused"})
    rounds_.Add({{"result", r}});
  for (const char* k : {"snapshot", "delta"}) applied_.Add({{"kind", k}});
}

std::string AvailabilityMetrics::DeviceLabel(const Uuid& id) {
  return device_labels_.Of(id.ToString());
}

void AvailabilityMetrics::RoundEnded(const Uuid& peer, const Round& round,
                                     const absl::Status& failure,
                                     const absl::Status& transport) {
  const char* result =
      !failure.ok() ? "refused" : (transport.ok() ? "ok" : "failed");
  rounds_.Add({{"result", result}}).Increment();
  round_seconds_->Observe(absl::ToDoubleSeconds(round.duration));
  received_bytes_->Increment(static_cast<double>(round.bytes));
  if (round.snapshots > 0) {
    applied_.Add({{"kind", "snapshot"}})
        .Increment(static_cast<double>(round.snapshots));
  }
  if (round.deltas > 0) {
    applied_.Add({{"kind", "delta"}})
        .Increment(static_cast<double>(round.deltas));
  }
  if (!failure.ok()) {
    absl::MutexLock lock(&mu_);
    rejected_
        .Add({{"device_id", DeviceLabel(peer)}, {"code", CodeLabel(failure)}})
        .Increment();
  }
}

void AvailabilityMetrics::AddScrapeTimeGauges(ScrapeTimeGauges* gauges,
                                              const PeerManager* peers,
                                              const PeerCache* cache) {
  gauges->Add([peers, cache] {
    std::vector<GaugeSample> up;
    uint64_t online = 0, offline = 0;
    for (const PeerStatus& p : peers->List()) {
      if (!p.device_id || up.size() >= kMaxDevices) continue;
      up.push_back(
          {{{"device_id", p.device_id->ToString()}}, p.online ? 1.0 : 0.0});
      (p.online ? online : offline) += 1;
    }
    std::vector<GaugeSample> entries;
    for (const PeerCache::OriginView& v : cache->Views()) {
      if (entries.size() >= kMaxDevices) break;
      entries.push_back({{{"device_id", v.info.device_id.ToString()}},
                         static_cast<double>(v.live_count)});
    }
    std::vector<prometheus::MetricFamily> out;
    out.push_back(GaugeFamily(
        "sidecar_peer_up",
        "1 while the peer (a member this device gossips with) answers, else "
        "0.",
        std::move(up)));
    out.push_back(GaugeFamily("sidecar_peers",
                              "Peers this device gossips with, by state.",
                              {{{{"state", "online"}}, double(online)},
                               {{{"state", "offline"}}, double(offline)}}));
    out.push_back(GaugeFamily(
        "sidecar_origin_entries",
        "Live sidecars this device knows each device (itself included) "
        "to hold.",
        std::move(entries)));
    return out;
  });
}

std::vector<MemberEndpoint> MemberEndpointsOf(
    const std::vector<PeerStatus>& peers) {
  std::vector<MemberEndpoint> out;
  for (const PeerStatus& p : peers) {
    if (!p.device_id || !p.online) continue;
    out.push_back({*p.device_id, "availability", p.address});
    if (!p.transfer_address.empty()) {
      out.push_back({*p.device_id, "transfer", p.transfer_address});
    }
  }
  return out;
}

}  // namespace sidecar::availability
