#include "common/metrics_wire.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/check_names.h"

namespace sidecar {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricType;

v1::MetricType TypeToProto(MetricType t) {
  switch (t) {
    case MetricType::Counter:
      return v1::METRIC_TYPE_COUNTER;
    case MetricType::Gauge:
      return v1::METRIC_TYPE_GAUGE;
    case MetricType::Summary:
      return v1::METRIC_TYPE_SUMMARY;
    case MetricType::Histogram:
      return v1::METRIC_TYPE_HISTOGRAM;
    default:
      return v1::METRIC_TYPE_UNTYPED;
  }
}

void MetricToProto(MetricType type, const ClientMetric& m, v1::Metric* out) {
  for (const ClientMetric::Label& l : m.label) {
    v1::LabelPair* p = out->add_labels();
    p->set_name(l.name);
    p->set_value(l.value);
  }
  switch (type) {
    case MetricType::Counter:
      out->set_value(m.counter.value);
      break;
    case MetricType::Gauge:
      out->set_value(m.gauge.value);
      break;
    case MetricType::Summary:
      out->set_sample_count(m.summary.sample_count);
      out->set_sample_sum(m.summary.sample_sum);
      for (const ClientMetric::Quantile& q : m.summary.quantile) {
        v1::Quantile* p = out->add_quantiles();
        p->set_quantile(q.quantile);
        p->set_value(q.value);
      }
      break;
    case MetricType::Histogram:
      out->set_sample_count(m.histogram.sample_count);
      out->set_sample_sum(m.histogram.sample_sum);
      for (const ClientMetric::Bucket& b : m.histogram.bucket) {
        v1::Bucket* p = out->add_buckets();
        p->set_upper_bound(b.upper_bound);
        p->set_cumulative_count(b.cumulative_count);
      }
      break;
    default:
      out->set_value(m.untyped.value);
  }
}

bool HasControlCharacter(const std::string& s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

// Counts samples against the limit as they are decoded.
class Budget {
 public:
  explicit Budget(size_t samples) : left_(samples) {}
  absl::Status Take(size_t n) {
    if (n > left_) {
      return absl::ResourceExhaustedError(
          "the answer holds more samples than a member's metrics may");
    }
    left_ -= n;
    return absl::OkStatus();
  }

 private:
  size_t left_;
};

absl::Status CheckLabels(const v1::Metric& m, const MetricsWireLimits& limits) {
  if (static_cast<size_t>(m.labels_size()) > limits.labels) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a series has ", m.labels_size(), " labels (at most ",
                     limits.labels, ")"));
  }
  std::set<std::string> seen;
  for (const v1::LabelPair& l : m.labels()) {
    if (l.name().size() > limits.name_bytes ||
        !prometheus::CheckLabelName(l.name())) {
      return absl::InvalidArgumentError("a label name is not a valid one");
    }
    if (std::find(limits.reserved_labels.begin(), limits.reserved_labels.end(),
                  l.name()) != limits.reserved_labels.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label '", l.name(), "' is the receiver's own"));
    }
    if (l.value().size() > limits.label_value_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("the value of label '", l.name(), "' is too long"));
    }
    if (!seen.insert(l.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("label '", l.name(), "' is given twice"));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeHistogram(const v1::Metric& m,
                             const MetricsWireLimits& limits,
                             ClientMetric::Histogram* out) {
  const int n = m.buckets_size();
  if (n == 0 || static_cast<size_t>(n) > limits.buckets) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a histogram has ", n, " buckets (1 to ", limits.buckets, ")"));
  }
  double bound = -std::numeric_limits<double>::infinity();
  uint64_t count = 0;
  for (int i = 0; i < n; ++i) {
    const v1::Bucket& b = m.buckets(i);
    if (std::isnan(b.upper_bound()) || (i > 0 && b.upper_bound() <= bound) ||
        b.cumulative_count() < count) {
      return absl::InvalidArgumentError(
          "a histogram's buckets are not in order");
    }
    bound = b.upper_bound();
    count = b.cumulative_count();
    out->bucket.push_back({b.cumulative_count(), b.upper_bound()});
  }
  if (!std::isinf(bound) || m.sample_count() != count) {
    return absl::InvalidArgumentError(
        "a histogram's last bucket is not +Inf holding every sample");
  }
  out->sample_count = m.sample_count();
  out->sample_sum = m.sample_sum();
  return absl::OkStatus();
}

absl::Status DecodeSummary(const v1::Metric& m, const MetricsWireLimits& limits,
                           ClientMetric::Summary* out) {
  if (static_cast<size_t>(m.quantiles_size()) > limits.quantiles) {
    return absl::InvalidArgumentError(
        absl::StrCat("a summary has ", m.quantiles_size(),
                     " quantiles (at most ", limits.quantiles, ")"));
  }
  for (const v1::Quantile& q : m.quantiles()) {
    if (!(q.quantile() >= 0 && q.quantile() <= 1)) {
      return absl::InvalidArgumentError("a quantile is not between 0 and 1");
    }
    out->quantile.push_back({q.quantile(), q.value()});
  }
  out->sample_count = m.sample_count();
  out->sample_sum = m.sample_sum();
  return absl::OkStatus();
}

absl::Status DecodeMetric(MetricType type, const v1::Metric& m,
                          const MetricsWireLimits& limits, Budget* budget,
                          ClientMetric* out) {
  if (absl::Status s = CheckLabels(m, limits); !s.ok()) return s;
  for (const v1::LabelPair& l : m.labels()) {
    out->label.push_back({l.name(), l.value()});
  }
  std::sort(out->label.begin(), out->label.end());
  switch (type) {
    case MetricType::Counter:
      if (!(m.value() >= 0)) {
        return absl::InvalidArgumentError("a counter is negative or NaN");
      }
      out->counter.value = m.value();
      return budget->Take(1);
    case MetricType::Gauge:
      out->gauge.value = m.value();
      return budget->Take(1);
    case MetricType::Summary:
      if (absl::Status s = DecodeSummary(m, limits, &out->summary); !s.ok()) {
        return s;
      }
      return budget->Take(2 + out->summary.quantile.size());
    case MetricType::Histogram:
      if (absl::Status s = DecodeHistogram(m, limits, &out->histogram);
          !s.ok()) {
        return s;
      }
      return budget->Take(2 + out->histogram.bucket.size());
    default:
      out->untyped.value = m.value();
      return budget->Take(1);
  }
}

absl::StatusOr<MetricType> TypeFromProto(v1::MetricType t) {
  switch (t) {
    case v1::METRIC_TYPE_UNTYPED:
      return MetricType::Untyped;
    case v1::METRIC_TYPE_COUNTER:
      return MetricType::Counter;
    case v1::METRIC_TYPE_GAUGE:
      return MetricType::Gauge;
    case v1::METRIC_TYPE_SUMMARY:
      return MetricType::Summary;
    case v1::METRIC_TYPE_HISTOGRAM:
      return MetricType::Histogram;
    default:
      return absl::InvalidArgumentError("unknown metric type");
  }
}

absl::Status DecodeFamily(const v1::MetricFamily& f,
                          const MetricsWireLimits& limits, Budget* budget,
                          prometheus::MetricFamily* out) {
  absl::StatusOr<MetricType> type = TypeFromProto(f.type());
  if (!type.ok()) return type.status();
  if (f.help().size() > limits.help_bytes || HasControlCharacter(f.help())) {
    return absl::InvalidArgumentError(
        "its help is too long or holds a control character");
  }
  out->name = f.name();
  out->help = f.help();
  out->type = *type;
  std::set<std::vector<ClientMetric::Label>> series;
  for (const v1::Metric& m : f.metrics()) {
    ClientMetric cm;
    if (absl::Status s = DecodeMetric(*type, m, limits, budget, &cm); !s.ok()) {
      return s;
    }
    if (!series.insert(cm.label).second) {
      return absl::InvalidArgumentError("a series is given twice");
    }
    out->metric.push_back(std::move(cm));
  }
  return absl::OkStatus();
}

}  // namespace

void FamiliesToProto(const std::vector<prometheus::MetricFamily>& families,
                     v1::ScrapeResponse* out) {
  for (const prometheus::MetricFamily& f : families) {
    v1::MetricFamily* p = out->add_families();
    p->set_name(f.name);
    p->set_help(f.help);
    p->set_type(TypeToProto(f.type));
    for (const ClientMetric& m : f.metric) {
      MetricToProto(f.type, m, p->add_metrics());
    }
  }
}

absl::StatusOr<std::vector<prometheus::MetricFamily>> FamiliesFromProto(
    const v1::ScrapeResponse& in, const MetricsWireLimits& limits) {
  if (static_cast<size_t>(in.families_size()) > limits.families) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the answer holds ", in.families_size(),
                     " metric families (at most ", limits.families, ")"));
  }
  Budget budget(limits.samples);
  std::set<std::string> names;
  std::vector<prometheus::MetricFamily> out;
  out.reserve(in.families_size());
  for (const v1::MetricFamily& f : in.families()) {
    if (f.name().size() > limits.name_bytes ||
        !prometheus::CheckMetricName(f.name())) {
      return absl::InvalidArgumentError(
          "a metric family's name is not a valid one");
    }
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric family ", f.name(), " is given twice"));
    }
    prometheus::MetricFamily family;
    if (absl::Status s = DecodeFamily(f, limits, &budget, &family); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("metric family ", f.name(),
                                                 ": ", s.message()));
    }
    out.push_back(std::move(family));
  }
  return out;
}

}  // namespace sidecar
