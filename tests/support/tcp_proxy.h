// TcpProxy: forwards TCP connections from a local port to a target, counting
// the payload bytes in each direction. Benchmarks use it to measure what
// crosses the wire; tests use it to cut a link (Cut) and restore it.
#ifndef SIDECAR_TESTS_SUPPORT_TCP_PROXY_H_
#define SIDECAR_TESTS_SUPPORT_TCP_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sidecar::testing {

class TcpProxy {
 public:
  // Listens on 127.0.0.1 (any port) and forwards to target_host:target_port.
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(
      const std::string& target_host, int target_port);
  ~TcpProxy();

  int port() const { return port_; }
  std::string address() const;
  // New connections go to `target_port` from now on (the target restarted
  // on another port); open ones are left alone.
  void Retarget(int target_port) { target_port_ = target_port; }

  // Payload bytes forwarded client->target and target->client so far.
  uint64_t bytes_up() const { return up_.load(); }
  uint64_t bytes_down() const { return down_.load(); }
  void ResetCounters() {
    up_ = 0;
    down_ = 0;
    first_up_ns_ = 0;
  }
  // When the first client->target byte passed since the last reset
  // (absl::ToUnixNanos), 0 if none yet.
  int64_t first_up_unix_nanos() const { return first_up_ns_.load(); }

  // Caps target->client payload at `bytes_per_sec` over all connections
  // together (0: no cap), like a holder behind a slow uplink. Tests use it
  // so that no holder outruns the others by how the machine schedules it.
  void SetDownRate(uint64_t bytes_per_sec) { down_rate_ = bytes_per_sec; }

  // Closes every open connection and refuses new ones until Restore().
  void Cut();
  void Restore();

 private:
  TcpProxy() = default;
  void AcceptLoop();
  void Pump(int client_fd, int target_fd);
  // Sleeps until `n` more target->client bytes fit under the cap.
  void PaceDown(uint64_t n);

  int listen_fd_ = -1;
  int port_ = 0;
  std::string target_host_;
  std::atomic<int> target_port_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cut_{false};
  std::atomic<uint64_t> up_{0}, down_{0};
  std::atomic<int64_t> first_up_ns_{0};
  std::atomic<uint64_t> down_rate_{0};
  absl::Mutex pace_mu_;
  absl::Time pace_next_ ABSL_GUARDED_BY(pace_mu_) = absl::InfinitePast();
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_TCP_PROXY_H_
