#include "common/readiness.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/pg/connection.h"

namespace sidecar {

ReadinessCheck DatabaseCheck(std::string conninfo, absl::Duration timeout) {
  struct State {
    absl::Mutex mu;
    std::unique_ptr<pg::Connection> conn ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  return {
      "database", [state, conninfo = std::move(conninfo), timeout] {
        absl::MutexLock lock(&state->mu);
        if (state->conn == nullptr) {
          pg::ConnectOptions o;
          o.connect_timeout = timeout;
          o.attempt_timeout = timeout;
          o.max_attempts = 1;
          o.application_name = "sidecar-readiness";
          o.session_sql = {absl::StrCat("SET statement_timeout = ",
                                        absl::ToInt64Milliseconds(timeout))};
          absl::StatusOr<std::unique_ptr<pg::Connection>> c =
              pg::Connection::Open(conninfo, o);
          if (!c.ok()) {
            return absl::UnavailableError(absl::StrCat(
                "PostgreSQL does not answer: ", c.status().message()));
          }
          state->conn = std::move(*c);
        }
        absl::StatusOr<pg::Result> r = state->conn->Exec("SELECT 1");
        if (!r.ok()) {
          state->conn.reset();  // made again at the next check
          return absl::UnavailableError(absl::StrCat(
              "PostgreSQL does not answer: ", r.status().message()));
        }
        return absl::OkStatus();
      }};
}

ReadinessCheck WritableCheck(std::string what, std::string dir) {
  return {what, [what, dir = std::move(dir)] {
            const std::string path =
                absl::StrCat(dir, "/.ready-probe-", ::getpid());
            auto failed = [&](const char* step) {
              std::string e = std::strerror(errno);
              ::unlink(path.c_str());
              return absl::UnavailableError(
                  absl::StrCat("the ", what, " at ", dir, " is not writable (",
                               step, ": ", e, ")"));
            };
            int fd = ::open(path.c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd < 0) return failed("create");
            bool ok = ::write(fd, "ok", 2) == 2 && ::fsync(fd) == 0;
            if (!ok) {
              absl::Status s = failed("write");
              ::close(fd);
              return s;
            }
            ::close(fd);
            if (::unlink(path.c_str()) != 0) return failed("remove");
            return absl::OkStatus();
          }};
}

ReadinessMonitor::ReadinessMonitor(
    std::vector<ReadinessCheck> checks, absl::Duration interval,
    std::function<void(bool, const std::string&)> on_change)
    : checks_(std::move(checks)),
      interval_(interval),
      on_change_(std::move(on_change)) {}

ReadinessMonitor::~ReadinessMonitor() { Stop(); }

void ReadinessMonitor::Start() {
  RunChecks();
  thread_ = std::thread([this] { Loop(); });
}

void ReadinessMonitor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

std::string ReadinessMonitor::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

void ReadinessMonitor::RunChecks() {
  std::string reason;
  for (const ReadinessCheck& c : checks_) {
    absl::Status s = c.run();
    if (!s.ok()) {
      reason = std::string(s.message());
      break;  // the first failure says enough
    }
  }
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = !checked_ || reason != reason_;
    checked_ = true;
    reason_ = reason;
  }
  if (!changed) return;
  if (reason.empty()) {
    SC_LOG(INFO) << "ready";
  } else {
    SC_LOG(WARNING) << "not ready: " << reason;
  }
  on_change_(reason.empty(), reason);
}

void ReadinessMonitor::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) return;
    }
    RunChecks();
  }
}

}  // namespace sidecar
