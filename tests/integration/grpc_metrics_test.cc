// gRPC metrics (common/grpc_metrics.h) on real servers and channels over
// loopback, read back the way Prometheus reads them: scraped over HTTP from
// the exporter (common/metrics.h) and parsed from the text format. Metrics
// are process-wide, so each test compares a scrape after its calls with
// one before.
#include "common/grpc_metrics.h"

#include <grpcpp/generic/generic_stub.h>

#include <future>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/transport.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "sidecar/v1/availability.pb.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/wait.h"

namespace sidecar {
namespace {

using Labels = std::map<std::string, std::string>;
using testing::HttpGet;
using testing::SampleSum;
using testing::WaitFor;

class GrpcMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_ = EnableProcessMetrics();  // before the server and channel
    host_ = std::make_unique<ServerHost>(LocalListener{"127.0.0.1:0"});
    ASSERT_TRUE(host_->Start().ok());
    channel_ = MakeLocalChannel(absl::StrCat("127.0.0.1:", host_->port()));
    absl::StatusOr<std::unique_ptr<MetricsExporter>> e =
        MetricsExporter::Start("127.0.0.1:0", false, metrics_->registry);
    ASSERT_TRUE(e.ok()) << e.status();
    exporter_ = std::move(*e);
  }
  void TearDown() override { host_->Shutdown(absl::ZeroDuration()); }

  std::string Scrape() {
    absl::StatusOr<std::string> text = HttpGet(exporter_->port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }
  // A sample's value in `after` less that in `before` (0 if absent).
  static double Delta(const std::string& before, const std::string& after,
                      const std::string& name, const Labels& labels) {
    return SampleSum(after, name, labels).value_or(0) -
           SampleSum(before, name, labels).value_or(0);
  }
  grpc::Status Check(const std::string& service) {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    return stub->Check(&ctx, req, &resp);
  }
  grpc::Status CallByName(const std::string& method) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::Slice empty("");  // an empty message (a ByteBuffer with no slice
                            // is none)
    grpc::ByteBuffer req(&empty, 1), resp;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp,
                   [&](grpc::Status s) { done.set_value(s); });
    return done.get_future().get();
  }

  ProcessMetricsSet* metrics_ = nullptr;
  std::unique_ptr<ServerHost> host_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<MetricsExporter> exporter_;
};

const Labels kCheck = {{"grpc_type", "unary"},
                       {"grpc_service", "grpc.health.v1.Health"},
                       {"grpc_method", "Check"}};

Labels With(Labels l, const std::string& k, const std::string& v) {
  l[k] = v;
  return l;
}

TEST_F(GrpcMetricsTest, ServerAndClientCountEveryCallByMethodAndCode) {
  const std::string before = Scrape();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Check("").ok());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Check("no.such.Service").error_code(), grpc::NOT_FOUND);
  }
  const std::string after = Scrape();
  for (const char* side : {"server", "client"}) {
    SCOPED_TRACE(side);
    auto name = [&](const char* what) {
      return absl::StrCat("grpc_", side, "_", what);
    };
    EXPECT_EQ(Delta(before, after, name("started_total"), kCheck), 5);
    EXPECT_EQ(Delta(before, after, name("handled_total"),
                    With(kCheck, "grpc_code", "OK")),
              3);
    EXPECT_EQ(Delta(before, after, name("handled_total"),
                    With(kCheck, "grpc_code", "NotFound")),
              2);
    EXPECT_EQ(Delta(before, after, name("handling_seconds_count"), kCheck), 5);
    // Every call took well under a minute: all in the last finite bucket.
    EXPECT_EQ(Delta(before, after, name("handling_seconds_bucket"),
                    With(kCheck, "le", "60")),
              5)
        << after;
    EXPECT_GT(Delta(before, after, name("handling_seconds_sum"), kCheck), 0);
    // Each request is a message; a call answered NOT_FOUND has no answer.
    const bool server = std::string(side) == "server";
    EXPECT_EQ(Delta(before, after, name("msg_received_total"), kCheck),
              server ? 5 : 3);
    EXPECT_EQ(Delta(before, after, name("msg_sent_total"), kCheck),
              server ? 3 : 5);
  }
}

// Label values come only from methods compiled in: a name a caller makes up
// counts as "unknown" and makes no series of its own.
TEST_F(GrpcMetricsTest, AMethodNotCompiledInCountsAsUnknown) {
  const std::string before = Scrape();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(CallByName(absl::StrCat("/evil.Service/Grow", i)).error_code(),
              grpc::UNIMPLEMENTED);
  }
  // Compiled in (a sidecar.v1 method, linked as the services link it), but
  // not served here.
  ASSERT_NE(v1::WhoHasRequest::descriptor(), nullptr);
  EXPECT_EQ(CallByName("/sidecar.v1.Availability/WhoHas").error_code(),
            grpc::UNIMPLEMENTED);
  const std::string after = Scrape();
  EXPECT_EQ(testing::SampleCount(after, "grpc_client_started_total",
                                 {{"grpc_service", "evil.Service"}}),
            0);
  EXPECT_EQ(after.find("Grow"), std::string::npos);
  EXPECT_EQ(Delta(before, after, "grpc_client_handled_total",
                  {{"grpc_service", "unknown"},
                   {"grpc_method", "unknown"},
                   {"grpc_code", "Unimplemented"}}),
            3);
  EXPECT_EQ(Delta(before, after, "grpc_client_handled_total",
                  {{"grpc_service", "sidecar.v1.Availability"},
                   {"grpc_method", "WhoHas"},
                   {"grpc_code", "Unimplemented"}}),
            1);
}

// A server stream: messages counted each way, and a call the client
// cancels is handled as Canceled on both sides.
TEST_F(GrpcMetricsTest, StreamsCountMessagesAndCancelledCalls) {
  const Labels watch = {{"grpc_type", "server_stream"},
                        {"grpc_service", "grpc.health.v1.Health"},
                        {"grpc_method", "Watch"}};
  const std::string before = Scrape();
  {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    auto reader = stub->Watch(&ctx, req);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    ctx.TryCancel();
    while (reader->Read(&resp)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::CANCELLED);
  }
  std::string after;
  ASSERT_TRUE(WaitFor(
      [&] {
        after = Scrape();
        return Delta(before, after, "grpc_server_handled_total", watch) == 1;
      },
      absl::Seconds(5)))
      << after;
  for (const char* side : {"server", "client"}) {
    SCOPED_TRACE(side);
    auto name = [&](const char* what) {
      return absl::StrCat("grpc_", side, "_", what);
    };
    EXPECT_EQ(Delta(before, after, name("started_total"), watch), 1);
    EXPECT_EQ(Delta(before, after, name("handled_total"),
                    With(watch, "grpc_code", "Canceled")),
              1);
  }
  EXPECT_GE(Delta(before, after, "grpc_server_msg_sent_total", watch), 1);
  EXPECT_EQ(Delta(before, after, "grpc_client_msg_received_total", watch), 1);
  EXPECT_EQ(Delta(before, after, "grpc_server_msg_received_total", watch), 1);
}

TEST(MetricsExporterTest, StaysOffTheNetworkAndSaysWhy) {
  auto registry = std::make_shared<prometheus::Registry>();
  absl::StatusOr<std::unique_ptr<MetricsExporter>> e =
      MetricsExporter::Start("0.0.0.0:0", false, registry);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("--metrics_listen_allow_network"),
            std::string::npos)
      << e.status();
  e = MetricsExporter::Start("9464", false, registry);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  e = MetricsExporter::Start("unix:/tmp/m.sock", false, registry);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<std::unique_ptr<MetricsExporter>> first =
      MetricsExporter::Start("127.0.0.1:0", false, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->url(),
            absl::StrCat("http://127.0.0.1:", (*first)->port(), "/metrics"));
  e = MetricsExporter::Start(absl::StrCat("127.0.0.1:", (*first)->port()),
                             false, registry);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable) << e.status();
  // Only /metrics is served.
  EXPECT_FALSE(HttpGet((*first)->port(), "/").ok());
  EXPECT_TRUE(HttpGet((*first)->port(), "/metrics").ok());
}

}  // namespace
}  // namespace sidecar
