// sidecar-health-probe: asks a gRPC server's grpc.health.v1 service whether
// it is serving. Used by the containers' HEALTHCHECKs.
//
//   sidecar-health-probe [--addr=HOST:PORT] [--service=NAME] [--timeout=SECS]
//                        [--quiet]
//
// The address defaults to $SIDECAR_HEALTH_ADDRESS, else to 127.0.0.1 with the
// port of $SIDECAR_LISTEN (the service's own --listen), else 127.0.0.1:7100.
// --service is the health service name ("" = the server as a whole).
//
// Exit status: 0 SERVING, 1 NOT_SERVING / UNKNOWN / unreachable / error,
// 2 usage error. Prints one line: the status, or why the check failed.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace {

constexpr char kUsage[] =
    "usage: sidecar-health-probe [--addr=HOST:PORT] [--service=NAME] "
    "[--timeout=SECONDS] [--quiet]\n"
    "  asks the grpc.health.v1 service at HOST:PORT (default: "
    "$SIDECAR_HEALTH_ADDRESS,\n"
    "  else 127.0.0.1 and the port of $SIDECAR_LISTEN, else 127.0.0.1:7100)\n"
    "  exit 0 SERVING, 1 not serving or unreachable, 2 usage error\n";

std::string DefaultAddress() {
  if (const char* a = std::getenv("SIDECAR_HEALTH_ADDRESS"); a && *a) return a;
  if (const char* l = std::getenv("SIDECAR_LISTEN"); l && *l) {
    std::string listen = l;
    size_t colon = listen.rfind(':');
    if (colon != std::string::npos && colon + 1 < listen.size()) {
      return "127.0.0.1:" + listen.substr(colon + 1);
    }
  }
  return "127.0.0.1:7100";
}

bool TakeValue(const char* arg, const char* name, std::string* out) {
  size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) == 0 && arg[n] == '=') {
    *out = arg + n + 1;
    return true;
  }
  return false;
}

const char* StatusName(grpc::health::v1::HealthCheckResponse::ServingStatus s) {
  using R = grpc::health::v1::HealthCheckResponse;
  switch (s) {
    case R::SERVING: return "SERVING";
    case R::NOT_SERVING: return "NOT_SERVING";
    case R::SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    default: return "UNKNOWN";
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string addr = DefaultAddress();
  std::string service;
  std::string timeout = "3";
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (TakeValue(a, "--addr", &addr) || TakeValue(a, "--service", &service) ||
        TakeValue(a, "--timeout", &timeout)) {
      continue;
    }
    if (std::strcmp(a, "--quiet") == 0) {
      quiet = true;
    } else if (std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0) {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "sidecar-health-probe: unknown argument " << a << "\n"
                << kUsage;
      return 2;
    }
  }
  char* end = nullptr;
  double seconds = std::strtod(timeout.c_str(), &end);
  if (end == timeout.c_str() || *end != '\0' || seconds <= 0) {
    std::cerr << "sidecar-health-probe: --timeout wants seconds > 0, got \""
              << timeout << "\"\n";
    return 2;
  }

  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<long>(seconds * 1000)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  std::string what = service.empty() ? addr : addr + " service " + service;
  if (!st.ok()) {
    if (!quiet) {
      std::cout << what << ": check failed: "
                << (st.error_code() == grpc::StatusCode::NOT_FOUND
                        ? "unknown service"
                        : st.error_message())
                << " (gRPC code " << st.error_code() << ")\n";
    }
    return 1;
  }
  if (!quiet) std::cout << what << ": " << StatusName(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0
                                                                           : 1;
}
