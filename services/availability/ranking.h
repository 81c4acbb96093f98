// Ranking of sources for a fetch: online holders, best first. Holders of the
// newest generator version come first (generator_version.h). Among those,
// by the time a fetch is expected to take: round-trip plus size over
// throughput. Throughput is measured by transfers (ReportTransfer); until a
// device has a measurement, round-trip decides. A device that sent corrupt
// bytes is demoted behind every other of its version for a while. Holders
// of the same bytes (sha256 and size) are kept together, so that a fetch
// that takes the first source's bytes from every source that agrees with it
// takes them from the best sources holding them.
#ifndef SIDECAR_SERVICES_AVAILABILITY_RANKING_H_
#define SIDECAR_SERVICES_AVAILABILITY_RANKING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/uuid.h"

namespace sidecar::availability {

struct Candidate {
  Uuid device;
  bool online = false;
  absl::Duration rtt = absl::ZeroDuration();  // zero: not measured
  double throughput = 0;                      // bytes/s; 0: not measured
  bool demoted = false;
  uint64_t size = 0;
  Sha256Digest sha256{};
  absl::string_view generator_version;  // "" if none
};

// Throughput assumed for a device never measured, so that a measured slow
// device and an unmeasured one compare sensibly.
inline constexpr double kAssumedThroughput = 50e6;
// Round-trip assumed for a device never measured.
inline constexpr absl::Duration kAssumedRtt = absl::Milliseconds(50);

// Expected time to fetch `c.size` bytes from `c`.
absl::Duration ExpectedFetchTime(const Candidate& c);

// Indices of the online candidates, best first:
//  1. holders of a version no other online candidate has a newer one of
//     (IsNewerGeneratorVersion), then the rest;
//  2. within each, groups of the same bytes (sha256 and size), the group
//     of the best holder first;
//  3. within a group, by demotion, then expected fetch time.
// Ties go to the lower round-trip, then to the lower device id, so answers
// are deterministic.
std::vector<size_t> RankSources(absl::Span<const Candidate> candidates);

// One holder's copy, as ConflictingVersions looks at it.
struct HeldCopy {
  absl::string_view generator_version;
  Sha256Digest sha256{};
  uint64_t size = 0;
};

// The non-empty generator versions (same string) of which `copies` hold
// different bytes (sha256 or size), sorted, each once. Two generators that
// claim one version yet disagree: nothing says which is right.
std::vector<std::string> ConflictingVersions(absl::Span<const HeldCopy> copies);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_RANKING_H_
