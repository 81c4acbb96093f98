// Fuzz target: FamiliesFromProto (common/metrics_wire.cc), which checks a
// member's metrics answer before the relay (common/member_metrics.cc)
// writes it out in Prometheus's text format.
// Properties: an answer is taken or refused with INVALID_ARGUMENT or
// RESOURCE_EXHAUSTED; what is taken writes as text in which every line is
// a comment the serializer made or one sample, one line per sample (no
// name, help or label can add a line); taken answers encode and decode
// again to the same text.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/metrics_wire.h"
#include "prometheus/text_serializer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

std::string Text(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

size_t Samples(const std::vector<prometheus::MetricFamily>& families) {
  size_t n = 0;
  for (const prometheus::MetricFamily& f : families) {
    for (const prometheus::ClientMetric& m : f.metric) {
      switch (f.type) {
        case prometheus::MetricType::Histogram:
          n += 2 + m.histogram.bucket.size();
          break;
        case prometheus::MetricType::Summary:
          n += 2 + m.summary.quantile.size();
          break;
        default:
          n += 1;
      }
    }
  }
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  v1::ScrapeResponse in;
  if (!in.ParseFromArray(data, static_cast<int>(size))) return 0;
  MetricsWireLimits limits;
  limits.reserved_labels = {"member", "service"};
  absl::StatusOr<std::vector<prometheus::MetricFamily>> families =
      FamiliesFromProto(in, limits);
  if (!families.ok()) {
    FUZZ_CHECK(families.status().code() == absl::StatusCode::kInvalidArgument ||
               families.status().code() ==
                   absl::StatusCode::kResourceExhausted);
    return 0;
  }
  const std::string text = Text(*families);
  size_t samples = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      FUZZ_CHECK(absl::StartsWith(line, "# HELP ") ||
                 absl::StartsWith(line, "# TYPE "));
      continue;
    }
    const char c = line[0];
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
               c == ':');
    ++samples;
  }
  FUZZ_CHECK(samples == Samples(*families));
  for (const prometheus::MetricFamily& f : *families) {
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const prometheus::ClientMetric::Label& l : m.label) {
        FUZZ_CHECK(l.name != "member" && l.name != "service");
      }
    }
  }
  v1::ScrapeResponse again;
  FamiliesToProto(*families, &again);
  absl::StatusOr<std::vector<prometheus::MetricFamily>> twice =
      FamiliesFromProto(again, limits);
  FUZZ_CHECK(twice.ok());
  FUZZ_CHECK(Text(*twice) == text);
  return 0;
}
