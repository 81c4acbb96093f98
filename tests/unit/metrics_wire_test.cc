// Metric families to a member's answer and back (common/metrics_wire.h):
// a real registry's families come back as the same text, and every way
// an answer can be wrong, or too big, is refused with what is wrong.
#include "common/metrics_wire.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/summary.h"
#include "prometheus/text_serializer.h"

namespace sidecar {
namespace {

std::string Text(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

MetricsWireLimits Limits() {
  MetricsWireLimits l;
  l.reserved_labels = {"member", "service"};
  return l;
}

TEST(MetricsWireTest, ARegistryComesBackAsTheSameText) {
  prometheus::Registry registry;
  auto& calls = prometheus::BuildCounter()
                    .Name("grpc_server_handled_total")
                    .Help("calls")
                    .Register(registry);
  calls.Add({{"grpc_method", "Read"}, {"grpc_code", "OK"}}).Increment(12);
  calls.Add({{"grpc_method", "Read"}, {"grpc_code", "NOT_FOUND"}}).Increment();
  prometheus::BuildGauge()
      .Name("sidecar_peers")
      .Help("peers")
      .Register(registry)
      .Add({{"state", "online"}})
      .Set(3);
  prometheus::BuildHistogram()
      .Name("sidecar_fetch_seconds")
      .Help("latency")
      .Register(registry)
      .Add({{"priority", "interactive"}},
           prometheus::Histogram::BucketBoundaries{0.1, 1, 10})
      .Observe(0.5);
  prometheus::BuildSummary()
      .Name("rpc_seconds")
      .Help("s")
      .Register(registry)
      .Add({}, prometheus::Summary::Quantiles{{0.5, 0.05}, {0.9, 0.01}})
      .Observe(2);
  const std::vector<prometheus::MetricFamily> families = registry.Collect();
  v1::ScrapeResponse wire;
  FamiliesToProto(families, &wire);
  ASSERT_EQ(wire.families_size(), 4);
  absl::StatusOr<std::vector<prometheus::MetricFamily>> back =
      FamiliesFromProto(wire, Limits());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Text(*back), Text(families));
  EXPECT_NE(Text(*back).find("grpc_server_handled_total{grpc_code=\"OK\","
                             "grpc_method=\"Read\"} 12"),
            std::string::npos)
      << Text(*back);
}

// One family with one gauge series labelled `label`=`value`.
v1::ScrapeResponse Gauge(const std::string& name, const std::string& label,
                         const std::string& value, double v = 1) {
  v1::ScrapeResponse r;
  v1::MetricFamily* f = r.add_families();
  f->set_name(name);
  f->set_type(v1::METRIC_TYPE_GAUGE);
  v1::Metric* m = f->add_metrics();
  v1::LabelPair* l = m->add_labels();
  l->set_name(label);
  l->set_value(value);
  m->set_value(v);
  return r;
}

void ExpectRefused(const v1::ScrapeResponse& r, absl::StatusCode code,
                   const std::string& says) {
  absl::StatusOr<std::vector<prometheus::MetricFamily>> got =
      FamiliesFromProto(r, Limits());
  ASSERT_FALSE(got.ok()) << r.DebugString();
  EXPECT_EQ(got.status().code(), code) << got.status();
  EXPECT_NE(got.status().message().find(says), std::string::npos)
      << got.status();
}

TEST(MetricsWireTest, BadNamesLabelsAndHelpAreRefused) {
  using absl::StatusCode::kInvalidArgument;
  ASSERT_TRUE(FamiliesFromProto(Gauge("ok_name", "l", "v"), Limits()).ok());
  ExpectRefused(Gauge("bad name", "l", "v"), kInvalidArgument, "name");
  ExpectRefused(Gauge("__reserved", "l", "v"), kInvalidArgument, "name");
  ExpectRefused(Gauge("x", "bad-label", "v"), kInvalidArgument, "label name");
  ExpectRefused(Gauge("x", "__name__", "v"), kInvalidArgument, "label name");
  ExpectRefused(Gauge("x", "member", "someone else"), kInvalidArgument,
                "label 'member' is the receiver's own");
  ExpectRefused(Gauge("x", "l", std::string(300, 'v')), kInvalidArgument,
                "too long");
  // A label value may hold anything printable: the serializer escapes it.
  absl::StatusOr<std::vector<prometheus::MetricFamily>> quoted =
      FamiliesFromProto(Gauge("x", "l", "a\"} 1\nz 2"), Limits());
  ASSERT_TRUE(quoted.ok()) << quoted.status();
  EXPECT_EQ(Text(*quoted), "# TYPE x gauge\nx{l=\"a\\\"} 1\\nz 2\"} 1\n");
  // Help is not escaped by the text format: a newline would add a line.
  v1::ScrapeResponse help = Gauge("x", "l", "v");
  help.mutable_families(0)->set_help("x\nfake_total 1e9");
  ExpectRefused(help, kInvalidArgument, "control character");
  v1::ScrapeResponse twice = Gauge("x", "l", "v");
  *twice.add_families() = twice.families(0);
  ExpectRefused(twice, kInvalidArgument, "metric family x is given twice");
  v1::ScrapeResponse series = Gauge("x", "l", "v");
  *series.mutable_families(0)->add_metrics() = series.families(0).metrics(0);
  ExpectRefused(series, kInvalidArgument, "a series is given twice");
  v1::ScrapeResponse label2 = Gauge("x", "l", "v");
  *label2.mutable_families(0)->mutable_metrics(0)->add_labels() =
      label2.families(0).metrics(0).labels(0);
  ExpectRefused(label2, kInvalidArgument, "label 'l' is given twice");
  v1::ScrapeResponse type = Gauge("x", "l", "v");
  type.mutable_families(0)->set_type(static_cast<v1::MetricType>(42));
  ExpectRefused(type, kInvalidArgument, "unknown metric type");
  v1::ScrapeResponse counter = Gauge("x_total", "l", "v", -1);
  counter.mutable_families(0)->set_type(v1::METRIC_TYPE_COUNTER);
  ExpectRefused(counter, kInvalidArgument, "negative");
}

v1::ScrapeResponse Histogram(std::vector<std::pair<double, uint64_t>> buckets,
                             uint64_t count) {
  v1::ScrapeResponse r;
  v1::MetricFamily* f = r.add_families();
  f->set_name("h_seconds");
  f->set_type(v1::METRIC_TYPE_HISTOGRAM);
  v1::Metric* m = f->add_metrics();
  m->set_sample_count(count);
  for (auto [bound, c] : buckets) {
    v1::Bucket* b = m->add_buckets();
    b->set_upper_bound(bound);
    b->set_cumulative_count(c);
  }
  return r;
}

TEST(MetricsWireTest, HistogramsAndSummariesMustBeWellFormed) {
  using absl::StatusCode::kInvalidArgument;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(
      FamiliesFromProto(Histogram({{0.1, 1}, {1, 3}, {kInf, 3}}, 3), Limits())
          .ok());
  ExpectRefused(Histogram({{1, 1}, {0.1, 3}, {kInf, 3}}, 3), kInvalidArgument,
                "not in order");
  ExpectRefused(Histogram({{0.1, 3}, {1, 1}, {kInf, 3}}, 3), kInvalidArgument,
                "not in order");
  ExpectRefused(Histogram({{0.1, 1}, {1, 3}}, 3), kInvalidArgument, "+Inf");
  ExpectRefused(Histogram({{0.1, 1}, {kInf, 3}}, 7), kInvalidArgument, "+Inf");
  ExpectRefused(Histogram({}, 0), kInvalidArgument, "0 buckets");
  ExpectRefused(Histogram({{std::nan(""), 1}, {kInf, 1}}, 1), kInvalidArgument,
                "not in order");
  std::vector<std::pair<double, uint64_t>> many;
  for (int i = 0; i < 70; ++i) many.push_back({i, 0});
  many.push_back({kInf, 0});
  ExpectRefused(Histogram(many, 0), kInvalidArgument, "71 buckets");
  v1::ScrapeResponse summary;
  v1::MetricFamily* f = summary.add_families();
  f->set_name("s");
  f->set_type(v1::METRIC_TYPE_SUMMARY);
  v1::Quantile* q = f->add_metrics()->add_quantiles();
  q->set_quantile(1.5);
  ExpectRefused(summary, kInvalidArgument, "between 0 and 1");
}

TEST(MetricsWireTest, AnswersPastTheLimitsAreRefused) {
  using absl::StatusCode::kResourceExhausted;
  MetricsWireLimits small = Limits();
  small.families = 2;
  small.samples = 5;
  v1::ScrapeResponse three;
  for (const char* n : {"a", "b", "c"}) {
    *three.add_families() = Gauge(n, "l", "v").families(0);
  }
  absl::StatusOr<std::vector<prometheus::MetricFamily>> got =
      FamiliesFromProto(three, small);
  EXPECT_EQ(got.status().code(), kResourceExhausted) << got.status();
  v1::ScrapeResponse six = Gauge("a", "l", "0");
  for (int i = 1; i < 6; ++i) {
    *six.mutable_families(0)->add_metrics() =
        Gauge("a", "l", std::to_string(i)).families(0).metrics(0);
  }
  got = FamiliesFromProto(six, small);
  EXPECT_EQ(got.status().code(), kResourceExhausted) << got.status();
  six.mutable_families(0)->mutable_metrics()->RemoveLast();
  EXPECT_TRUE(FamiliesFromProto(six, small).ok());
  v1::ScrapeResponse labels = Gauge("a", "l0", "v");
  for (int i = 1; i < 17; ++i) {
    v1::LabelPair* l =
        labels.mutable_families(0)->mutable_metrics(0)->add_labels();
    l->set_name("l" + std::to_string(i));
  }
  got = FamiliesFromProto(labels, Limits());
  EXPECT_EQ(got.status().code(), kResourceExhausted) << got.status();
}

}  // namespace
}  // namespace sidecar
