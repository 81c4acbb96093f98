// idle_grpc_client ADDRESS SECONDS: connects a gRPC channel to ADDRESS
// (plaintext, as the local API), prints "connected" once it is ready, then
// holds the connection without a call for SECONDS and exits. A client in a
// process of its own that does not read its idle connection, for the tests
// of a server's graceful stop (run it with
// GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=0 so that gRPC's backup poller
// does not read it either).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/transport.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: idle_grpc_client ADDRESS SECONDS\n");
    return 2;
  }
  std::shared_ptr<grpc::Channel> ch = sidecar::MakeLocalChannel(argv[1]);
  if (!ch->WaitForConnected(std::chrono::system_clock::now() +
                            std::chrono::seconds(5))) {
    std::fprintf(stderr, "idle_grpc_client: cannot connect to %s\n", argv[1]);
    return 1;
  }
  std::printf("connected\n");
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(std::atoi(argv[2])));
  return 0;
}
