// sidecar-health-probe: asks a gRPC server's grpc.health.v1 service whether
// it is serving. Used by the containers' HEALTHCHECKs.
//
//   sidecar-health-probe [--addr=ADDRESS] [--local=availability|transfer]
//                        [--service=NAME] [--timeout=SECS] [--quiet]
//
// It asks a service's *local* listener, the plaintext one (the peer listener
// is mutual TLS between paired devices: a plaintext probe cannot pass its
// handshake). The address is, first that applies:
//   --addr=ADDRESS            unix:/path or host:port, as given
//   --local=NAME              unix:STATE_DIR/NAME.sock
//   $SIDECAR_HEALTH_ADDRESS
//   $SIDECAR_LOCAL_LISTEN     the service's own --local_listen (0.0.0.0 or
//                             [::] become loopback)
//   unix:STATE_DIR/NAME.sock  NAME "transfer" if the container's main process
//                             (pid 1) is sidecar-transfer, else "availability"
// where STATE_DIR is $SIDECAR_STATE_DIR, else the services' default
// ($XDG_STATE_HOME/sidecar-sync or ~/.local/state/sidecar-sync).
// --service is the health service name ("" = the server as a whole).
//
// Exit status: 0 SERVING, 1 NOT_SERVING / UNKNOWN / unreachable / error,
// 2 usage error. Prints one line: the status, or why the check failed.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

#include "common/state_dir.h"
#include "common/transport.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

constexpr char kUsage[] =
    "usage: sidecar-health-probe [--addr=ADDRESS] "
    "[--local=availability|transfer]\n"
    "                            [--service=NAME] [--timeout=SECONDS] "
    "[--quiet]\n"
    "  asks the grpc.health.v1 service at ADDRESS (unix:/path or host:port);\n"
    "  --local=NAME means unix:STATE_DIR/NAME.sock, STATE_DIR being\n"
    "  $SIDECAR_STATE_DIR (else the services' default). Without either:\n"
    "  $SIDECAR_HEALTH_ADDRESS, else $SIDECAR_LOCAL_LISTEN, else the local\n"
    "  socket of the service this container runs (pid 1: sidecar-transfer\n"
    "  means transfer.sock, anything else availability.sock)\n"
    "  exit 0 SERVING, 1 not serving or unreachable, 2 usage error\n";

const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

std::string StateDir() {
  if (const char* d = Env("SIDECAR_STATE_DIR")) return d;
  return sidecar::DefaultStateDir();
}

// "transfer" if pid 1 (the container's main process) is sidecar-transfer.
std::string ContainerService() {
  std::ifstream in("/proc/1/cmdline", std::ios::binary);
  std::string argv0;
  if (in && std::getline(in, argv0, '\0')) {
    size_t slash = argv0.rfind('/');
    if (slash != std::string::npos) argv0 = argv0.substr(slash + 1);
    if (argv0 == "sidecar-transfer") return "transfer";
  }
  return "availability";
}

// A listen address as a client dials it: the wildcard hosts mean loopback.
std::string Dialable(std::string address) {
  for (const char* any : {"0.0.0.0:", "[::]:", ":"}) {
    if (address.rfind(any, 0) == 0) {
      return "127.0.0.1:" + address.substr(std::strlen(any));
    }
  }
  return address;
}

std::string DefaultAddress() {
  if (const char* a = Env("SIDECAR_HEALTH_ADDRESS")) return a;
  if (const char* l = Env("SIDECAR_LOCAL_LISTEN")) return Dialable(l);
  return sidecar::LocalSocketAddress(StateDir(), ContainerService());
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
  std::string addr;
  std::string local;
  std::string service;
  std::string timeout = "3";
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (TakeValue(a, "--addr", &addr) || TakeValue(a, "--local", &local) ||
        TakeValue(a, "--service", &service) ||
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
  if (!local.empty() && local != "availability" && local != "transfer") {
    std::cerr << "sidecar-health-probe: --local wants availability or "
                 "transfer, got \""
              << local << "\"\n";
    return 2;
  }
  if (addr.empty()) {
    addr = local.empty() ? DefaultAddress()
                         : sidecar::LocalSocketAddress(StateDir(), local);
  }
  char* end = nullptr;
  double seconds = std::strtod(timeout.c_str(), &end);
  if (end == timeout.c_str() || *end != '\0' || seconds <= 0) {
    std::cerr << "sidecar-health-probe: --timeout wants seconds > 0, got \""
              << timeout << "\"\n";
    return 2;
  }

  // Plaintext, as the local listeners are; aimed at a peer listener (mutual
  // TLS) the check fails, which is what the cluster test asserts.
  auto channel = sidecar::MakeLocalChannel(addr);
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
