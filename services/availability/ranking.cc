#include "services/availability/ranking.h"

#include <algorithm>
#include <tuple>

namespace sidecar::availability {

absl::Duration ExpectedFetchTime(const Candidate& c) {
  absl::Duration rtt = c.rtt > absl::ZeroDuration() ? c.rtt : kAssumedRtt;
  double tput = c.throughput > 0 ? c.throughput : kAssumedThroughput;
  return rtt + absl::Seconds(static_cast<double>(c.size) / tput);
}

std::vector<size_t> RankSources(absl::Span<const Candidate> candidates) {
  std::vector<size_t> out;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i].online) out.push_back(i);
  }
  auto rank_key = [&](size_t i) {
    const Candidate& c = candidates[i];
    return std::make_tuple(c.demoted, ExpectedFetchTime(c),
                           c.rtt > absl::ZeroDuration() ? c.rtt : kAssumedRtt,
                           c.device);
  };
  std::sort(out.begin(), out.end(),
            [&](size_t a, size_t b) { return rank_key(a) < rank_key(b); });
  return out;
}

}  // namespace sidecar::availability
