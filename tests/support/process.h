// Child processes for integration tests: spawn a binary with extra
// environment and its output in a log file, signal it, wait for it with a
// timeout. Plus helpers to wait for files a child writes (port files).
#ifndef SIDECAR_TESTS_SUPPORT_PROCESS_H_
#define SIDECAR_TESTS_SUPPORT_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sidecar::testing {

// One child process. Movable, not copyable. The destructor SIGKILLs the
// child if it still runs and reaps it. Not thread-safe.
//
// Exit statuses follow the shell: the exit code, or 128 + signal number if
// a signal ended the child.
class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH if it has no '/') with `argv`, the
  // environment of this process plus `env` (which overrides), stdout and
  // stderr appended to `log_path` (inherited if empty) and stdin from
  // /dev/null, in `cwd` if not empty. The child gets SIGKILL if the thread
  // that spawned it exits. NOT_FOUND if the binary does not exist.
  static absl::StatusOr<ChildProcess> Spawn(
      const std::vector<std::string>& argv,
      const std::map<std::string, std::string>& env = {},
      const std::string& log_path = "", const std::string& cwd = "");

  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // The child's pid; -1 for a default-constructed or moved-from object.
  pid_t pid() const { return pid_; }
  // Sends `sig` unless the child was reaped already.
  absl::Status Signal(int sig);
  // SIGKILL and reap. Returns the exit status.
  int Kill();
  // SIGTERM, then SIGKILL if the child has not exited within `timeout`.
  // Returns the exit status.
  int Terminate(absl::Duration timeout);
  // Waits up to `timeout` for the child to exit; its exit status, or nullopt
  // if it still runs.
  std::optional<int> Wait(absl::Duration timeout);
  // True while the child has not exited (reaps it if it has).
  bool IsRunning();
  // The exit status once the child was reaped.
  std::optional<int> exit_status() const { return exit_status_; }

 private:
  // Reaps without blocking; true if the child has exited.
  bool Poll();

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

// Runs a command to completion (see ChildProcess::Spawn for the arguments)
// and returns its exit status; DEADLINE_EXCEEDED (after killing it) if it
// runs longer than `timeout`.
absl::StatusOr<int> RunCommand(const std::vector<std::string>& argv,
                               const std::map<std::string, std::string>& env,
                               const std::string& log_path,
                               absl::Duration timeout,
                               const std::string& cwd = "");

// Waits until `path` exists. DEADLINE_EXCEEDED naming it after `timeout`.
absl::Status WaitForFile(const std::string& path, absl::Duration timeout);

// Reads a port file whose whole content is "<port>\n". UNAVAILABLE while it
// is missing or not completely written (no newline yet), INVALID_ARGUMENT if
// it holds something other than a port number.
absl::StatusOr<int> ReadPortFile(const std::string& path);
// Polls ReadPortFile until it succeeds or `timeout` passes.
absl::StatusOr<int> WaitForPortFile(const std::string& path,
                                    absl::Duration timeout);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
// released). Another process may take it before the caller binds it, so
// callers retry on a bind failure.
absl::StatusOr<int> PickUnusedPort();

// A TCP port on 127.0.0.1 held bound but not listening while this object
// lives: a connection to it is refused at once, and no other process can
// take it meanwhile (unlike a port from PickUnusedPort). For tests of what
// happens when nothing answers.
class ClosedPort {
 public:
  static absl::StatusOr<ClosedPort> Reserve();
  ClosedPort(ClosedPort&& other) noexcept;
  ClosedPort& operator=(ClosedPort&&) = delete;
  ~ClosedPort();

  int port() const { return port_; }

 private:
  ClosedPort() = default;
  int fd_ = -1;
  int port_ = 0;
};

// The last `max_bytes` of a file, for error messages ("" if unreadable).
std::string ReadTail(const std::string& path, size_t max_bytes = 2000);

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PROCESS_H_
