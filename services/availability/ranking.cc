#include "services/availability/ranking.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "services/availability/generator_version.h"

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
  // Tier 1: some other online holder has a newer version. Holders are few
  // (members of a library, at most 256), so the quadratic pass is cheap.
  std::vector<int> tier(candidates.size(), 0);
  for (size_t i : out) {
    for (size_t j : out) {
      if (IsNewerGeneratorVersion(candidates[j].generator_version,
                                  candidates[i].generator_version)) {
        tier[i] = 1;
        break;
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [&](size_t a, size_t b) { return rank_key(a) < rank_key(b); });
  // Each holder's group: (tier, bytes); a group ranks as its best holder,
  // which the sorted order meets first.
  using GroupKey = std::tuple<int, Sha256Digest, uint64_t>;
  absl::flat_hash_map<GroupKey, size_t> group_rank;
  std::vector<size_t> position(candidates.size(), 0);
  for (size_t p = 0; p < out.size(); ++p) {
    const Candidate& c = candidates[out[p]];
    group_rank.try_emplace(GroupKey(tier[out[p]], c.sha256, c.size), p);
    position[out[p]] = p;
  }
  auto final_key = [&](size_t i) {
    const Candidate& c = candidates[i];
    return std::make_tuple(
        tier[i], group_rank[GroupKey(tier[i], c.sha256, c.size)], position[i]);
  };
  std::sort(out.begin(), out.end(),
            [&](size_t a, size_t b) { return final_key(a) < final_key(b); });
  return out;
}

std::vector<std::string> ConflictingVersions(
    absl::Span<const HeldCopy> copies) {
  std::vector<std::string> out;
  for (size_t i = 0; i < copies.size(); ++i) {
    const HeldCopy& a = copies[i];
    if (a.generator_version.empty()) continue;
    for (size_t j = i + 1; j < copies.size(); ++j) {
      const HeldCopy& b = copies[j];
      if (b.generator_version == a.generator_version &&
          (b.sha256 != a.sha256 || b.size != a.size)) {
        out.emplace_back(a.generator_version);
        break;
      }
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace sidecar::availability
