// What the gRPC metrics cost per call: the same unary call (grpc.health.v1
// Check, real server and channel on loopback) on a server and channel made
// without metrics (the baseline) and on ones made with them, side by side;
// a call with a 1 MiB answer likewise; and the bookkeeping alone (a method's
// series found, the call counted and observed), in-process.
//
//   grpc_metrics_bench [--benchmark_min_time=2]
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/grpc_metrics.h"
#include "common/member_metrics.h"
#include "common/metrics.h"
#include "common/transport.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "prometheus/counter.h"
#include "sidecar/v1/metrics.grpc.pb.h"

namespace sidecar {
namespace {

struct Side {
  std::unique_ptr<ServerHost> host;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::health::v1::Health::Stub> stub;
};

// The large answer's service: 10,000 counter series of about 100 bytes,
// collected once and kept (max age infinite). Apart from the process's
// metrics: it is what a call carries, not what counts calls.
MemberMetricsService* LargeAnswerService() {
  static MemberMetricsService* service = [] {
    auto* set = new ProcessMetricsSet(std::make_shared<prometheus::Registry>());
    auto& family = prometheus::BuildCounter()
                       .Name("bench_series_total")
                       .Help("series of the large answer")
                       .Register(*set->registry);
    for (int i = 0; i < 10000; ++i) {
      family.Add({{"key", absl::StrCat(i, "-", std::string(64, 'k'))}})
          .Increment(i);
    }
    return new MemberMetricsService(set, absl::InfiniteDuration());
  }();
  return service;
}

// A server and a channel to it, made with metrics as the process has them
// now.
Side MakeSide() {
  Side s;
  s.host = std::make_unique<ServerHost>(LocalListener{"127.0.0.1:0"});
  s.host->AddService(LargeAnswerService());
  if (!s.host->Start().ok()) std::abort();
  s.channel = MakeLocalChannel(absl::StrCat("127.0.0.1:", s.host->port()));
  s.stub = grpc::health::v1::Health::NewStub(s.channel);
  return s;
}

// [0]: without metrics, made before they are enabled; [1]: with them.
Side* Sides() {
  static Side* sides = [] {
    auto* s = new Side[2];
    s[0] = MakeSide();
    EnableProcessMetrics();
    s[1] = MakeSide();
    return s;
  }();
  return sides;
}

void BM_UnaryCall(benchmark::State& state) {
  Side& side = Sides()[state.range(0)];
  grpc::health::v1::HealthCheckRequest req;
  for (auto _ : state) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::health::v1::HealthCheckResponse resp;
    if (!side.stub->Check(&ctx, req, &resp).ok()) {
      state.SkipWithError("Check failed");
      break;
    }
  }
  state.SetLabel(state.range(0) ? "with metrics" : "baseline, without");
}
BENCHMARK(BM_UnaryCall)->Arg(0)->Arg(1)->UseRealTime();

// A call with a large answer, as a WhoHas of 10,000 keys has:
// MemberMetrics.Scrape of 10,000 series (about 1 MiB), the answer made once
// and kept. The interceptors never touch a message's bytes, so this should
// cost what they cost per call.
void BM_LargeAnswer(benchmark::State& state) {
  Side& side = Sides()[state.range(0)];
  auto stub = v1::MemberMetrics::NewStub(side.channel);
  size_t bytes = 0;
  for (auto _ : state) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ScrapeResponse resp;
    if (!stub->Scrape(&ctx, {}, &resp).ok()) {
      state.SkipWithError("Scrape failed");
      break;
    }
    bytes = resp.ByteSizeLong();
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.SetLabel(state.range(0) ? "with metrics" : "baseline, without");
}
BENCHMARK(BM_LargeAnswer)->Arg(0)->Arg(1)->UseRealTime();

// One side's bookkeeping of one call, without gRPC around it.
void BM_Bookkeeping(benchmark::State& state) {
  prometheus::Registry registry;
  GrpcMetrics m(GrpcMetrics::Side::kServer, registry);
  for (auto _ : state) {
    GrpcMetrics::Method* method =
        m.Find("/grpc.health.v1.Health/Check", "unary");
    method->started->Increment();
    method->received->Increment();
    method->sent->Increment();
    m.Handled(method, 0, 0.0001);
  }
}
BENCHMARK(BM_Bookkeeping);

}  // namespace
}  // namespace sidecar

BENCHMARK_MAIN();
