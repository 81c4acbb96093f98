#include "common/grpc_metrics.h"

#include <google/protobuf/descriptor.h>

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sidecar {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;

// prometheus.DefBuckets (5 ms .. 10 s), with finer steps below and room
// for the long streams above.
const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
  return *b;
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t)
      .count();
}

// Whether "/package.Service/Method" names a method compiled into this
// binary, so that its parts may become label values.
bool KnownMethod(absl::string_view service, absl::string_view method) {
  if (service == "grpc.health.v1.Health") {
    return method == "Check" || method == "Watch";
  }
  const google::protobuf::ServiceDescriptor* s =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(service));
  return s != nullptr && s->FindMethodByName(std::string(method)) != nullptr;
}

// go-grpc-prometheus's grpc_type; ServerRpcInfo::Type and ClientRpcInfo::Type
// name their streaming kinds alike.
template <typename Type>
const char* TypeName(Type t) {
  switch (t) {
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
    default:
      return "unary";
  }
}

// One call, either side. gRPC makes it as the call starts and deletes it
// as the call ends. Hooks run on gRPC's threads; they only count.
class CallMetrics final : public grpc::experimental::Interceptor {
 public:
  CallMetrics(GrpcMetrics* metrics, GrpcMetrics::Method* method, bool server,
              grpc::ServerContextBase* server_context = nullptr)
      : metrics_(metrics),
        method_(method),
        server_(server),
        server_context_(server_context),
        start_(std::chrono::steady_clock::now()),
        started_(server) {
    if (server_) method_->started->Increment();
  }
  ~CallMetrics() override {
    // Ended without a status seen: cancelled (or the server shut down).
    if (started_ && !handled_) {
      metrics_->Handled(method_, grpc::StatusCode::CANCELLED,
                        SecondsSince(start_));
    }
  }

  void Intercept(InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_INITIAL_METADATA) &&
        !server_ && !started_.exchange(true)) {
      method_->started->Increment();
    }
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      method_->sent->Increment();
    }
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE) &&
        m->GetRecvMessage() != nullptr) {
      method_->received->Increment();
    }
    if (server_ && m->QueryInterceptionHookPoint(
                       InterceptionHookPoints::PRE_SEND_STATUS)) {
      // A call the client cancelled (or whose deadline passed) ends with
      // whatever status its handler gives, which the client never sees.
      Handled(server_context_ != nullptr && server_context_->IsCancelled()
                  ? grpc::StatusCode::CANCELLED
                  : m->GetSendStatus().error_code());
    }
    if (!server_ && m->QueryInterceptionHookPoint(
                        InterceptionHookPoints::POST_RECV_STATUS)) {
      Handled(m->GetRecvStatus()->error_code());
    }
    m->Proceed();
  }

 private:
  void Handled(int code) {
    if (handled_.exchange(true)) return;
    metrics_->Handled(method_, code, SecondsSince(start_));
  }

  GrpcMetrics* const metrics_;
  GrpcMetrics::Method* const method_;
  const bool server_;
  grpc::ServerContextBase* const server_context_;  // null for a client
  const std::chrono::steady_clock::time_point start_;
  // The server counts its start when the call arrives; a client when it
  // sends its metadata. A stream's send and receive hooks may run at once
  // on two threads.
  std::atomic<bool> started_;
  std::atomic<bool> handled_{false};
};

// Makes the interceptor of each call, on either side.
class Factory final
    : public grpc::experimental::ServerInterceptorFactoryInterface,
      public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit Factory(GrpcMetrics* m) : m_(m) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallMetrics(m_, Method(info), /*server=*/true,
                           info->server_context());
  }
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new CallMetrics(m_, Method(info), /*server=*/false);
  }

 private:
  template <typename Info>
  GrpcMetrics::Method* Method(Info* info) {
    return m_->Find(info->method() ? info->method() : "",
                    TypeName(info->type()));
  }

  GrpcMetrics* const m_;
};

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& r,
                                                       const char* side,
                                                       const char* what,
                                                       const char* help) {
  return prometheus::BuildCounter()
      .Name(absl::StrCat("grpc_", side, "_", what))
      .Help(help)
      .Register(r);
}

}  // namespace

const char* GrpcCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "Canceled",
                                           "Unknown",
                                           "InvalidArgument",
                                           "DeadlineExceeded",
                                           "NotFound",
                                           "AlreadyExists",
                                           "PermissionDenied",
                                           "ResourceExhausted",
                                           "FailedPrecondition",
                                           "Aborted",
                                           "OutOfRange",
                                           "Unimplemented",
                                           "Internal",
                                           "Unavailable",
                                           "DataLoss",
                                           "Unauthenticated"};
  if (code < 0 || code >= 17) return "Unknown";
  return kNames[code];
}

GrpcMetrics::GrpcMetrics(Side side, prometheus::Registry& registry)
    : started_(
          CounterFamily(registry, side == Side::kServer ? "server" : "client",
                        "started_total",
                        side == Side::kServer ? "RPCs started on the server."
                                              : "RPCs started on the client.")),
      handled_(CounterFamily(
          registry, side == Side::kServer ? "server" : "client",
          "handled_total",
          side == Side::kServer
              ? "RPCs completed on the server, whatever their status."
              : "RPCs completed by the client, whatever their status.")),
      received_(CounterFamily(
          registry, side == Side::kServer ? "server" : "client",
          "msg_received_total",
          side == Side::kServer ? "Stream messages received on the server."
                                : "Stream messages received by the client.")),
      sent_(CounterFamily(registry, side == Side::kServer ? "server" : "client",
                          "msg_sent_total",
                          side == Side::kServer
                              ? "Stream messages sent by the server."
                              : "Stream messages sent by the client.")),
      seconds_(prometheus::BuildHistogram()
                   .Name(side == Side::kServer ? "grpc_server_handling_seconds"
                                               : "grpc_client_handling_seconds")
                   .Help(side == Side::kServer
                             ? "Time the server took to handle RPCs, from "
                               "their start to their status."
                             : "Time RPCs took as the client saw them, from "
                               "their start to their status.")
                   .Register(registry)) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcMetrics::ServerInterceptorFactory() {
  return std::make_unique<Factory>(this);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
GrpcMetrics::ClientInterceptorFactory() {
  return std::make_unique<Factory>(this);
}

GrpcMetrics::Method* GrpcMetrics::Find(absl::string_view full_method,
                                       const char* type) {
  std::string key = absl::StrCat(type, " ", full_method);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = methods_.find(key); it != methods_.end()) {
      return it->second.get();
    }
  }
  std::string service = "unknown", method = "unknown";
  absl::string_view name = full_method;
  if (absl::ConsumePrefix(&name, "/")) {
    size_t slash = name.find('/');
    if (slash != absl::string_view::npos &&
        KnownMethod(name.substr(0, slash), name.substr(slash + 1))) {
      service = std::string(name.substr(0, slash));
      method = std::string(name.substr(slash + 1));
    }
  }
  // A name not compiled in shares the one "unknown" entry of its type.
  if (service == "unknown") key = absl::StrCat(type, " unknown");
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Method>& m = methods_[key];
  if (m == nullptr) {
    m = std::make_unique<Method>();
    m->labels = {{"grpc_type", type},
                 {"grpc_service", service},
                 {"grpc_method", method}};
    m->started = &started_.Add(m->labels);
    m->received = &received_.Add(m->labels);
    m->sent = &sent_.Add(m->labels);
    m->seconds = &seconds_.Add(m->labels, Buckets());
  }
  return m.get();
}

void GrpcMetrics::Handled(Method* m, int code, double seconds) {
  if (code < 0 || code >= 17) code = grpc::StatusCode::UNKNOWN;
  prometheus::Counter* c = m->handled[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    prometheus::Labels labels = m->labels;
    labels["grpc_code"] = GrpcCodeName(code);
    // Family::Add returns the one series for these labels, however many
    // threads race here.
    c = &handled_.Add(labels);
    m->handled[code].store(c, std::memory_order_release);
  }
  c->Increment();
  m->seconds->Observe(seconds);
}

}  // namespace sidecar
