// Prometheus metric families to and from sidecar.v1.ScrapeResponse
// (metrics.proto), the form in which a service gives its metrics to the
// other members of its library.
//
// Decoding treats the answer as hostile: every name is checked as
// Prometheus checks it, HELP text may hold no control character (the text
// format does not escape it: a newline would add lines of the sender's
// choosing), label sets are unique within a family, histograms and
// summaries are well formed, and the whole is bounded (MetricsWireLimits).
// A bad answer is refused whole, with the first thing wrong.
#ifndef SIDECAR_COMMON_METRICS_WIRE_H_
#define SIDECAR_COMMON_METRICS_WIRE_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/metric_family.h"
#include "sidecar/v1/metrics.pb.h"

namespace sidecar {

struct MetricsWireLimits {
  size_t families = 1024;
  size_t samples = 50000;  // over all families; a bucket or quantile is one
  size_t labels = 16;      // per series
  size_t name_bytes = 200;
  size_t label_value_bytes = 256;
  size_t help_bytes = 1024;
  size_t buckets = 64;  // per histogram series, +Inf included
  size_t quantiles = 16;
  // Label names the receiver adds itself, which no series may carry.
  std::vector<std::string> reserved_labels;
};

// Encodes `families` (a registry's Collect()). Timestamps are dropped: the
// scraper stamps what it relays.
void FamiliesToProto(const std::vector<prometheus::MetricFamily>& families,
                     v1::ScrapeResponse* out);

// Decodes and checks an answer. INVALID_ARGUMENT names the family and what
// is wrong with it; RESOURCE_EXHAUSTED says which limit was passed.
absl::StatusOr<std::vector<prometheus::MetricFamily>> FamiliesFromProto(
    const v1::ScrapeResponse& in, const MetricsWireLimits& limits);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_METRICS_WIRE_H_
