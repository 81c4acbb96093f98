#include "common/transport.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/config.h"
#include "common/log.h"

namespace sidecar {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect promptly after a peer comes back; the default backoff grows to
  // two minutes, longer than a peer should stay marked offline.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMicroseconds(timeout));
}

namespace {

// SIGTERM and SIGINT: the signals that stop a service.
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

StartupSignalWatch::StartupSignalWatch() {
  thread_ = std::thread([this] {
    const sigset_t set = ShutdownSignals();
    const timespec poll = {0, 100 * 1000 * 1000};
    while (armed_.load()) {
      int sig = sigtimedwait(&set, nullptr, &poll);
      if (sig <= 0) continue;  // timeout or EINTR
      if (!armed_.load()) {
        // Serving already: leave it to WaitForShutdownSignal (the signal
        // is blocked everywhere, so it stays pending).
        ::kill(::getpid(), sig);
        return;
      }
      SC_LOG(INFO) << "signal " << sig << " during start-up: exiting";
      std::fflush(stderr);
      std::_Exit(0);
    }
  });
}

void StartupSignalWatch::Disarm() {
  armed_ = false;
  if (thread_.joinable()) thread_.join();
}

void InitServiceProcess(int argc, char** argv, const char* usage) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  BlockShutdownSignals();
  ParseConfig(argc, argv, usage);
}

ServerHost::ServerHost(std::string listen_address)
    : listen_address_(std::move(listen_address)) {}

ServerHost::~ServerHost() {
  if (server_) Shutdown(absl::ZeroDuration());
}

void ServerHost::AddService(grpc::Service* service) {
  services_.push_back(service);
}

absl::Status ServerHost::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address_, grpc::InsecureServerCredentials(),
                           &port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  for (auto* s : services_) builder.RegisterService(s);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen_address_,
        ": address in use or not valid (use host:port, port 0 for any)"));
  }
  SetServing(true);
  return absl::OkStatus();
}

void ServerHost::SetServing(bool serving) {
  if (server_ && server_->GetHealthCheckService()) {
    server_->GetHealthCheckService()->SetServingStatus(serving);
  }
}

int ServerHost::WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

void ServerHost::Shutdown(absl::Duration drain) {
  if (!server_) return;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMicroseconds(drain));
  server_->Wait();
  server_.reset();
}

absl::Status WritePortFile(const std::string& path, int port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename to ", path));
  }
  return absl::OkStatus();
}

}  // namespace sidecar
