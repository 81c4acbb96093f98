// Prometheus metrics of gRPC calls, server and client side, with the names
// and labels operators know from go-grpc-prometheus:
//
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}
//   (histogram) grpc_server_msg_received_total, grpc_server_msg_sent_total
//   grpc_client_started_total, grpc_client_handled_total,
//   grpc_client_handling_seconds, grpc_client_msg_received_total,
//   grpc_client_msg_sent_total (same labels)
//
// grpc_type is unary, client_stream, server_stream or bidi_stream;
// grpc_code is the code's name as in Go (OK, InvalidArgument, ...).
//
// Each is recorded by an interceptor (InterceptorFactory), made by gRPC for
// every call. Label values come only from methods compiled into this
// binary (the generated descriptor pool, and gRPC's health service): a
// method name a peer sends that is not one counts as grpc_service and
// grpc_method "unknown", so nobody on the network can grow the metrics.
// Each method's series are made on its first call and kept in a table, so a
// call costs a shared-lock lookup, a few atomic adds and one histogram
// observation.
#ifndef SIDECAR_COMMON_GRPC_METRICS_H_
#define SIDECAR_COMMON_GRPC_METRICS_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/client_interceptor.h>
#include <grpcpp/support/server_interceptor.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace sidecar {

// The metrics of one side (server or client) of every gRPC method. Register
// one per side in a process's registry; it must outlive the servers and
// channels that use its interceptors.
class GrpcMetrics {
 public:
  enum class Side { kServer, kClient };

  GrpcMetrics(Side side, prometheus::Registry& registry);
  GrpcMetrics(const GrpcMetrics&) = delete;
  GrpcMetrics& operator=(const GrpcMetrics&) = delete;

  // For ServerBuilder::experimental().SetInterceptorCreators. REQUIRES:
  // side kServer.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  ServerInterceptorFactory();
  // For grpc::experimental::CreateCustomChannelWithInterceptors. REQUIRES:
  // side kClient.
  std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
  ClientInterceptorFactory();

  // The series of one method, made on first use.
  struct Method {
    prometheus::Counter* started = nullptr;
    prometheus::Counter* received = nullptr;
    prometheus::Counter* sent = nullptr;
    prometheus::Histogram* seconds = nullptr;
    // One per status code (0..16), made on first use.
    std::array<std::atomic<prometheus::Counter*>, 17> handled{};
    prometheus::Labels labels;  // type, service, method
  };
  // `full_method`: "/package.Service/Method"; `type`: unary, client_stream,
  // server_stream or bidi_stream. Never null.
  Method* Find(absl::string_view full_method, const char* type)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Counts a call of `m` ended with `code` after `seconds`.
  void Handled(Method* m, int code, double seconds);

 private:
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& received_;
  prometheus::Family<prometheus::Counter>& sent_;
  prometheus::Family<prometheus::Histogram>& seconds_;

  absl::Mutex mu_;
  // By "type /package.Service/Method"; bounded by the methods compiled in.
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_
      ABSL_GUARDED_BY(mu_);
};

// go-grpc-prometheus's name of a status code ("OK", "InvalidArgument", ...).
const char* GrpcCodeName(int code);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_GRPC_METRICS_H_
