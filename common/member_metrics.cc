#include "common/member_metrics.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/transport.h"

namespace sidecar {
namespace {

constexpr size_t kMaxEndpoints = 128;
constexpr char kUpName[] = "sidecar_member_scrape_up";
constexpr char kSecondsName[] = "sidecar_member_scrape_seconds";

// One endpoint's scrape, as it ends.
struct Answer {
  grpc::Status status;
  v1::ScrapeResponse response;
  absl::Duration took;
};

// The calls of one wave; shared with their callbacks, which may run after
// the wave's owner stopped waiting (never: it waits for all, each with a
// deadline; shared all the same, so that no callback can touch freed
// memory).
struct Wave {
  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<v1::MemberMetrics::Stub>> stubs;
  std::vector<v1::ScrapeRequest> requests;
  std::vector<Answer> answers;
};

std::string EndpointName(const MemberEndpoint& e) {
  return absl::StrCat(e.service, " of ", e.device.ToString());
}

}  // namespace

MemberMetricsService::MemberMetricsService(ProcessMetricsSet* metrics,
                                           absl::Duration max_age)
    : metrics_(metrics), max_age_(max_age) {}

grpc::Status MemberMetricsService::Scrape(grpc::ServerContext* /*ctx*/,
                                          const v1::ScrapeRequest* /*req*/,
                                          v1::ScrapeResponse* resp) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now - taken_ >= max_age_) {
    std::vector<prometheus::MetricFamily> families =
        metrics_->registry->Collect();
    if (metrics_->gauges != nullptr) {
      std::vector<prometheus::MetricFamily> more = metrics_->gauges->Collect();
      std::move(more.begin(), more.end(), std::back_inserter(families));
    }
    answer_.Clear();
    FamiliesToProto(families, &answer_);
    taken_ = now;
  }
  *resp = answer_;
  return grpc::Status::OK;
}

MemberMetricsRelay::MemberMetricsRelay(Endpoints endpoints,
                                       PeerChannels* channels, Options options)
    : endpoints_(std::move(endpoints)),
      channels_(channels),
      options_(options) {}

namespace {

// Scrapes `endpoints` at once, each call ending by `deadline` at the latest.
std::vector<Answer> ScrapeWave(absl::Span<const MemberEndpoint> endpoints,
                               PeerChannels* channels, absl::Time deadline) {
  auto wave = std::make_shared<Wave>();
  wave->answers.resize(endpoints.size());
  wave->requests.resize(endpoints.size());
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const MemberEndpoint& e = endpoints[i];
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        channels->Get(e.device, e.address, TrafficClass::kMetrics);
    if (!channel.ok()) {
      wave->answers[i].status = ToGrpcStatus(channel.status());
      continue;
    }
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(absl::ToChronoTime(deadline));
    auto stub = v1::MemberMetrics::NewStub(*channel);
    {
      absl::MutexLock lock(&wave->mu);
      ++wave->pending;
    }
    stub->async()->Scrape(ctx.get(), &wave->requests[i],
                          &wave->answers[i].response,
                          [wave, i, start](grpc::Status s) {
                            absl::MutexLock lock(&wave->mu);
                            wave->answers[i].status = std::move(s);
                            wave->answers[i].took = absl::Now() - start;
                            --wave->pending;
                          });
    wave->contexts.push_back(std::move(ctx));
    wave->stubs.push_back(std::move(stub));
  }
  absl::MutexLock lock(&wave->mu);
  wave->mu.Await(absl::Condition(
      +[](int* pending) { return *pending == 0; }, &wave->pending));
  return std::move(wave->answers);
}

size_t SampleCount(const std::vector<prometheus::MetricFamily>& families) {
  size_t n = 0;
  for (const prometheus::MetricFamily& f : families) {
    for (const prometheus::ClientMetric& m : f.metric) {
      n += 1 + m.histogram.bucket.size() + m.summary.quantile.size();
    }
  }
  return n;
}

// Adds `families` of `e` to `merged`, each series labelled with the member
// and the service. A family whose name another endpoint gave with another
// type is left out (the text format allows one type per name).
void MergeInto(const MemberEndpoint& e,
               std::vector<prometheus::MetricFamily> families,
               std::map<std::string, prometheus::MetricFamily>* merged) {
  const std::string device = e.device.ToString();
  for (prometheus::MetricFamily& f : families) {
    if (f.name == kUpName || f.name == kSecondsName) continue;
    auto [it, fresh] = merged->try_emplace(f.name);
    prometheus::MetricFamily& into = it->second;
    if (fresh) {
      into.name = f.name;
      into.help = f.help;
      into.type = f.type;
    } else if (into.type != f.type) {
      continue;
    }
    for (prometheus::ClientMetric& m : f.metric) {
      m.label.insert(m.label.begin(),
                     {{"member", device}, {"service", e.service}});
      into.metric.push_back(std::move(m));
    }
  }
}

}  // namespace

std::vector<prometheus::MetricFamily> MemberMetricsRelay::Collect() const {
  absl::MutexLock lock(&collect_mu_);
  std::vector<MemberEndpoint> endpoints = endpoints_();
  if (endpoints.size() > kMaxEndpoints) endpoints.resize(kMaxEndpoints);
  const absl::Time end = absl::Now() + options_.budget;
  const size_t parallel = std::max(1, options_.parallel);
  std::vector<Answer> answers;
  for (size_t i = 0; i < endpoints.size(); i += parallel) {
    absl::Span<const MemberEndpoint> wave =
        absl::MakeConstSpan(endpoints).subspan(i, parallel);
    if (absl::Now() >= end) {
      for (size_t j = 0; j < wave.size(); ++j) {
        answers.push_back({grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                        "no time left in this scrape"),
                           {},
                           absl::ZeroDuration()});
      }
      continue;
    }
    std::vector<Answer> got = ScrapeWave(
        wave, channels_, std::min(end, absl::Now() + options_.timeout));
    std::move(got.begin(), got.end(), std::back_inserter(answers));
  }

  MetricsWireLimits limits;
  limits.reserved_labels = {"member", "service"};
  size_t samples_left = options_.samples;
  std::map<std::string, prometheus::MetricFamily> merged;
  std::vector<GaugeSample> up, seconds;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const MemberEndpoint& e = endpoints[i];
    std::string error;
    if (!answers[i].status.ok()) {
      error = FromGrpcStatus(answers[i].status).ToString();
    } else if (absl::StatusOr<std::vector<prometheus::MetricFamily>> families =
                   FamiliesFromProto(answers[i].response, limits);
               !families.ok()) {
      error = families.status().ToString();
    } else if (size_t n = SampleCount(*families); n > samples_left) {
      error = "its samples pass what the relay takes from all members";
    } else {
      samples_left -= n;
      MergeInto(e, std::move(*families), &merged);
    }
    std::vector<std::pair<std::string, std::string>> labels = {
        {"member", e.device.ToString()}, {"service", e.service}};
    up.push_back({labels, error.empty() ? 1.0 : 0.0});
    seconds.push_back({labels, absl::ToDoubleSeconds(answers[i].took)});
    std::string& last = last_error_[EndpointName(e)];
    if (error != last) {
      if (error.empty()) {
        SC_LOG(INFO) << "member metrics: " << EndpointName(e)
                     << " answers again";
      } else {
        SC_LOG(WARNING) << "member metrics: " << EndpointName(e)
                        << " left out: " << error;
      }
      last = error;
    }
  }
  if (last_error_.size() > 4 * kMaxEndpoints) last_error_.clear();

  std::vector<prometheus::MetricFamily> out;
  out.push_back(GaugeFamily(kUpName,
                            "1 if the member's service answered with metrics "
                            "this device took, else 0",
                            std::move(up)));
  out.push_back(GaugeFamily(kSecondsName,
                            "how long the member's service took to answer",
                            std::move(seconds)));
  for (auto& [name, f] : merged) out.push_back(std::move(f));
  return out;
}

}  // namespace sidecar
