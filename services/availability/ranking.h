// Ranking of sources for a fetch: online holders, best first, by the time a
// fetch is expected to take: round-trip plus size over throughput. Throughput
// is measured by transfers (ReportTransfer); until a device has a
// measurement, round-trip decides. A device that sent corrupt bytes is
// demoted behind every other for a while.
#ifndef SIDECAR_SERVICES_AVAILABILITY_RANKING_H_
#define SIDECAR_SERVICES_AVAILABILITY_RANKING_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/uuid.h"

namespace sidecar::availability {

struct Candidate {
  Uuid device;
  bool online = false;
  absl::Duration rtt = absl::ZeroDuration();  // zero: not measured
  double throughput = 0;                      // bytes/s; 0: not measured
  bool demoted = false;
  uint64_t size = 0;
};

// Throughput assumed for a device never measured, so that a measured slow
// device and an unmeasured one compare sensibly.
inline constexpr double kAssumedThroughput = 50e6;
// Round-trip assumed for a device never measured.
inline constexpr absl::Duration kAssumedRtt = absl::Milliseconds(50);

// Expected time to fetch `c.size` bytes from `c`.
absl::Duration ExpectedFetchTime(const Candidate& c);

// Indices of the online candidates, best first. Ties go to the lower
// round-trip, then to the lower device id, so answers are deterministic.
std::vector<size_t> RankSources(absl::Span<const Candidate> candidates);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_RANKING_H_
