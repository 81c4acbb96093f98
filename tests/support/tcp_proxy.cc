#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sidecar::testing {

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(
    const std::string& target_host, int target_port) {
  std::unique_ptr<TcpProxy> p(new TcpProxy());
  p->target_host_ = target_host;
  p->target_port_ = target_port;
  p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(p->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) !=
          0 ||
      ::listen(p->listen_fd_, 64) != 0) {
    return absl::InternalError(absl::StrCat("proxy bind: ", strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  p->port_ = ntohs(addr.sin_port);
  p->acceptor_ = std::thread([raw = p.get()] { raw->AcceptLoop(); });
  return p;
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  if (acceptor_.joinable()) acceptor_.join();
  Cut();
  std::vector<std::thread> pumps;
  {
    absl::MutexLock lock(&mu_);
    pumps.swap(pumps_);
  }
  for (auto& t : pumps) t.join();
}

std::string TcpProxy::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

void TcpProxy::AcceptLoop() {
  while (!stopping_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    if (cut_) {
      ::close(c);
      continue;
    }
    int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(target_port_.load());
    inet_pton(AF_INET, target_host_.c_str(), &addr.sin_addr);
    if (::connect(t, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(c);
      ::close(t);
      continue;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    absl::MutexLock lock(&mu_);
    open_fds_.push_back(c);
    open_fds_.push_back(t);
    pumps_.emplace_back([this, c, t] { Pump(c, t); });
  }
}

void TcpProxy::Pump(int client_fd, int target_fd) {
  std::vector<char> buf(1 << 16);
  pollfd fds[2] = {{client_fd, POLLIN, 0}, {target_fd, POLLIN, 0}};
  while (!stopping_ && !cut_) {
    if (::poll(fds, 2, 100) <= 0) continue;
    bool done = false;
    for (int i = 0; i < 2 && !done; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
      if (n <= 0) {
        done = true;
        break;
      }
      if (i == 1) PaceDown(static_cast<uint64_t>(n));
      int out = fds[1 - i].fd;
      for (ssize_t off = 0; off < n;) {
        // MSG_NOSIGNAL: a side that closed must end this connection, not
        // the test process (a write to it would raise SIGPIPE).
        ssize_t w = ::send(out, buf.data() + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
          done = true;
          break;
        }
        off += w;
      }
      if (i == 0 && first_up_ns_.load() == 0) {
        int64_t zero = 0;
        first_up_ns_.compare_exchange_strong(zero,
                                             absl::ToUnixNanos(absl::Now()));
      }
      (i == 0 ? up_ : down_) += static_cast<uint64_t>(n);
    }
    if (done) break;
  }
  absl::MutexLock lock(&mu_);
  for (int fd : {client_fd, target_fd}) {
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd),
                    open_fds_.end());
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
  }
}

void TcpProxy::PaceDown(uint64_t n) {
  const uint64_t rate = down_rate_.load();
  if (rate == 0) return;
  absl::Time send_at;
  {
    absl::MutexLock lock(&pace_mu_);
    // Idle time earns no credit beyond the present: a paused stream does
    // not get to burst above the cap afterwards.
    send_at = std::max(pace_next_, absl::Now());
    pace_next_ = send_at + absl::Seconds(static_cast<double>(n) / rate);
  }
  absl::SleepFor(send_at - absl::Now());
}

void TcpProxy::Cut() {
  cut_ = true;
  absl::MutexLock lock(&mu_);
  for (int fd : open_fds_) {
    ::shutdown(fd, SHUT_RDWR);
  }
}

void TcpProxy::Restore() { cut_ = false; }

}  // namespace sidecar::testing
